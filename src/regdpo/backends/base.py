"""The interface every negative backend implements.

The pipeline calls ``backend.generate(clip, neg_types, strengths)`` once per video with *all*
requested types (and, per type, the strengths to make, default ``[1.0]``; with ``--inpaint_candidates N``
also ``candidates={"inpaint": N}``: N draws of it with their own seeds, streams ``inpaint``,
``inpaint_c1``, ...; a backend that supports it sets ``supports_candidates``), so a backend can
compute a shared per-video result once (ProPainter's output is both the blur negative and the
flicker prior). Results are keyed by stream name (``regdpo.format.stream_name``: the bare type
at strength 1.0, ``blur_s0.50`` otherwise). Strength 1.0 is the PRD's defect; a lower strength
weakens the mechanism that makes the defect (never a blend of the GT into the fill). The backend returns raw
frames; the pipeline composites them onto the GT with the stored mask, so no backend
can leak differences outside the hole.

Out of device memory: a backend that can run a video in less memory sets ``reducible = True`` and
accepts ``generate(..., reduced=True)``; the generator calls it so once for a video whose normal run
raised a device out-of-memory error (``regdpo.backends.memory``), and records the result's ``reduced``
(what the reduced run changed) in the video's meta. A backend that is not reducible is never called so.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .. import format as fmt


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

    negatives: stream -> ``uint8 [T, H, W, 3]`` RGB (raw; composited by the pipeline).
    info:      stream -> JSON-serialisable details stored in meta.json (seeds, segments,
               method, whether it is a classical approximation, ...).
    timings:   stage -> seconds (e.g. "propainter", "hallucination", "flicker").
    reduced:   set by a ``reduced=True`` run only: ``{setting: [normal, reduced]}`` for every setting it
               turned down for this clip (JSON-serialisable; stored as meta.json ``reduced.settings``).
    cuda_peak_memory_mb: ``torch.cuda.max_memory_allocated`` over this call in MiB (CUDA only, else None;
               stored as meta.json ``cuda_peak_memory_mb``).
    """

    negatives: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    reduced: dict[str, list[Any]] | None = None
    cuda_peak_memory_mb: float | None = None


class NegativeBackend(abc.ABC):
    """Makes negatives for clips. Load models in ``__init__`` (once per process)."""

    name: str = "base"
    supported_types: tuple[str, ...] = ()
    reducible: bool = False
    supports_candidates: bool = False
    """Whether ``generate`` takes ``candidates={type: N}`` (several seeded draws of an on-policy type)."""
    """Whether ``generate(..., reduced=True)`` runs a clip in less device memory (the generator's one
    retry of a video after a device out-of-memory error). Only then is ``reduced`` ever passed."""

    @abc.abstractmethod
    def generate(self, clip: Clip, neg_types: Sequence[str],
                 strengths: Mapping[str, Sequence[float]] | None = None) -> BackendResult:
        """Return one negative per requested stream (type x its strengths), each with the clip's shape.
        A ``reducible`` backend also takes ``reduced: bool = False`` (keyword) and, when it is True,
        sets ``BackendResult.reduced``."""

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable settings recorded in each video's meta (``generator.backend_settings``)."""
        return {}

    def close(self) -> None:
        """Release resources (GPU memory, temporary folders)."""


def requested_streams(neg_types: Sequence[str], strengths: Mapping[str, Sequence[float]] | None) -> list[tuple[str, float, str]]:
    """``(neg_type, strength, stream)`` for every requested type and strength (default 1.0), checked."""
    out = []
    for t in neg_types:
        fmt.check_neg_type(t)
        for strength in (strengths or {}).get(t) or [fmt.FULL_STRENGTH]:
            strength = fmt.check_strength(strength)
            out.append((t, strength, fmt.stream_name(t, strength)))
    return out


def candidate_count(candidates: Mapping[str, int] | None, neg_type: str) -> int:
    """How many candidates of ``neg_type`` to draw (``--inpaint_candidates``; default 1), checked."""
    count = int((candidates or {}).get(neg_type, 1))
    if not 1 <= count <= fmt.MAX_CANDIDATES:
        raise ValueError(f"{neg_type} candidates must be between 1 and {fmt.MAX_CANDIDATES}, got {count}")
    return count


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
