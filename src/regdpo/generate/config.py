"""Settings of a generator run, checked before any video starts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..format import (DEFAULT_NEG_TYPES, FULL_STRENGTH, MAX_CANDIDATES, NEG_TYPES, NegativeStream, check_strength,
                      sort_streams)
from .clips import SIZE_MULTIPLE
from .masks import MASK_MODES

BACKENDS = ("auto", "classical", "models")
ENGINES = ("local", "ray")


@dataclass
class GenerateConfig:
    """One generator run. ``backend`` is resolved (``classical`` or ``models``), never ``auto``."""

    output_dir: Path
    backend: str = "classical"
    davis_root: Path | None = None
    davis_split: str | None = None
    ytvos_root: Path | None = None
    ytvos_split: str = "train"
    video_root: Path | None = None
    assumed_fps: float = 30.0
    nframes: int = 22
    resolution: int = 512
    center_crop: bool = False
    max_upscale: float = 1.25
    fps: float = 15.0
    max_videos: int | None = None
    neg_types: tuple[str, ...] = DEFAULT_NEG_TYPES
    seed: int = 0
    mask_mode: str = "random"
    mask_dilation: int = 0
    masks_per_clip: int = 1
    """Entries per source clip, each with its own mask (``--masks_per_clip``): ``{video}``, ``{video}__m1``, ..."""
    mask_area: tuple[float, float] | None = None
    """``--mask_area MIN MAX``: hole area range (fractions of the frame) of random / hard masks; None: the mode's."""
    mask_margin: float | None = None
    """``--mask_margin F``: share of the width / height kept free at each border; None: the mode's (random 0, hard 0.06)."""
    prompt: str = ""
    captions: Path | None = None
    flicker_segments: int = 3
    strengths: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """Per defect type the strengths to make (missing type: ``(1.0,)``, the PRD's defect)."""
    inpaint_candidates: int = 1
    """``--inpaint_candidates N``: N seeded draws of ``inpaint`` per entry (streams ``inpaint``, ``inpaint_c1``, ...)."""
    round: int | None = None
    """``--round R``: the round of the on-policy loop these negatives belong to (recorded in meta; None: not given)."""
    resume: bool = False
    overwrite: bool = False
    max_attempts: int = 2
    num_shards: int = 1
    shard_index: int = 0
    device: str = "cuda"
    progress: bool = True
    write_manifest: bool = True  # rebuild manifest.json at the end (off: a launcher rebuilds it once)
    environment_note: str | None = None  # what the environment chose (shard, device): the run's first line
    exclude_evalset: Path | None = None
    """``--exclude_evalset OUT``: never use a source that the eval set at OUT holds (``regdpo.evaluation.exclude``)."""
    engine: str = "local"  # what runs the videos: this process, or Ray actors (``ray_engine``)
    workers: int | None = None  # --engine ray: actors (default: one per GPU of the cluster)
    gpus_per_worker: float | None = None  # --engine ray: GPUs per actor (default: 1 for models, 0 for classical)
    ray_address: str | None = None  # --engine ray: an existing cluster (``ray start``); default: a local one

    def check(self) -> None:
        """Raise ``UsageError`` naming the flag of the first bad value."""
        if self.nframes <= 0:
            raise UsageError(f"--nframes must be a positive number of frames, got {self.nframes}")
        if self.resolution < 2 * SIZE_MULTIPLE or self.resolution % SIZE_MULTIPLE:
            raise UsageError(
                f"--resolution must be a multiple of {SIZE_MULTIPLE} and at least {2 * SIZE_MULTIPLE}, "
                f"got {self.resolution}"
            )
        if not (self.max_upscale >= 1 and math.isfinite(self.max_upscale)):
            raise UsageError(f"--max_upscale must be a number >= 1, got {self.max_upscale}")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise UsageError(f"--fps must be > 0, got {self.fps}")
        if not (self.assumed_fps > 0 and math.isfinite(self.assumed_fps)):
            raise UsageError(f"--assumed_fps must be > 0, got {self.assumed_fps}")
        if self.max_videos is not None and self.max_videos <= 0:
            raise UsageError(f"--max_videos must be >= 1, got {self.max_videos}")
        if self.max_attempts <= 0:
            raise UsageError(f"--max_attempts must be >= 1, got {self.max_attempts}")
        if not self.neg_types:
            raise UsageError("--neg_types: give at least one of " + ", ".join(NEG_TYPES))
        for t in self.neg_types:
            if t not in NEG_TYPES:
                raise UsageError(f"--neg_types: unknown negative type {t!r}; known: {', '.join(NEG_TYPES)}")
        if self.mask_mode not in MASK_MODES:
            raise UsageError(f"--mask_mode: unknown mode {self.mask_mode!r}; known: {', '.join(MASK_MODES)}")
        if self.flicker_segments < 1 or ("flicker" in self.neg_types
                                          and not 2 <= self.flicker_segments <= self.nframes):
            raise UsageError(  # one segment would be a flicker negative without a jump
                f"--flicker_segments must be between 2 and --nframes ({self.nframes}), got {self.flicker_segments}"
            )
        if not 1 <= self.inpaint_candidates <= MAX_CANDIDATES:
            raise UsageError(f"--inpaint_candidates must be between 1 and {MAX_CANDIDATES}, got {self.inpaint_candidates}")
        if self.inpaint_candidates > 1 and "inpaint" not in self.neg_types:
            raise UsageError("--inpaint_candidates draws several inpaint negatives: add inpaint to --neg_types")
        if self.round is not None and not 0 <= self.round <= MAX_ROUND:
            raise UsageError(f"--round must be between 0 and {MAX_ROUND}, got {self.round}")
        if self.mask_dilation < 0:
            raise UsageError(f"--mask_dilation must be >= 0, got {self.mask_dilation}")
        if self.masks_per_clip < 1:
            raise UsageError(f"--masks_per_clip must be >= 1, got {self.masks_per_clip}")
        if self.mask_area is not None:
            lo, hi = self.mask_area
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi < 1):
                raise UsageError(f"--mask_area MIN MAX must be fractions of the frame with 0 < MIN <= MAX < 1, "
                                 f"got {lo:g} {hi:g}")
        if self.mask_margin is not None and not (math.isfinite(self.mask_margin) and 0 <= self.mask_margin < 0.5):
            raise UsageError(f"--mask_margin must be a fraction of the frame in [0, 0.5), got {self.mask_margin:g}")
        if self.mask_mode == "object" and (self.mask_area is not None or self.mask_margin is not None):
            flag = "--mask_area" if self.mask_area is not None else "--mask_margin"
            raise UsageError(f"{flag} applies to --mask_mode random and hard; object masks keep their annotation's "
                             f"size and place")
        if self.num_shards < 1:
            raise UsageError(f"--num_shards must be >= 1, got {self.num_shards}")
        if not 0 <= self.shard_index < self.num_shards:
            raise UsageError(f"--shard_index must be between 0 and --num_shards - 1 ({self.num_shards - 1}), "
                             f"got {self.shard_index}")
        if self.num_shards > 1 and self.overwrite:
            raise UsageError("--overwrite cannot be combined with --num_shards > 1 (the other shards may be writing "
                             "into the folder): delete the folder first, then start the shards")
        if self.davis_split is not None and self.davis_root is None:
            raise UsageError(f"--davis_split {self.davis_split} needs --davis_root (it picks DAVIS sequences); "
                             "without it the split would be ignored")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite exclude each other: pick one")
        if self.engine not in ENGINES:
            raise UsageError(f"--engine: unknown engine {self.engine!r}; known: {', '.join(ENGINES)}")
        if self.engine != "ray":
            given = [f for f, v in (("--workers", self.workers), ("--gpus_per_worker", self.gpus_per_worker),
                                    ("--ray_address", self.ray_address)) if v is not None]
            if given:
                raise UsageError(f"{given[0]} is a setting of --engine ray (this run uses --engine {self.engine})")
        else:
            if self.workers is not None and self.workers < 1:
                raise UsageError(f"--workers must be >= 1, got {self.workers}")
            if self.gpus_per_worker is not None and not (0 <= self.gpus_per_worker and math.isfinite(self.gpus_per_worker)):
                raise UsageError(f"--gpus_per_worker must be a number >= 0 (fractions share a GPU), got {self.gpus_per_worker}")
            if self.num_shards > 1:
                raise UsageError("--engine ray hands the videos out itself: do not combine it with --num_shards > 1 "
                                 "(or shard variables such as SLURM_ARRAY_TASK_ID / RANK in the environment)")
        if self.backend not in ("classical", "models"):
            raise UsageError(f"--backend: unknown backend {self.backend!r}")

    @property
    def shard_name(self) -> str | None:
        """``shard-K-of-N`` for a sharded run (its lock and staging folder), else ``None``."""
        return f"shard-{self.shard_index}-of-{self.num_shards}" if self.num_shards > 1 else None

    def strengths_of(self, neg_type: str) -> tuple[float, ...]:
        return tuple(self.strengths.get(neg_type) or (FULL_STRENGTH,))

    @property
    def streams(self) -> list[NegativeStream]:
        """Every negative stream of a video, canonical order."""
        return sort_streams(NegativeStream(t, s, k) for t in self.neg_types for s in self.strengths_of(t)
                            for k in range(self.candidates_of(t)))

    def candidates_of(self, neg_type: str) -> int:
        """Draws per (type, strength): ``--inpaint_candidates`` for inpaint, else 1."""
        return self.inpaint_candidates if neg_type == "inpaint" else 1

    def candidate_settings(self) -> dict[str, int] | None:
        """``{type: N}`` for the types drawn more than once (the backend's ``candidates``), else None."""
        made = {t: self.candidates_of(t) for t in self.neg_types if self.candidates_of(t) > 1}
        return made or None

    def strength_settings(self) -> dict[str, list[float]] | None:
        """Strengths per type for the meta; None when every type is at 1.0 (today's runs)."""
        made = {t: sorted(self.strengths_of(t), reverse=True) for t in self.neg_types}
        return None if all(v == [FULL_STRENGTH] for v in made.values()) else made

    @property
    def mask_flags_given(self) -> bool:
        """Whether a mask flag of ``--masks_per_clip`` / ``--mask_area`` / ``--mask_margin`` departs from today."""
        return self.masks_per_clip != 1 or self.mask_area is not None or self.mask_margin is not None

    def mask_settings(self) -> dict[str, Any]:
        """The non-default mask settings, as recorded in the meta (empty for today's runs)."""
        out: dict[str, Any] = {}
        if self.masks_per_clip != 1:
            out["masks_per_clip"] = self.masks_per_clip
        if self.mask_area is not None:
            out["mask_area"] = [float(v) for v in self.mask_area]
        if self.mask_margin is not None:
            out["mask_margin"] = float(self.mask_margin)
        return out

    def settings_for_meta(self) -> dict[str, Any]:
        """The settings that shape every video (recorded in meta; must match to ``--resume``).
        ``strengths`` is recorded only when some type is made at another strength than 1.0, the mask
        settings (``mask_settings``) only when given."""
        strengths = self.strength_settings()
        return {
            "backend": self.backend,
            "mask_mode": self.mask_mode,
            "mask_dilation": self.mask_dilation,
            "resolution": self.resolution,
            "center_crop": self.center_crop,
            "nframes": self.nframes,
            "fps": self.fps,
            "run_seed": self.seed,
            "neg_types": list(self.neg_types),
            "flicker_segments": self.flicker_segments if "flicker" in self.neg_types else None,
            **({"strengths": strengths} if strengths else {}),
            **({"inpaint_candidates": self.inpaint_candidates} if self.inpaint_candidates != 1 else {}),
            **({"round": self.round} if self.round is not None else {}),
            **self.mask_settings(),
        }


