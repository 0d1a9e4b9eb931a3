"""What ``regdpo eval`` measures per clip, and the hook other metrics plug into.

A *clip metric provider* has ``specs`` (a tuple of ``MetricSpec``), ``settings()`` (JSON, part of every
result's resume key) and ``measure(gt, output, hole) -> {metric: float | NotMeasured}`` with ``gt`` and
``output`` RGB ``uint8 [T, H, W, 3]`` (``output`` composited onto ``gt``: equal outside the hole) and ``hole``
``bool [T, H, W]`` (True = hole). ``PixelMetrics`` is the built-in one; the learned metrics (LPIPS, E_warp)
plug in the same way (``runner.run_eval(..., clip_metrics=[PixelMetrics(), learned])``).

A *set metric provider* (VFID: a Frechet distance over the whole split) has ``specs``, ``settings()``,
``features(gt, output, hole) -> {name: list[float]} | NotMeasured`` (per clip, stored with the clip's result
so a resumed run need not recompute it) and ``combine(features: list[dict]) -> {metric: float | NotMeasured}``
over every clip of a model.

A metric that cannot be measured is ``NotMeasured(reason)``: reported as ``null`` with the reason, never 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from .. import pixel_metrics as pm


@dataclass(frozen=True)
class MetricSpec:
    """A metric: its name, direction, the tie tolerance of per-clip comparisons, unit and definition."""

    name: str
    higher_is_better: bool
    tie: float
    unit: str
    description: str
    level: str = "clip"  # "clip": one value per clip (paired statistics); "set": one value per model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NotMeasured:
    """A metric that could not be measured, and why (reported as ``null`` + reason)."""

    reason: str


class ClipMetricProvider(Protocol):
    specs: tuple[MetricSpec, ...]

    def settings(self) -> dict[str, Any]: ...

    def measure(self, gt: np.ndarray, output: np.ndarray, hole: np.ndarray) -> dict[str, Any]: ...


class SetMetricProvider(Protocol):
    specs: tuple[MetricSpec, ...]

    def settings(self) -> dict[str, Any]: ...

    def features(self, gt: np.ndarray, output: np.ndarray, hole: np.ndarray) -> Any: ...

    def combine(self, features: Sequence[Any]) -> dict[str, Any]: ...


PIXEL_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("psnr", True, 0.01, "dB", "whole-frame PSNR of the composited output, mean over frames "
               "(the papers' protocol; mostly measures the untouched context)"),
    MetricSpec("ssim", True, 1e-4, "", "whole-frame SSIM of the composited output, mean over frames"),
    MetricSpec("hole_psnr", True, 0.01, "dB", "PSNR over every hole pixel of the clip (one pooled MSE)"),
    MetricSpec("hole_ssim", True, 1e-4, "", "mean of the SSIM map over the hole pixels"),
    MetricSpec("hole_l1", False, 1e-4, "0..1", "mean absolute error over the hole pixels, / 255"),
    MetricSpec("boundary_psnr", True, 0.01, "dB", "PSNR over the hole's inner band (hole pixels within 3 px of "
               "a valid pixel), where a seam shows"),
    MetricSpec("hole_temporal_deviation", False, 1e-3, "ratio", "mean |instability(output) - instability(GT)| "
               "over the frame transitions, in the hole, / (GT's mean instability + 1 grey level); 0 = moves as "
               "the GT does"),
)


class PixelMetrics:
    """The built-in pixel metrics (``PIXEL_SPECS``; definitions in ``regdpo.pixel_metrics`` and
    docs/evaluation.md). CPU only, no weights."""

    specs = PIXEL_SPECS

    def __init__(self, boundary_dilation: int = pm.DEFAULT_BOUNDARY_DILATION):
        self.boundary_dilation = int(boundary_dilation)

    def settings(self) -> dict[str, Any]:
        return {"name": "pixel", "version": 1, "boundary_dilation": self.boundary_dilation,
                "instability_floor": pm.INSTABILITY_FLOOR, "max_psnr_db": pm.MAX_PSNR_DB}

    def measure(self, gt: np.ndarray, output: np.ndarray, hole: np.ndarray) -> dict[str, Any]:
        if gt.shape != output.shape or hole.shape != gt.shape[:3]:
            raise ValueError(f"shapes differ: GT {gt.shape}, output {output.shape}, hole {hole.shape}")
        means_and_maps = [pm.ssim_frame(g, o) for g, o in zip(gt, output)]
        maps = [m for _, m in means_and_maps]
        no_hole = NotMeasured("the clip has no hole pixel")
        values: dict[str, Any] = {
            "psnr": pm.frame_psnr_mean(gt, output),
            "ssim": float(np.mean([s for s, _ in means_and_maps])),
        }
        hole_psnr = pm.region_psnr(gt, output, hole)
        values["hole_psnr"] = no_hole if hole_psnr is None else hole_psnr
        hole_ssim = pm.region_ssim(maps, hole)
        values["hole_ssim"] = no_hole if hole_ssim is None else hole_ssim
        hole_l1 = pm.region_l1(gt, output, hole)
        values["hole_l1"] = no_hole if hole_l1 is None else hole_l1
        band = pm.inner_band(hole, self.boundary_dilation)
        band_psnr = pm.region_psnr(gt, output, band)
        values["boundary_psnr"] = no_hole if band_psnr is None else band_psnr
        if gt.shape[0] < 2:
            values["hole_temporal_deviation"] = NotMeasured("a clip of one frame has no transition")
        else:
            deviation = pm.hole_temporal_deviation(gt, output, hole)
            values["hole_temporal_deviation"] = (NotMeasured("no frame transition has a hole pixel")
                                                 if deviation is None else deviation)
        return values


def split_values(values: Mapping[str, Any]) -> tuple[dict[str, float | None], dict[str, str]]:
    """(metric -> float or None, metric -> reason for the None ones) of a ``measure`` result."""
    out: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for name, value in values.items():
        if isinstance(value, NotMeasured):
            out[name] = None
            reasons[name] = value.reason
        else:
            out[name] = float(value)
    return out, reasons
