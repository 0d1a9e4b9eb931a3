"""Per-pair training weights of the selected pairs (pure: no I/O): ``regdpo select --weights``.

After VideoDPO's pair re-weighting (pairs that are hard to tell apart count more), with the two signals
regdpo measures. For a pick with quality score ``q`` (1 = as good as the GT winner) and, when
``regdpo score`` ran, reference margin ``m`` (the reference's MSE on the loser minus on the winner;
large = already easy for it)::

    raw = ((1 - target) / max(1 - q, 0.05)) ** alpha  *  (2 * sigmoid(-m / margin_scale)  if m is given else 1)
    pair_weight = clip(raw / mean(raw over the picks), MIN_WEIGHT, MAX_WEIGHT)

so a loser closer to the winner (higher ``q``) and a pair the reference separates less (smaller ``m``)
weigh more; a pick at the target with margin 0 has ``raw = 1``; the weights average 1 over the picks
(before the clip), so the loss keeps its scale. ``alpha = 0`` and no margins give every pair weight 1.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

MIN_WEIGHT, MAX_WEIGHT = 0.25, 4.0
GAP_FLOOR = 0.05
"""Smallest ``1 - q`` used (a loser almost identical to the winner does not get an unbounded weight)."""


def raw_weight(quality_score: float, ref_margin: float | None, target: float, alpha: float = 1.0,
               margin_scale: float = 1.0) -> float:
    """The un-normalised weight of one pair (module doc)."""
    gap = max(1.0 - float(quality_score), GAP_FLOOR)
    w = (max(1.0 - float(target), GAP_FLOOR) / gap) ** float(alpha)
    if ref_margin is not None:
        w *= 2.0 / (1.0 + math.exp(min(60.0, float(ref_margin) / float(margin_scale))))
    return w


def pair_weights(picks: Sequence[Mapping[str, Any]], target: float, alpha: float = 1.0,
                 margin_scale: float = 1.0) -> list[float]:
    """``pair_weight`` of every pick (its ``quality_score`` and optional ``ref_margin``), rounded to 4 digits."""
    if not float(alpha) >= 0 or not math.isfinite(float(alpha)):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if not float(margin_scale) > 0 or not math.isfinite(float(margin_scale)):
        raise ValueError(f"margin_scale must be a finite number > 0, got {margin_scale!r}")
    raw = [raw_weight(p["quality_score"], p.get("ref_margin"), target, alpha, margin_scale) for p in picks]
    if not raw:
        return []
    mean = sum(raw) / len(raw)
    return [round(min(MAX_WEIGHT, max(MIN_WEIGHT, w / mean)), 4) for w in raw]
