"""timm backbones with a 4-channel (RGBA) stem, optionally from pretrained weights that must exist offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
import torch


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be found offline."""


def create_backbone(
    name: str, num_classes: int, *, pretrained: bool | str = False, drop_rate: float = 0.0
) -> torch.nn.Module:
    """timm model with ``in_chans=4``; ``pretrained`` is False, True (HF cache / hub) or a local weights file."""
    if not timm.is_model(name):
        raise ValueError(f"model.name={name!r} is not a timm model; see `timm.list_models()` for valid names")
    kwargs: dict[str, Any] = {"in_chans": 4, "num_classes": num_classes, "drop_rate": drop_rate}
    if isinstance(pretrained, str | os.PathLike) and str(pretrained) not in ("", "false", "False"):
        path = Path(pretrained)
        if not path.is_file():
            raise PretrainedWeightsError(f"model.pretrained={path}: file not found")
        # timm adapts the first conv to 4 channels and drops a mismatched classifier for us.
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        return timm.create_model(name, pretrained=True, **kwargs)
    if pretrained:
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as exc:  # offline: huggingface_hub / urllib errors of many kinds
            raise PretrainedWeightsError(
                f"could not load pretrained weights for {name!r} ({type(exc).__name__}: {exc}). This machine may be "
                "offline. Either download them elsewhere and pass a local file with "
                "`model.pretrained=/path/to/weights.safetensors` (or .pth), put them in the Hugging Face cache "
                "(HF_HOME), or train from scratch with `model.pretrained=false`."
            ) from exc
    return timm.create_model(name, pretrained=False, **kwargs)
