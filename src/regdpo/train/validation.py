"""Validation while training: the model being trained, scored on an eval set's dev split as ``regdpo eval`` does.

``train_region_reg_dpo.py --validation_set EVALSET --validation_split dev --validation_steps N
[--validation_clips K]``: at the start the *reference* model (``--diffueraser_path``, as loaded) is scored
once; then every N optimizer steps and after the last one the weights being trained are copied (in memory)
into a second DiffuEraser pipeline and scored the same way. Scoring = DiffuEraser's standard inference with
the ProPainter prior (the models backend's ``inpaint`` stream, ``--propainter_model_dir`` and
``--pcm_weights_path``), clip ``c`` seeded with ``regdpo eval``'s ``clip_seed(seed, c)`` every time, the
output composited onto the GT and measured with ``regdpo eval``'s pixel metrics: the figures equal what
``regdpo eval --split dev --seed S`` reports for the same weights.

The ProPainter prior depends on the clip and ProPainter only, never on the DiffuEraser weights: each dev clip's
prior is computed once, at the first scoring, kept in memory (``regdpo.evaluation.priors``: a few clips,
held anyway) and reused by every later scoring; ProPainter is then freed from the device. Same bytes as
recomputing it (a test compares).

Each scoring appends one line to ``metrics.jsonl`` (:func:`validation_record`, with the priors it computed and
reused); a model whose mean hole PSNR falls below the reference's raises a warning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

VALIDATION_METRICS = ("hole_psnr", "hole_ssim", "hole_l1", "boundary_psnr", "hole_temporal_deviation", "psnr", "ssim")
"""What validation reports (``regdpo eval``'s pixel metrics)."""

PRIMARY = "hole_psnr"
"""The metric whose fall below the reference raises the warning."""


# ---------------------------------------------------------------------- pure


def mean_scores(per_clip: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per metric the mean over the clips where it was measured (``None`` where none was)."""
    out: dict[str, float | None] = {}
    for name in VALIDATION_METRICS:
        values = [float(c[name]) for c in per_clip if c.get(name) is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def validation_record(step: int, model: str, split: str, clips: Sequence[str], seed: int,
                      scores: Mapping[str, float | None], reference: Mapping[str, float | None],
                      seconds: float, priors: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The ``metrics.jsonl`` line of one scoring: ``{"step": N, "validation": {...}}`` (see docs/training.md).

    ``below_reference``: the model's mean ``PRIMARY`` is below the reference's (False for the reference).
    ``priors``: ``{"computed": n, "reused": m}``, the ProPainter priors of this scoring (omitted when None)."""
    delta = {k: (None if scores.get(k) is None or reference.get(k) is None else scores[k] - reference[k])
             for k in VALIDATION_METRICS}
    below = model != "reference" and delta[PRIMARY] is not None and delta[PRIMARY] < 0
    return {"step": int(step), "validation": {
        "model": model, "split": split, "clips": list(clips), "seed": int(seed),
        "metrics": dict(scores), "reference": dict(reference), "delta": delta,
        "below_reference": bool(below), "seconds": float(seconds),
        **({"priors": {k: int(v) for k, v in priors.items()}} if priors is not None else {})}}


def tracker_values(record: Mapping[str, Any]) -> dict[str, float]:
    """``validation/<metric>`` and ``validation/delta_<metric>`` of a record, for the trackers."""
    v = record["validation"]
    out = {f"validation/{k}": float(x) for k, x in v["metrics"].items() if x is not None}
    out.update({f"validation/delta_{k}": float(x) for k, x in v["delta"].items() if x is not None})
    return out


def warning_line(record: Mapping[str, Any]) -> str | None:
    """The warning of a record whose model fell below the reference, else ``None``."""
    v = record["validation"]
    if not v["below_reference"]:
        return None
    return (f"WARNING: step {record['step']}: the {v['split']} {PRIMARY} ({v['metrics'][PRIMARY]:.3f} dB over "
            f"{len(v['clips'])} clip(s)) is below the reference model's ({v['reference'][PRIMARY]:.3f} dB): the "
            "fine-tune is making the held-out fill worse (see docs/training.md, Validation)")


def base_state_keys(keys: Sequence[str]) -> dict[str, str]:
    """``plain key -> key`` of a module's state dict whose layers may carry peft LoRA adapters (the PCM
    LoRA of the inference pipeline): ``x.base_layer.weight`` is ``x.weight``; the adapters' own keys are
    left out."""
    out = {}
    for key in keys:
        if ".lora_" in key or ".lora_magnitude_vector" in key:
            continue
        out[key.replace(".base_layer.", ".")] = key
    return out


def copy_weights(target: Any, source_state: Mapping[str, Any]) -> None:
    """Copy ``source_state`` (a trained module's state dict) into ``target``'s own weights in place (cast to
    its dtype and device), under its LoRA adapters. ``ValueError`` when the two modules differ."""
    import torch

    own = target.state_dict()
    mapping = base_state_keys(list(own))
    missing = sorted(set(mapping) - set(source_state))
    unexpected = sorted(set(source_state) - set(mapping))
    if missing or unexpected:
        raise ValueError(f"the trained module does not match the validation pipeline's (missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]})")
    with torch.no_grad():
        for plain, key in mapping.items():
            own[key].copy_(source_state[plain])


# ---------------------------------------------------------------------- the scorer (models at the edge)


@dataclass
class ValidationClip:
    name: str
    gt: np.ndarray
    hole: np.ndarray


class Validator:
    """Loads the dev clips and a models backend (reference weights + PCM) once; ``score`` scores whatever
    weights its DiffuEraser pipeline holds, with each clip's ProPainter prior from ``priors`` (computed at the
    first scoring, then reused; ProPainter freed after it); ``load`` puts the trained weights there."""

    def __init__(self, evalset_path: str, split: str, max_clips: int | None, models_config: Any, seed: int):
        from ..evaluation.evalset import load_evalset, verify_evalset

        from ..errors import UsageError

        evalset = load_evalset(evalset_path, "--validation_set")
        try:
            chosen = evalset.split(split)
        except UsageError as exc:
            raise UsageError(str(exc).replace("--split", "--validation_split", 1)) from exc
        if max_clips is not None:
            chosen = chosen[:max_clips]
        verify_evalset(evalset, chosen)
        self.split, self.seed = split, int(seed)
        self.clips = [ValidationClip(c.name, *evalset.read_clip(c)) for c in chosen]
        from ..backends.models import ModelsBackend
        from ..evaluation.priors import MemoryStore, PriorCache, ProPainterPriors

        self.backend = ModelsBackend(models_config, propainter=False)
        compute = ProPainterPriors(models_config)
        self.priors = PriorCache(compute, compute.key_settings(), MemoryStore())
        self.last_priors = {"computed": 0, "reused": 0}

    @property
    def clip_names(self) -> list[str]:
        return [c.name for c in self.clips]

    def load(self, unet_main: Any, brushnet: Any) -> None:
        """The trained modules' current weights into the validation pipeline (the trained ones untouched)."""
        pipeline = self.backend.diffueraser.pipeline
        copy_weights(pipeline.unet, unet_main.state_dict())
        copy_weights(pipeline.brushnet, brushnet.state_dict())

    def score(self) -> tuple[dict[str, float | None], float]:
        """(mean pixel metrics over the clips, seconds); ``last_priors``: the priors it computed and reused."""
        from ..backends.base import Clip
        from ..evaluation.metrics import PixelMetrics, split_values
        from ..evaluation.runner import clip_seed
        from ..frames import composite

        started = time.perf_counter()
        metrics = PixelMetrics()
        per_clip = []
        before = self.priors.counts()
        for clip in self.clips:
            prior = self.priors.get(clip.gt, clip.hole)
            result = self.backend.generate(Clip(clip.name, clip.gt, clip.hole, clip_seed(self.seed, clip.name)),
                                           ["inpaint"], prior=prior)
            output = composite(np.asarray(result.negatives["inpaint"]), clip.gt, clip.hole)
            per_clip.append(split_values(metrics.measure(clip.gt, output, clip.hole))[0])
        self.priors.release()  # every clip's prior is in memory: ProPainter's networks leave the device
        self.last_priors = {k: v - before[k] for k, v in self.priors.counts().items()}
        return mean_scores(per_clip), time.perf_counter() - started

    def close(self) -> None:
        self.priors.release()
        self.backend.close()


# ---------------------------------------------------------------------- inside the training loop


def models_config(args: Any, device: str) -> Any:
    """The models backend's config of validation: the training weights, ``--propainter_model_dir``,
    ``--pcm_weights_path`` and the ProPainter flags, on the training device."""
    from ..backends.models_config import ModelsConfig

    return ModelsConfig(base_model_path=args.base_model_name_or_path, vae_path=args.vae_path,
                        diffueraser_path=args.diffueraser_path, propainter_model_dir=args.propainter_model_dir,
                        pcm_weights_path=args.pcm_weights_path, diffueraser_repo=args.diffueraser_repo,
                        device=str(device), propainter_resize_ratio=args.propainter_resize_ratio,
                        propainter_raft_iter=args.propainter_raft_iter, oom_retry="off")


def flag_problems(args: Any) -> list[str]:
    """The validation flags' problems (before any model loads), one phrase each."""
    from pathlib import Path

    if not args.validation_set:
        given = [f for f in ("validation_steps", "validation_clips") if getattr(args, f) is not None]
        return [f"--{given[0]} needs --validation_set"] if given else []
    problems = []
    if not (Path(args.validation_set) / "evalset.json").is_file():
        problems.append(f"--validation_set {args.validation_set}: no evalset.json there (make one with "
                        "`regdpo evalset`)")
    for flag in ("propainter_model_dir", "pcm_weights_path"):
        if not getattr(args, flag):
            problems.append(f"--validation_set needs --{flag} (validation runs DiffuEraser's standard inference)")
    if not problems:
        config = models_config(args, "cpu")
        checked = ("--device", "--base_model_path", "--vae_path", "--diffueraser_path")  # the training's own checks
        problems += [p for p in config.flag_problems() + config.missing() if not p.startswith(checked)]
    return problems


class TrainingValidation:
    """What the training loop calls: ``start`` (scores the reference once), ``after_step`` (every
    ``--validation_steps``), ``finish`` (after the last step unless just done). Main process only."""

    def __init__(self, args: Any, device: Any, write_line: Any, log: Any, echo: Any):
        self.args = args
        self.seed = args.seed if args.seed is not None else 0
        self.validator = Validator(args.validation_set, args.validation_split, args.validation_clips,
                                   models_config(args, device), self.seed)
        self.write_line, self.log, self.echo = write_line, log, echo
        self.reference: dict[str, float | None] = {}
        self.last_step: int | None = None

    def _record(self, step: int, model: str, scores: Mapping[str, float | None], seconds: float) -> None:
        record = validation_record(step, model, self.args.validation_split, self.validator.clip_names, self.seed,
                                   scores, self.reference, seconds, self.validator.last_priors)
        self.write_line(record)
        self.log(tracker_values(record), step)
        warning = warning_line(record)
        if warning:
            self.echo(warning)
        self.last_step = step

    def start(self, step: int) -> None:
        self.reference, seconds = self.validator.score()
        self._record(step, "reference", self.reference, seconds)
        self.last_step = None

    def _run(self, step: int, unet_main: Any, brushnet: Any) -> None:
        self.validator.load(unet_main, brushnet)
        scores, seconds = self.validator.score()
        self._record(step, "trained", scores, seconds)

    def after_step(self, step: int, unet_main: Any, brushnet: Any) -> None:
        every = self.args.validation_steps
        if every and step % every == 0:
            self._run(step, unet_main, brushnet)

    def finish(self, step: int, unet_main: Any, brushnet: Any) -> None:
        if self.last_step != step:
            self._run(step, unet_main, brushnet)
        self.validator.close()
