"""Difficulty of a negative: ``quality_score`` in [0, 1], its ``band``, and cross-type purity.

Pure functions of the metrics that ``metrics.measure_negative`` returns (no I/O).

``quality_score = fidelity * temporal`` (1 = indistinguishable from the GT winner):

- ``fidelity = (p + s) / 2`` with ``p = clip((PSNR - floor) / (ceil - floor), 0, 1)`` the hole PSNR
  mapped linearly from ``quality_psnr_floor_db`` (10 dB: unrelated content) to
  ``quality_psnr_ceil_db`` (40 dB: no visible difference), and ``s = clip(SSIM, 0, 1)`` the mean
  SSIM over the hole. PSNR sees the size of the error (colour, misplacement), SSIM its structure
  (lost texture, noise); neither alone orders blur against noise as a person does.
- ``temporal = 1 / (1 + max(0, peak_excess) / flicker_clear_excess)``: 1 when no transition is less
  stable than the GT's own, 1/2 at a jump of the audit's 'clear' flicker size. The per-frame
  fidelity terms do not see a jump between two individually plausible frames; this does.

Reasoning and calibration: ``docs/audit.md`` and ``docs/negatives.md``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from .config import AuditConfig
from .metrics import SCORE_OF, defect_level

BANDS: tuple[str, ...] = ("too_bad", "eligible", "too_good")
"""Bands of the quality score, lowest first."""

DEFAULT_BAND: tuple[float, float] = (0.30, 0.65)
"""``--band LO HI``: scores in [LO, HI] are ``eligible`` (the PRD's medium-hard band)."""

def _unit(x: float) -> float:
    return min(1.0, max(0.0, x))


def quality_terms(metrics: Mapping[str, Any], cfg: AuditConfig) -> dict[str, float] | None:
    """``{"psnr_term", "ssim_term", "fidelity", "temporal", "quality_score"}``, or None when the
    fidelity metrics are missing (nothing measured). A clip without a measurable transition has
    ``temporal = 1``."""
    psnr, ssim = metrics.get("hole_psnr_db"), metrics.get("hole_ssim")
    if psnr is None or ssim is None:
        return None
    span = cfg.quality_psnr_ceil_db - cfg.quality_psnr_floor_db
    p = _unit((float(psnr) - cfg.quality_psnr_floor_db) / span)
    s = _unit(float(ssim))
    fidelity = (p + s) / 2
    excess = metrics.get("peak_excess")
    temporal = 1.0 if excess is None else 1.0 / (1.0 + max(0.0, float(excess)) / cfg.flicker_clear_excess)
    return {"psnr_term": p, "ssim_term": s, "fidelity": fidelity, "temporal": temporal,
            "quality_score": fidelity * temporal}


def quality_score(metrics: Mapping[str, Any], cfg: AuditConfig) -> float | None:
    terms = quality_terms(metrics, cfg)
    return None if terms is None else terms["quality_score"]


def check_band(band: Sequence[float]) -> tuple[float, float]:
    """``(lo, hi)`` with ``0 <= lo < hi <= 1``, else ``ValueError`` naming ``--band``."""
    lo, hi = (float(b) for b in band)
    if not (0.0 <= lo < hi <= 1.0) or math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"--band {lo:g} {hi:g}: need 0 <= LO < HI <= 1")
    return lo, hi


def band_of(score: float | None, band: Sequence[float] = DEFAULT_BAND) -> str | None:
    """``too_bad`` below LO, ``too_good`` above HI, else ``eligible``; None for no score."""
    if score is None:
        return None
    lo, hi = band
    return BANDS[0] if score < lo else BANDS[2] if score > hi else BANDS[1]


def impurities(neg_type: str, metrics: Mapping[str, Any], cfg: AuditConfig) -> list[str]:
    """Other defect types that this negative *clearly* shows (empty = pure).

    Only types with their own defect metric are checked and judged: a negative whose type has
    none (e.g. ``inpaint``, a model's own result) may show any defect, so it is never impure.
    A blur below the audit's texture floor cannot show, so blur is not reported there.
    """
    if neg_type not in SCORE_OF:
        return []
    out = []
    for other in SCORE_OF:
        if other == neg_type or defect_level(other, metrics, cfg) != 2:
            continue
        if other == "blur" and metrics.get("gt_laplacian_energy", math.inf) < cfg.texture_floor:
            continue
        out.append(other)
    return out
