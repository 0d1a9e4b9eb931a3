"""Writing a ``regdpo eval`` run's results: ``eval.json``, ``eval.html`` and the table on stdout.

``eval.html`` is one self-contained page (images inlined): the per-model means, the comparisons with their
verdicts, a per-clip delta plot per comparison (matplotlib), and side by side (GT | baseline | model, hole
outlined in red) the preview frames of each comparison's largest wins and losses in hole PSNR.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import IO, Any, Sequence

import cv2
import numpy as np

from .. import format as fmt
from ..frames import read_rgb
from ..safe_io import write_text_atomic
from .evalset import EvalClip, EvalSet
from .metrics import MetricSpec
from .models import EvalModel
from .results import EVAL_HTML, EVAL_JSON, build_document
from .runner import UNITS_DIR, UnitResult, preview_frame

PRIMARY = "hole_psnr"
"""The metric whose per-clip deltas choose the largest wins and losses shown."""
SHOWN = 2
"""Largest wins and largest losses shown per comparison."""


def write_outputs(out: Path, evalset: EvalSet, split: str | None, clips: Sequence[EvalClip],
                  models: Sequence[EvalModel], results: dict[tuple[str, str], UnitResult], specs: Sequence[MetricSpec],
                  set_metrics: Sequence[Any] = (), *, backend: str, seed: int, html: bool = True) -> dict[str, Any]:
    doc = build_document(evalset, split, clips, models, results, specs, set_metrics, backend=backend, seed=seed)
    fmt.write_json_atomic(out / EVAL_JSON, doc)
    if html:
        write_text_atomic(out / EVAL_HTML, render_html(doc, out, evalset))
    return doc


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/m"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def means_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Per metric (with its better direction) the mean of each model over the clips it was measured on."""
    names = [m["name"] for m in doc["models"]]
    rows = [["metric", *[f"{n} (mean)" for n in names]]]
    for spec in doc["metrics"]:
        row = [f"{spec['name']} ({'up' if spec['higher_is_better'] else 'down'})"]
        for n in names:
            entry = doc["summary"][n].get(spec["name"], {})
            row.append(_fmt(entry.get("mean", entry.get("value"))))
        rows.append(row)
    return rows


def comparison_rows(doc: dict[str, Any], comparison: dict[str, Any]) -> list[list[str]]:
    """Per metric the paired statistics of one comparison: mean delta, 95 % interval, P(delta > 0), W/T/L,
    verdict."""
    rows = [["metric", f"mean delta ({comparison['model']} - {comparison['baseline']})", "95% CI", "P(delta>0)",
             "W/T/L", "n", "verdict"]]
    for spec in doc["metrics"]:
        s = comparison["metrics"].get(spec["name"], {})
        ci = s.get("ci95")
        rows.append([f"{spec['name']} ({'up' if spec['higher_is_better'] else 'down'})",
                     _fmt(s.get("mean_delta", s.get("delta"))),
                     f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "-",
                     _fmt(s.get("p_delta_gt_0"), 3) if "p_delta_gt_0" in s else "-",
                     f"{s['wins']}/{s['ties']}/{s['losses']}" if "wins" in s else "-",
                     str(s.get("n", "-")), s.get("verdict", "-")])
    return rows


def _print_rows(rows: list[list[str]], stream: IO[str]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=stream)
        if k == 0:
            print("  ".join("-" * w for w in widths), file=stream)


def print_table(doc: dict[str, Any], stream: IO[str]) -> None:
    n = len(doc["clips"])
    print(f"split {doc['split']}: {n} clip(s), {len(doc['models'])} model(s), baseline {doc['models'][0]['name']}",
          file=stream)
    _print_rows(means_rows(doc), stream)
    for comparison in doc["comparisons"]:
        print(f"\n{comparison['model']} vs {comparison['baseline']}:", file=stream)
        _print_rows(comparison_rows(doc, comparison), stream)


# --------------------------------------------------------------------------- html


def _png_uri(image_rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", image_rgb[:, :, ::-1])
    if not ok:
        raise ValueError("cannot encode a PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _delta_plot(comparison: dict[str, Any], specs: Sequence[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [s for s in specs if s["level"] == "clip" and comparison["metrics"].get(s["name"], {}).get("deltas")]
    shown = [s for s in shown if s["name"] in ("hole_psnr", "psnr", "hole_ssim", "hole_temporal_deviation")] or shown
    if not shown:
        return ""
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.2), squeeze=False)
    for ax, spec in zip(axes[0], shown):
        stats = comparison["metrics"][spec["name"]]
        deltas = stats["deltas"]
        names = list(deltas)
        values = np.array([deltas[n] for n in names])
        sign = 1 if spec["higher_is_better"] else -1
        colours = ["#2e7d32" if sign * v > spec["tie"] else "#c62828" if sign * v < -spec["tie"] else "#9e9e9e"
                   for v in values]
        ax.bar(range(len(values)), values, color=colours)
        ax.axhline(0, color="black", linewidth=0.8)
        if stats.get("ci95"):
            lo, hi = stats["ci95"]
            ax.axhspan(lo, hi, color="#1565c0", alpha=0.15, label="95% CI of the mean")
            ax.axhline(stats["mean_delta"], color="#1565c0", linewidth=1.2)
        ax.set_title(f"{spec['name']} ({'higher' if spec['higher_is_better'] else 'lower'} is better)", fontsize=9)
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=6)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"per-clip delta {comparison['model']} - {comparison['baseline']} (green: win, red: loss)",
                 fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _side_by_side(out: Path, evalset: EvalSet, clip: EvalClip, baseline: str, model: str) -> str | None:
    try:
        gt, hole = evalset.read_clip(clip)
        t = preview_frame(hole)
        a = read_rgb(out / UNITS_DIR / baseline / f"{clip.name}.png")
        b = read_rgb(out / UNITS_DIR / model / f"{clip.name}.png")
    except Exception:  # a preview that cannot be read is left out of the page, never fails the report
        return None
    contours, _ = cv2.findContours(hole[t].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    panels = []
    for image in (gt[t], a, b):
        image = np.ascontiguousarray(image.copy())
        cv2.drawContours(image, contours, -1, (255, 0, 0), 1)
        panels.append(image)
    gap = np.full((gt.shape[1], 4, 3), 255, np.uint8)
    return _png_uri(np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1))