RESUME_KEYS = ("backend", "mask_mode", "mask_dilation", "resolution", "center_crop", "nframes", "fps", "run_seed",
               "neg_types", "flicker_segments", "strengths", "masks_per_clip", "mask_area", "mask_margin",
               "inpaint_candidates", "round")
"""generator settings that must be equal between a folder's videos and a ``--resume`` run."""

FLAG_OF = {"run_seed": "seed", "strengths": "strengths / --<type>_strength"}
"""The flag of a ``RESUME_KEYS`` key where it is not the key itself."""

UNSET_SHOWN = {"strengths": "1.0", "masks_per_clip": "1", "mask_area": "not given (the mode's range)",
               "mask_margin": "not given (the mode's margin)", "inpaint_candidates": "1", "round": "not given"}
"""How a ``--resume`` message shows a key recorded only when given (absent: today's default)."""

STRENGTH_TYPES = ("hallucination", "blur", "flicker", "renoise")
"""Types with a strength knob (``--<type>_strength``); ``inpaint`` is the model's own result, always 1.0
(``renoise`` at 1.0 is ``inpaint``: from pure noise)."""

MAX_ROUND = 1000
"""Largest ``--round``."""


def strengths_from_flags(neg_types: tuple[str, ...], strengths: list[float] | None,
                         per_type: dict[str, float | None]) -> dict[str, tuple[float, ...]]:
    """Strengths per type from ``--strengths`` (every defect type) or ``--<type>_strength`` (one type).

    ``renoise`` has no default: left at 1.0 it would repeat ``inpaint`` byte for byte, so naming it without a
    strength is a ``UsageError`` (an explicit 1.0 is accepted)."""
    def check(flag: str, value: float) -> float:
        try:
            return check_strength(value)
        except ValueError:
            raise UsageError(f"{flag} must be in [0, 1], got {value}") from None

    given = {t: v for t, v in per_type.items() if v is not None}
    if strengths and given:
        raise UsageError(f"--strengths and --{next(iter(given))}_strength exclude each other: --strengths sets "
                         "the strengths of every type")
    if strengths:
        values = [check("--strengths", v) for v in strengths]
        if len(set(values)) != len(values):
            raise UsageError(f"--strengths lists a strength twice (on the 0.01 grid): {strengths}")
        return {t: tuple(values) for t in neg_types if t in STRENGTH_TYPES}
    if "renoise" in neg_types and "renoise" not in given:
        raise UsageError("--neg_types renoise needs a strength: give --renoise_strength S (e.g. 0.5; lower = "
                         "closer to the GT) or --strengths; at 1.0 renoise is inpaint (from pure noise), a second "
                         "copy of the same loser")
    return {t: (check(f"--{t}_strength", v),) for t, v in given.items()}


def ordered_neg_types(requested) -> tuple[str, ...]:
    """Requested negative types in canonical order, duplicates dropped."""
    requested = list(requested or [])
    unknown = [t for t in requested if t not in NEG_TYPES]
    if unknown:
        raise UsageError(f"--neg_types: unknown negative type {unknown[0]!r}; known: {', '.join(NEG_TYPES)}")
    return tuple(t for t in NEG_TYPES if t in requested)

