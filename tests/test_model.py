"""The LightningModule's pieces: metrics, normalisation inside forward, schedules."""

from __future__ import annotations

import pytest
import torch

from pokedex.model.classifier import PokedexClassifier, classification_metrics
from pokedex.model.schedules import one_cycle, warmup_cosine


def test_top5_is_not_merged_with_top1_after_an_all_wrong_first_batch() -> None:
    metrics = classification_metrics(649, "val/")
    metrics.update(torch.zeros(4, 649), torch.tensor([600, 601, 602, 603]))  # 0 for top-1 and top-5 alike
    logits = torch.randn(64, 649)
    labels = logits.topk(5).indices[:, 3]  # always 4th-best: wrong for top-1, right for top-5
    metrics.update(logits, labels)
    result = metrics.compute()
    assert result["val/top1"] == 0.0
    assert result["val/top5"] == pytest.approx(64 / 68)


def test_forward_accepts_uint8_and_unit_float_identically() -> None:
    model = PokedexClassifier(name="resnet18", class_names=["a", "b", "c"], image_size=32).eval()
    batch = torch.randint(0, 256, (2, 4, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        assert torch.allclose(model(batch), model(batch.float() / 255), atol=1e-5)


def test_class_names_are_required() -> None:
    with pytest.raises(ValueError, match="needs class_names"):
        PokedexClassifier(name="resnet18", class_names=[])


@pytest.mark.parametrize("factory", [warmup_cosine, one_cycle])
def test_schedules_warm_up_then_decay(factory) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = factory(optimizer, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = max(range(100), key=lrs.__getitem__)
    assert 0 < peak < 50 and lrs[0] < lrs[peak] and lrs[-1] < 0.1 * lrs[peak]
