"""Offline drift report: a prediction log against the drift reference of the model that wrote it.

Two views on one page, because they answer different questions:

* **our calibrated verdicts**, window by window: the log replayed through the same ``DriftMonitor`` the service
  runs, with the thresholds calibrated at export time, so the page says exactly when ``/drift`` would have
  alarmed and which signal caused it (a plot of every score divided by its threshold: above 1 = alarm);
* **Evidently's data-drift report** for the whole log: per-column distributions, drift tests and plots, the
  view the field knows. Evidently needs a reference *table*; the sidecar keeps marginal summaries only
  (quantiles, category and class frequencies), so a reference table is rebuilt from them column by column.
  Evidently's per-column tests only use marginals, so nothing they look at is lost; its p-values are not
  calibrated for our windows, hence the verdicts above stay the authority.

Evidently is optional (extra ``monitor``); without it the page has the first part and says how to get the rest.
"""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pokedex.drift.monitor import DriftMonitor
from pokedex.drift.predlog import read_prediction_log
from pokedex.drift.records import PredictionRecord
from pokedex.drift.reference import SIDECAR_KEY
from pokedex.io import atomic_path, write_text_atomic

NUMERIC = ("confidence", "log10_pixels", "foreground_fraction")
CATEGORICAL = ("format", "had_alpha", "predicted")


def load_reference(path: str | Path) -> tuple[dict[str, Any], list[str] | None]:
    """(reference, class names) from an ONNX sidecar (key ``drift_reference``) or a bare reference JSON."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if SIDECAR_KEY in data:
        return data[SIDECAR_KEY], data.get("class_names")
    if "signals" in data:
        return data, data.get("class_names")
    raise ValueError(f"{path}: neither a sidecar with {SIDECAR_KEY!r} nor a drift reference")


def default_window(reference: Mapping[str, Any]) -> int:
    """The (smallest) window size the reference was calibrated for; 200 when it is uncalibrated."""
    sizes = sorted(int(k) for k in ((reference.get("calibration") or {}).get("thresholds") or {}))
    return sizes[0] if sizes else 200


def replay(reference: Mapping[str, Any], records: Sequence[PredictionRecord], window: int) -> list[dict[str, Any]]:
    """Consecutive, non-overlapping windows of the log, each judged as the service would have judged it."""
    reports = []
    for start in range(0, len(records) - window + 1, window):
        monitor = DriftMonitor(reference, window=window)
        monitor.extend(records[start : start + window])
        reports.append({"first": start, "last": start + window - 1, **monitor.report()})
    return reports


def _class_labels(count: int, class_names: Sequence[str] | None) -> list[str]:
    return (
        list(class_names) if class_names is not None and len(class_names) == count else [str(i) for i in range(count)]
    )


def _allocate(probabilities: Mapping[str, float], rows: int, rng: np.random.Generator) -> np.ndarray:
    """``rows`` category values in proportion to ``probabilities`` (largest remainders), shuffled."""
    names = list(probabilities)
    weights = np.array([float(probabilities[n]) for n in names])
    exact = weights / weights.sum() * rows
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact)[: rows - counts.sum()]] += 1
    values = np.repeat(np.array(names, dtype=object), counts)
    return rng.permutation(values)


def reference_table(
    reference: Mapping[str, Any], class_names: Sequence[str] | None, rows: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """A ``rows``-row reference table rebuilt from the summaries (each column has the reference's marginal)."""
    rng = np.random.default_rng(seed)
    signals = reference["signals"]
    levels = np.linspace(0.0, 1.0, rows)
    table: dict[str, np.ndarray] = {}
    for name in NUMERIC:
        quantiles = np.asarray(signals[name]["quantiles"], dtype=np.float64)
        table[name] = rng.permutation(np.interp(levels, np.linspace(0.0, 1.0, quantiles.size), quantiles))
    for name in ("format", "had_alpha"):
        table[name] = _allocate(signals[name]["probabilities"], rows, rng)
    frequencies = reference["summary"]["class_frequencies"]
    labels = _class_labels(len(frequencies), class_names)
    table["predicted"] = _allocate(dict(zip(labels, frequencies, strict=True)), rows, rng)
    return table


def current_table(records: Sequence[PredictionRecord], class_names: Sequence[str] | None, classes: int) -> dict:
    labels = _class_labels(classes, class_names)
    return {
        "confidence": np.array([r.confidence for r in records]),
        "log10_pixels": np.array([r.facts.log10_pixels for r in records]),
        "foreground_fraction": np.array([r.facts.foreground_fraction for r in records]),
        "format": np.array([r.facts.format for r in records], dtype=object),
        "had_alpha": np.array(["true" if r.facts.had_alpha else "false" for r in records], dtype=object),
        "predicted": np.array([labels[r.class_index] for r in records], dtype=object),
    }


def evidently_html(reference: Mapping[str, np.ndarray], current: Mapping[str, np.ndarray], output: Path) -> None:
    """Evidently's DataDriftPreset over the two tables, saved as a self-contained HTML file (no CDN)."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(NUMERIC), categorical_columns=list(CATEGORICAL))
    datasets = [Dataset.from_pandas(pd.DataFrame(dict(t)), data_definition=definition) for t in (current, reference)]
    with warnings.catch_warnings():  # a category absent from the reference: scipy's chi-square divides by zero
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report([DataDriftPreset()]).run(*datasets)
    with atomic_path(output) as tmp:
        snapshot.save_html(str(tmp))


def scores_plot(windows: Sequence[dict[str, Any]]) -> str:
    """Score / threshold of every signal per window, as a base64 PNG (above the line at 1 = alarm)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    names = sorted({n for w in windows for n in w["signals"]})
    for name in names:
        ratios = [_ratio(w["signals"].get(name, {})) for w in windows]
        ax.plot(range(1, len(windows) + 1), ratios, marker="o", ms=3, label=name)
    ax.axhline(1.0, color="red", lw=1, ls="--")
    ax.set_yscale("symlog", linthresh=1.0)  # in-distribution ratios are < 1, a shift can be 20x: keep both visible
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="window", ylabel="score / threshold", title="Drift signals per window (alarm above 1)")
    ax.legend(fontsize=7, ncols=2, loc="upper left")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _ratio(entry: Mapping[str, Any]) -> float:
    score, threshold = entry.get("score"), entry.get("threshold")
    if score is None or not threshold:
        return float("nan")
    return score / threshold


