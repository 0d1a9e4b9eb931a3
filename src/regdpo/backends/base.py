"""The interface every negative backend implements.

The pipeline calls ``backend.generate(clip, neg_types)`` once per video with *all*
requested types, so a backend can compute a shared per-video result once (ProPainter's
output is both the blur negative and the flicker prior). The backend returns raw
frames; the pipeline composites them onto the GT with the stored mask, so no backend
can leak differences outside the hole.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Clip:
    """One clip to make negatives for.

    frames: GT, ``uint8 [T, H, W, 3]`` RGB, H and W multiples of 8.
    hole:   ``bool [T, H, W]``, True = hole; exactly the mask that is stored.
    seed:   per-video seed (already derived from the run seed and the video name).
    """

    name: str
    frames: np.ndarray
    hole: np.ndarray
    seed: int
    prompt: str = ""

    def __post_init__(self) -> None:
        f, h = self.frames, self.hole
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise ValueError(f"{self.name}: frames must be uint8 [T,H,W,3], got {f.dtype} {f.shape}")
        if h.dtype != np.bool_ or h.shape != f.shape[:3]:
            raise ValueError(f"{self.name}: hole must be bool {f.shape[:3]}, got {h.dtype} {h.shape}")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class BackendResult:
    """What a backend made for one clip.

    negatives: neg_type -> ``uint8 [T, H, W, 3]`` RGB (raw; composited by the pipeline).
    info:      neg_type -> JSON-serialisable details stored in meta.json (seeds, segments,
               method, whether it is a classical approximation, ...).
    timings:   stage -> seconds (e.g. "propainter", "hallucination", "flicker").
    """

    negatives: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class NegativeBackend(abc.ABC):
    """Makes negatives for clips. Load models in ``__init__`` (once per process)."""

    name: str = "base"
    supported_types: tuple[str, ...] = ()

    @abc.abstractmethod
    def generate(self, clip: Clip, neg_types: Sequence[str]) -> BackendResult:
        """Return one negative per requested type, each with the clip's shape."""

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable settings recorded in each video's meta (``generator.backend_settings``)."""
        return {}

    def close(self) -> None:
        """Release resources (GPU memory, temporary folders)."""


def plan_segments(num_frames: int, num_segments: int) -> list[tuple[int, int]]:
    """Split ``range(num_frames)`` into ``num_segments`` contiguous ``(start, stop)`` parts.

    Sizes differ by at most one, larger parts first: 22 frames in 3 -> (0,8), (8,15), (15,22).
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be > 0, got {num_frames}")
    if not 1 <= num_segments <= num_frames:
        raise ValueError(f"flicker segments must be between 1 and {num_frames} (frames), got {num_segments}")
    base, extra = divmod(num_frames, num_segments)
    bounds, start = [], 0
    for k in range(num_segments):
        stop = start + base + (1 if k < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds
