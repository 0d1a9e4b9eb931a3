"""Running every model on every clip of a split, resumably, and measuring each output.

Work units are (model, clip). A unit's result is ``DIR/units/{model}/{clip}.json`` (written atomically):
its resume ``key`` (eval set file hash, clip digest, model settings, seed, metric providers' settings), the
metric values, the reasons of the ones not measured, the set-metric features, and the frame index of its
preview. ``DIR/units/{model}/{clip}.png`` is that preview frame of the composited output (for eval.html).
A rerun into the same ``DIR`` reuses every unit whose key matches (and, with ``save_frames``, whose frames
are all there) and computes the rest; a model is loaded only when one of its units is left. A clip that
fails (unreadable, the model raised) fails alone: it is reported in ``failed`` and retried by the next run.

The output frames are composited onto the GT (the eval set's mask; the GT outside the hole) and measured
as ``uint8`` arrays in memory: nothing is encoded to a video file between the model and the metric. With
``save_frames`` they are also written as lossless PNG under ``DIR/frames/{model}/{clip}/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import format as fmt
from ..backends.base import Clip
from ..backends.memory import device_oom
from ..errors import FormatError
from ..frames import composite, write_rgb
from ..json_io import MAX_RECORD_BYTES, read_object
from ..progress import Progress
from ..safe_io import real_dir, replacing

from ..seeding import derive_seed
from .evalset import EvalClip, EvalSet
from .metrics import ClipMetricProvider, NotMeasured, PixelMetrics, SetMetricProvider, split_values
from .models import EvalModel

logger = logging.getLogger("regdpo")

UNITS_DIR = "units"
FRAMES_DIR = "frames"


def clip_seed(seed: int, clip: str) -> int:
    """The seed every model gets for ``clip`` (from ``--seed`` and the clip name only)."""
    return derive_seed(seed, "eval", clip)


def preview_frame(hole: np.ndarray) -> int:
    """The frame shown in the report: the one with the most hole pixels (the first of equals)."""
    return int(np.argmax(hole.reshape(hole.shape[0], -1).sum(axis=1)))


@dataclass
class UnitResult:
    model: str
    clip: str
    values: dict[str, float | None] = field(default_factory=dict)
    not_measured: dict[str, str] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class EvalRunner:
    """Runs ``models`` on ``clips`` of ``evalset`` into ``output_dir`` (see the module doc).

    ``clip_metrics``: per-clip metric providers (default ``[PixelMetrics()]``); ``set_metrics``: set-level ones
    (``regdpo.evaluation.metrics`` describes both hooks)."""

    def __init__(self, evalset: EvalSet, clips: Sequence[EvalClip], models: Sequence[EvalModel], output_dir: Path, *,
                 seed: int = 0, save_frames: bool = False,
                 clip_metrics: Sequence[ClipMetricProvider] | None = None,
                 set_metrics: Sequence[SetMetricProvider] = (), progress: bool = True,
                 log: Callable[[str], None] | None = None):
        self.evalset, self.clips, self.models = evalset, list(clips), list(models)
        self.output_dir = Path(output_dir)
        self.seed, self.save_frames = int(seed), bool(save_frames)
        self.clip_metrics = list(clip_metrics) if clip_metrics is not None else [PixelMetrics()]
        self.set_metrics = list(set_metrics)
        self.progress = progress
        self.log = log or (lambda line: logger.info(line))

    # ------------------------------------------------------------------ keys and paths
    def unit_key(self, model: EvalModel, clip: EvalClip) -> dict[str, Any]:
        return {"evalset_sha256": self.evalset.sha256, "clip": clip.digest(), "model": model.settings,
                "seed": self.seed, "clip_metrics": [m.settings() for m in self.clip_metrics],
                "set_metrics": [m.settings() for m in self.set_metrics]}

    def unit_path(self, model: str, clip: str) -> Path:
        return self.output_dir / UNITS_DIR / model / f"{clip}.json"

    def frames_dir(self, model: str, clip: str) -> Path:
        return self.output_dir / FRAMES_DIR / model / clip

    def _done(self, model: EvalModel, clip: EvalClip) -> UnitResult | None:
        path = self.unit_path(model.name, clip.name)
        if not path.is_file():
            return None
        try:  # regdpo's one JSON reader; a damaged unit (any field of the wrong type) is made again
            unit = read_object(path, MAX_RECORD_BYTES)
            if unit.string("key_sha256", None, nullable=True) != _digest(self.unit_key(model, clip)):
                return None
            values, not_measured, features = (dict(unit.obj(k, {})) for k in ("values", "not_measured", "features"))
        except (FormatError, OSError):  # (OSError: an InputUnreadable, e.g. a FIFO there)
            return None
        if self.save_frames and not all((self.frames_dir(model.name, clip.name) / fmt.frame_name(i)).is_file()
                                        for i in range(clip.num_frames)):
            return None
        return UnitResult(model.name, clip.name, values, not_measured, features)

    # ------------------------------------------------------------------ running
    def run(self) -> dict[tuple[str, str], UnitResult]:
        """Every (model, clip) result, computed or reused."""
        results: dict[tuple[str, str], UnitResult] = {}
        pending: dict[str, list[EvalClip]] = {}
        for model in self.models:
            for clip in self.clips:
                done = self._done(model, clip)
                if done is not None:
                    results[(model.name, clip.name)] = done
                else:
                    pending.setdefault(model.name, []).append(clip)
        total = sum(len(v) for v in pending.values())
        reused = len(self.models) * len(self.clips) - total
        if reused:
            self.log(f"reusing {reused} finished (model, clip) result(s) in {self.output_dir}")
        bar = Progress(total, "regdpo eval", unit="clip", enabled=self.progress)
        try:
            for model in self.models:
                clips = pending.get(model.name, [])
                if not clips:
                    continue
                try:
                    inpainter = model.open()
                except Exception as exc:  # a model that cannot load: its clips fail, the others run
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    reason = f"cannot load model {model.name}: {type(exc).__name__}: {exc}"
                    self.log(reason)
                    for clip in clips:
                        results[(model.name, clip.name)] = UnitResult(model.name, clip.name, error=reason)
                        bar.update(1)
                    continue
                try:
                    for clip in clips:
                        bar.set_postfix_str(f"{model.name} / {clip.name}")
                        results[(model.name, clip.name)] = self._run_unit(model, inpainter, clip)
                        bar.update(1)
                finally:
                    inpainter.close()
        finally:
            bar.close()
        return results

    def _run_unit(self, model: EvalModel, inpainter: Any, clip: EvalClip) -> UnitResult:
        try:
            gt, hole = self.evalset.read_clip(clip)
            raw = inpainter.inpaint(Clip(clip.name, gt, hole, clip_seed(self.seed, clip.name)))
            raw = np.asarray(raw)
            if raw.shape != gt.shape or raw.dtype != np.uint8:
                raise ValueError(f"the model returned {raw.dtype} {raw.shape}, expected uint8 {gt.shape}")
            output = composite(raw, gt, hole)
            result = UnitResult(model.name, clip.name)
            for provider in self.clip_metrics:
                values, reasons = split_values(provider.measure(gt, output, hole))
                result.values.update(values)
                result.not_measured.update(reasons)
            for provider in self.set_metrics:
                feats = provider.features(gt, output, hole)
                key = type(provider).__name__
                if isinstance(feats, NotMeasured):
                    result.features[key] = {"not_measured": feats.reason}
                else:
                    result.features[key] = feats
            self._write_unit(model, clip, result, output, preview_frame(hole))
            return result
        except Exception as exc:
            if device_oom(exc) is not None:
                from ..backends.memory import free_device_memory

                free_device_memory()
            line = f"{type(exc).__name__}: {exc}".splitlines()[0][:400]
            self.log(f"FAILED {model.name} / {clip.name}: {line}")
            logger.debug("".join(traceback.format_exception(exc)))
            return UnitResult(model.name, clip.name, error=line)

    def _write_unit(self, model: EvalModel, clip: EvalClip, result: UnitResult, output: np.ndarray,
                    frame: int) -> None:
        folder = real_dir(self.unit_path(model.name, clip.name).parent)
        if self.save_frames:
            frames = real_dir(self.frames_dir(model.name, clip.name))
            for i, f in enumerate(output):
                with replacing(frames / fmt.frame_name(i)) as tmp:  # an exclusive temporary, renamed
                    write_rgb(tmp, f)
        with replacing(folder / f"{clip.name}.png") as tmp:
            write_rgb(tmp, output[frame])
        fmt.write_json_atomic(self.unit_path(model.name, clip.name), {
            "key_sha256": _digest(self.unit_key(model, clip)), "key": self.unit_key(model, clip),
            "model": model.name, "clip": clip.name, "values": result.values, "not_measured": result.not_measured,
            "features": result.features, "preview_frame": frame})