def _window_rows(windows: Sequence[dict[str, Any]]) -> str:
    rows = []
    for w in windows:
        drifted = ", ".join(n for n, s in w["signals"].items() if s["verdict"] == "drift") or "—"
        rows.append(f"<tr><td>{w['first']}–{w['last']}</td><td>{html.escape(w['verdict'])}</td>"
                    f"<td>{html.escape(drifted)}</td></tr>")  # fmt: skip
    return "\n".join(rows)


def render_page(summary: Mapping[str, Any], windows: Sequence[dict[str, Any]], evidently_file: str | None) -> str:
    plot = f'<img alt="drift scores" src="data:image/png;base64,{scores_plot(windows)}">' if windows else ""
    if evidently_file:
        evidently = f'<iframe src="{html.escape(evidently_file)}" style="width:100%;height:1400px;border:0"></iframe>'
    else:
        evidently = "<p>Evidently is not installed: <code>pip install 'pokedex[monitor]'</code> adds its report.</p>"
    facts = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in summary.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pokedex drift report</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}</style></head>
<body><h1>pokedex drift report</h1><ul>{facts}</ul>
<h2>Calibrated verdicts per window</h2>{plot}
<table><tr><th>requests</th><th>verdict</th><th>drifted signals</th></tr>{_window_rows(windows)}</table>
<h2>Evidently data drift (whole log vs reference)</h2>{evidently}
</body></html>
"""


def build_report(
    log_path: str | Path,
    reference_path: str | Path,
    output: str | Path,
    *,
    window: int | None = None,
    evidently: bool = True,
    reference_rows: int = 1000,
) -> dict[str, Any]:
    """Write ``output`` (and ``<stem>.evidently.html`` beside it); returns the summary shown at the top."""
    output = Path(output)
    reference, class_names = load_reference(reference_path)
    records = [PredictionRecord.from_log_dict(e) for e in read_prediction_log(log_path)]
    if not records:
        raise ValueError(f"{log_path}: no prediction log entries")
    window = window or default_window(reference)
    windows = replay(reference, records, window)
    summary = {
        "log": Path(log_path).name,
        "reference": Path(reference_path).name,
        "requests": len(records),
        "window": window,
        "windows judged": len(windows),
        "windows with drift": sum(w["alarm"] for w in windows),
    }
    evidently_file = None
    if evidently:
        output.parent.mkdir(parents=True, exist_ok=True)
        evidently_path = output.with_name(f"{output.stem}.evidently.html")
        ref_table = reference_table(reference, class_names, reference_rows)
        cur_table = current_table(records, class_names, len(reference["summary"]["class_frequencies"]))
        evidently_html(ref_table, cur_table, evidently_path)
        evidently_file = evidently_path.name
    write_text_atomic(output, render_page(summary, windows, evidently_file))
    return summary
