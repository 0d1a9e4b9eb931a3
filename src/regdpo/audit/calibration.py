"""The calibration part of the audit report: how hard the negatives are.

Tables are pure functions of the audit document; plots are matplotlib figures (Agg) encoded as
PNG bytes. ``report.render_html`` lays them out in the "Calibration" section.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..format import NEG_TYPES
from .media import figure_png
from .quality import BANDS

_FALLBACK_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
TYPE_COLOURS = {"hallucination": "#d62728", "blur": "#1f77b4", "flicker": "#2ca02c", "inpaint": "#ff7f0e",
                "renoise": "#9467bd"}


def type_colour(neg_type: str, types: Sequence[str]) -> str:
    if neg_type in TYPE_COLOURS:
        return TYPE_COLOURS[neg_type]
    unknown = [t for t in types if t not in TYPE_COLOURS]
    return _FALLBACK_COLOURS[unknown.index(neg_type) % len(_FALLBACK_COLOURS)] if neg_type in unknown else "#000"


def _types(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """The types present, in the format's order (unknown ones after, as met)."""
    present = list(dict.fromkeys(str(i["neg_type"]) for i in items))
    return [t for t in NEG_TYPES if t in present] + [t for t in present if t not in NEG_TYPES]


def band_table(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (type, strength): count, scored, mean quality score, and count and share per band.
    When some item records a ``round`` (``regdpo generate --round``), one row per (type, strength, round),
    rounds side by side (``round`` None: not recorded), and each row has ``round``."""
    by_round = any(i.get("round") is not None for i in items)
    groups: dict[tuple[str, float, Any], list[Mapping[str, Any]]] = {}
    for item in items:
        key = (str(item["neg_type"]), float(item.get("strength", 1.0)), item.get("round") if by_round else None)
        groups.setdefault(key, []).append(item)
    order = {t: k for k, t in enumerate(_types(items))}
    rows = []
    for (neg_type, strength, rnd), mine in sorted(
            groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], kv[0][2] is None, kv[0][2] or 0)):
        scores = [float(i["quality_score"]) for i in mine if i.get("quality_score") is not None]
        counts = {b: sum(i.get("band") == b for i in mine) for b in BANDS}
        rows.append({
            "neg_type": neg_type,
            "strength": strength,
            "count": len(mine),
            "scored": len(scores),
            "mean_quality_score": float(np.mean(scores)) if scores else None,
            "bands": counts,
            "shares": {b: (counts[b] / len(scores) if scores else None) for b in BANDS},
            **({"round": rnd} if by_round else {}),
        })
    return rows


def band_examples(items: Sequence[Mapping[str, Any]], k: int) -> dict[str, tuple[list, list]]:
    """Per band: (the ``k`` lowest-scoring, the ``k`` highest-scoring) items, disjoint; ties by name."""
    out = {}
    for band in BANDS:
        mine = sorted((i for i in items if i.get("band") == band),
                      key=lambda i: (float(i["quality_score"]), str(i["video"]), str(i.get("stream", ""))))
        n_low = min(k, (len(mine) + 1) // 2)
        n_high = min(k, len(mine) - n_low)
        out[band] = (mine[:n_low], mine[len(mine) - n_high:][::-1])
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def quality_histogram_plot(items: Sequence[Mapping[str, Any]], band: Sequence[float]) -> bytes | None:
    """Quality-score histogram per type (one panel each) with the eligible band shaded."""
    types = [t for t in _types(items) if any(i["neg_type"] == t and i.get("quality_score") is not None for i in items)]
    if not types:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(types), figsize=(3.4 * len(types) + 0.6, 2.8), squeeze=False, sharey=True)
    bins = np.linspace(0.0, 1.0, 21)
    for ax, neg_type in zip(axes[0], types):
        vals = [float(i["quality_score"]) for i in items if i["neg_type"] == neg_type and i.get("quality_score") is not None]
        ax.axvspan(band[0], band[1], color="#ffe9a8", alpha=0.7, label=f"eligible {band[0]:g}-{band[1]:g}")
        ax.hist(vals, bins=bins, color=type_colour(neg_type, types), edgecolor="white")
        for x in band:
            ax.axvline(x, color="black", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_title(f"{neg_type} ({len(vals)})", fontsize=9)
        ax.set_xlabel("quality score (1 = as good as GT)", fontsize=8)
    axes[0][0].set_ylabel("negatives")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return figure_png(fig)


def mask_area_plot(videos: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Histogram of the mean hole fraction of the audited videos."""
    vals = [100 * float(v["hole_fraction"]) for v in videos if v.get("hole_fraction") is not None]
    if not vals:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.hist(vals, bins=20, color="#555555", edgecolor="white")
    ax.set_xlabel("mean hole area (% of the frame)", fontsize=8)
    ax.set_ylabel("videos")
    ax.set_title(f"mask area ({len(vals)} videos)", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)
