"""Audit settings: verdict thresholds and measurement parameters (all settable by flags).

Every field becomes a ``regdpo audit`` flag (``blur_clear_db`` -> ``--blur-clear-db``).
The reasoning behind each default is in ``docs/audit.md``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..cli_types import integer, real
from ..errors import UsageError

MAX_DB = 1000.0  # no threshold in decibels, or in units of GT's instability, means anything beyond this

VERDICTS: tuple[str, ...] = ("none", "weak", "clear")
"""Verdicts on a negative's intended defect, weakest first."""

NOT_MEASURED = "not_measured"
"""Verdict of a negative whose frames could not be read or do not match the GT."""


def _f(default: float, help_text: str, lo: float = -MAX_DB, hi: float = MAX_DB, lo_open: bool = False) -> Any:
    """A float field whose flag refuses nan, inf and values outside ``lo..hi``."""
    return field(default=default, metadata={"help": help_text, "type": real(lo, hi, lo_open=lo_open)})


@dataclass(frozen=True)
class AuditConfig:
    """Thresholds (a defect is *clear* at or beyond ``*_clear_*``, *weak* at or beyond ``*_weak_*``)."""

    blur_weak_db: float = _f(
        2.0, "blur: sharpness loss (dB of Laplacian energy, GT over negative, in the hole) for 'weak'"
    )
    blur_clear_db: float = _f(6.0, "blur: sharpness loss in dB for 'clear'")
    hallucination_weak_psnr: float = _f(
        28.0, "hallucination: low-pass PSNR (dB, negative vs GT in the hole) at or below which it is 'weak'"
    )
    hallucination_clear_psnr: float = _f(20.0, "hallucination: low-pass PSNR in dB at or below which it is 'clear'",
                                         0.0)
    flicker_weak_excess: float = _f(
        0.75,
        "flicker: peak excess temporal instability (largest frame-to-frame jump of the negative beyond GT's, "
        "in units of GT's mean instability) for 'weak'",
        0.0,
    )
    flicker_clear_excess: float = _f(2.0, "flicker: peak excess instability for 'clear'", 0.0)
    quality_psnr_floor_db: float = _f(
        10.0, "quality score: hole PSNR (dB) that maps to 0 (unrelated content)", 0.0
    )
    quality_psnr_ceil_db: float = _f(40.0, "quality score: hole PSNR (dB) that maps to 1 (no visible difference)",
                                     0.0)
    lowpass_sigma_frac: float = _f(
        1 / 48, "hallucination: Gaussian low-pass sigma as a fraction of the frame's short side", 0.0, 0.5, True
    )
    erode_px: int = field(
        default=1, metadata={"help": "blur: erode the hole by this many pixels before measuring (skips the seam)",
                             "type": integer(0, 1024)}
    )
    texture_floor: float = _f(
        4.0, "blur: GT Laplacian energy (grey levels^2) below which the hole is too flat for blur to show",
        0.0, 1e8,
    )
    instability_floor: float = _f(
        1.0, "flicker: grey levels added to GT's mean instability (noise floor of static scenes)", 0.0, 255.0, True
    )
    flow_preset: str = field(
        default="medium",
        metadata={"help": "flicker: OpenCV DIS optical-flow preset", "choices": ("ultrafast", "fast", "medium")},
    )

    def __post_init__(self) -> None:
        if self.blur_clear_db < self.blur_weak_db:
            raise UsageError("--blur-clear-db must be >= --blur-weak-db")
        if self.hallucination_clear_psnr > self.hallucination_weak_psnr:
            raise UsageError("--hallucination-clear-psnr must be <= --hallucination-weak-psnr")
        if self.flicker_clear_excess < self.flicker_weak_excess:
            raise UsageError("--flicker-clear-excess must be >= --flicker-weak-excess")
        if self.quality_psnr_ceil_db <= self.quality_psnr_floor_db:
            raise UsageError("--quality-psnr-ceil-db must be > --quality-psnr-floor-db")
        if not 0 < self.lowpass_sigma_frac < 0.5:
            raise UsageError("--lowpass-sigma-frac must be in (0, 0.5)")
        if self.erode_px < 0:
            raise UsageError("--erode-px must be >= 0")
        if self.flow_preset not in ("ultrafast", "fast", "medium"):
            raise UsageError("--flow-preset must be one of ultrafast, fast, medium")
        if self.texture_floor < 0 or self.instability_floor <= 0:
            raise UsageError("--texture-floor must be >= 0 and --instability-floor > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per ``AuditConfig`` field, defaulting to the dataclass default."""
    group = parser.add_argument_group("thresholds and measurement settings (see docs/audit.md)")
    for f in fields(AuditConfig):
        choices = f.metadata.get("choices")
        shown = f.default if isinstance(f.default, str) else f"{f.default:.4g}"
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=f.metadata.get("type", type(f.default)),
            default=f.default,
            choices=choices,
            metavar=None if choices else "X",
            help=f"{f.metadata['help']} (default {shown})",
        )


def config_from_args(args: argparse.Namespace) -> AuditConfig:
    return AuditConfig(**{f.name: getattr(args, f.name) for f in fields(AuditConfig)})