def _html_table(rows: list[list[str]]) -> str:
    esc = html.escape
    out = ["<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in rows[0]) + "</tr>"]
    for row in rows[1:]:
        cells = []
        for c in row:
            cls = " class='better'" if c == "better" else " class='worse'" if c == "worse" else ""
            cells.append(f"<td{cls}>{esc(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def render_html(doc: dict[str, Any], out: Path, evalset: EvalSet) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>regdpo eval</title><style>",
             "body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}th{background:#eee}"
             "td:first-child{text-align:left}.better{background:#c8e6c9}.worse{background:#ffcdd2}"
             "img{max-width:100%}figure{display:inline-block;margin:0.5em}figcaption{font-size:12px}",
             "</style></head><body>",
             f"<h1>Evaluation: {esc(str(doc['split']))} split of {esc(doc['evalset']['path'])}</h1>",
             f"<p>{len(doc['clips'])} clip(s); backend {esc(doc['backend'])}; seed {doc['seed']}; protocol "
             f"{esc(str(doc['evalset']['protocol'].get('width')))}x{esc(str(doc['evalset']['protocol'].get('height')))}, "
             f"{doc['evalset']['protocol'].get('nframes')} frames, {esc(str(doc['evalset']['protocol'].get('masks')))} "
             f"masks. Baseline: <b>{esc(doc['models'][0]['name'])}</b>. Paired bootstrap: "
             f"{doc['bootstrap']['resamples']} resamples, seed {doc['bootstrap']['seed']}.</p>",
             "<h2>Results</h2>", _html_table(means_rows(doc))]
    if doc["failed"]:
        parts.append("<h2>Failed</h2><ul>" + "".join(
            f"<li>{esc(f['model'])} / {esc(f['clip'])}: {esc(f['error'])}</li>" for f in doc["failed"]) + "</ul>")
    clips = {c.name: c for c in evalset.clips}
    for comparison in doc["comparisons"]:
        parts.append(f"<h2>{esc(comparison['model'])} vs {esc(comparison['baseline'])}</h2>")
        parts.append(_html_table(comparison_rows(doc, comparison)))
        plot = _delta_plot(comparison, doc["metrics"])
        if plot:
            parts.append(f"<img class='delta-plot' alt='per-clip deltas' src='{plot}'>")
        deltas = comparison["metrics"].get(PRIMARY, {}).get("deltas") or {}
        ranked = sorted(deltas.items(), key=lambda kv: (kv[1], kv[0]))
        wins = [kv for kv in reversed(ranked) if kv[1] > 0][:SHOWN]
        losses = [kv for kv in ranked if kv[1] < 0][:SHOWN]
        for title, chosen in (("Largest wins", wins), ("Largest losses", losses)):
            parts.append(f"<h3>{title} in {PRIMARY} (GT | {esc(comparison['baseline'])} | "
                         f"{esc(comparison['model'])})</h3>")
            if not chosen:
                parts.append("<p>none</p>")
            for name, delta in chosen:
                uri = _side_by_side(out, evalset, clips[name], comparison["baseline"], comparison["model"])
                caption = f"{esc(name)}: {delta:+.3f} dB"
                parts.append(f"<figure><img class='sbs' alt='{esc(name)}' src='{uri}'><figcaption>{caption}"
                             f"</figcaption></figure>" if uri else f"<p>{caption} (preview not available)</p>")
    parts.append("<h2>Per clip</h2><table><tr><th>clip</th><th>split</th>" + "".join(
        f"<th>{esc(m['name'])} {esc(PRIMARY)}</th>" for m in doc["models"]) + "</tr>")
    for row in doc["clips"]:
        parts.append(f"<tr><td>{esc(row['name'])}</td><td>{esc(row['split'])}</td>" + "".join(
            f"<td>{_fmt(row[m['name']].get(PRIMARY), 3)}</td>" for m in doc["models"]) + "</tr>")
    parts.append("</table></body></html>\n")
    return "".join(parts)
