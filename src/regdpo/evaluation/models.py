"""The models ``regdpo eval`` compares: ``--model NAME=SPEC`` entries and what runs each.

An ``EvalModel`` has a ``name``, the ``spec`` the user gave, JSON ``settings`` (part of every result's resume
key) and ``open()``, which loads it (once per run) and returns an ``Inpainter``: ``inpaint(clip) -> uint8
[T, H, W, 3]`` raw frames for ``clip`` (a ``backends.base.Clip``; the runner composites them onto the GT) and
``close()``.

- ``--backend models``: SPEC is a DiffuEraser weights folder (``brushnet/``, ``unet_main/``: a release or the
  ``--output_dir`` of ``train_region_reg_dpo.py``); the model runs DiffuEraser's standard inference with the
  ProPainter prior, in memory, through the generator's models backend (its ``inpaint`` stream, with SPEC as
  ``--diffueraser_path`` and the shared weight flags for the rest). The seed is the clip's, the same for every
  model. With a ``PriorCache`` (``regdpo.evaluation.priors``; ``regdpo eval``'s default) the models share one
  ProPainter, loaded on the first clip whose prior is not cached, and each clip's prior is computed once
  for all of them; without one, each model's backend runs its own ProPainter per clip. Same bytes either way.
- ``--backend classical``: SPEC is a classical fill of the CPU backend (``regdpo.backends.classical``), named
  as its streams: ``inpaint`` (temporal propagation + Telea: the best classical fill), ``blur``,
  ``hallucination``, ``flicker``, or one at a strength (``blur_s0.50``). For trying the gate without a GPU.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .. import format as fmt
from ..backends.base import Clip
from ..errors import UsageError

RESERVED_NAMES = ("name", "split", "source", "not_measured", "failed")
"""Model names that would collide with a clip record's own keys in eval.json."""
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class Inpainter(Protocol):
    def inpaint(self, clip: Clip) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass
class EvalModel:
    name: str
    spec: str
    settings: dict[str, Any]
    open: Callable[[], Inpainter] = field(repr=False)


def parse_model_flags(values: Sequence[str]) -> list[tuple[str, str]]:
    """``["base=w/a", "dpo=w/b"]`` -> ``[("base", "w/a"), ("dpo", "w/b")]``; ``UsageError`` naming a bad one."""
    out: list[tuple[str, str]] = []
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep:
            raise UsageError(f"--model {value!r}: expected NAME=SPEC, e.g. --model base=weights/diffuEraser")
        if not _MODEL_NAME.match(name) or ".." in name:
            raise UsageError(f"--model {value!r}: a model name is 1-64 letters, digits and . _ + - "
                             "(it names folders)")
        if name in RESERVED_NAMES:
            raise UsageError(f"--model {value!r}: {name!r} is reserved (eval.json uses it); choose another name")
        if not spec:
            raise UsageError(f"--model {value!r}: nothing after '='")
        if name in dict(out):
            raise UsageError(f"--model {name}: given twice")
        out.append((name, spec))
    if not out:
        raise UsageError("give at least one --model NAME=SPEC (the first is the baseline the others are compared with)")
    return out


# --------------------------------------------------------------------------- classical


class ClassicalInpainter:
    def __init__(self, stream: str):
        from ..backends.classical import ClassicalBackend

        parsed = fmt.parse_negative(stream)
        self.neg_type, self.strength, self.candidate = parsed.type, parsed.strength, parsed.candidate
        self.stream = stream
        self.backend = ClassicalBackend()

    def inpaint(self, clip: Clip) -> np.ndarray:
        candidates = {self.neg_type: self.candidate + 1} if self.candidate else None  # inpaint_c1: a seeded draw
        result = self.backend.generate(clip, [self.neg_type], {self.neg_type: [self.strength]}, candidates=candidates)
        return result.negatives[self.stream]

    def close(self) -> None:
        self.backend.close()


def classical_model(name: str, spec: str) -> EvalModel:
    try:
        stream = fmt.check_stream(spec)
    except ValueError:
        raise UsageError(f"--model {name}={spec}: with --backend classical, SPEC is a classical fill: "
                         f"{', '.join(fmt.NEG_TYPES)} or one at a strength such as blur_s0.50") from None
    return EvalModel(name, spec, {"backend": "classical", "fill": stream},
                     lambda: ClassicalInpainter(stream))


# --------------------------------------------------------------------------- models


class ModelsInpainter:
    """DiffuEraser's standard inference (ProPainter prior, one seed over the clip) with one model's weights;
    the prior from ``priors`` (a ``PriorCache``, shared by the models) when given, else from its own ProPainter."""

    def __init__(self, config: Any, priors: Any = None):
        from ..backends.models import ModelsBackend

        self.priors = priors
        self.backend = ModelsBackend(config, propainter=priors is None)

    def inpaint(self, clip: Clip) -> np.ndarray:
        prior = None if self.priors is None else self.priors.get(clip.frames, clip.hole)
        return self.backend.generate(clip, ["inpaint"], prior=prior).negatives["inpaint"]

    def close(self) -> None:
        self.backend.close()


def models_config_for(args: argparse.Namespace, weights_dir: str) -> Any:
    """The models backend's config of one model: the shared weight flags, ``weights_dir`` as its DiffuEraser."""
    from ..backends.models_config import ModelsConfig

    config = ModelsConfig.from_args(args)
    return replace(config, diffueraser_path=str(weights_dir), device=getattr(args, "device", None) or config.device)


def models_model(args: argparse.Namespace, name: str, spec: str, priors: Any = None) -> EvalModel:
    """A ``--backend models`` entry; every path checked now (``UsageError`` listing what is missing).
    ``priors``: the ``PriorCache`` its inpainter takes the ProPainter prior from (None: its own ProPainter)."""
    if not Path(spec).is_dir():
        raise UsageError(f"--model {name}={spec}: folder not found")
    config = models_config_for(args, spec)
    problems = config.flag_problems() + config.missing()
    if problems:
        raise UsageError(f"--model {name}={spec}: cannot run it with --backend models: " + "; ".join(problems))
    settings = {"backend": "models", "weights": str(spec), "pcm_ckpt": config.pcm_ckpt,
                "diffueraser_nframes": int(config.diffueraser_nframes), "precision": config.model_precision,
                "propainter_resize_ratio": float(config.propainter_resize_ratio),
                "shared_weights": {k: getattr(config, k) for k in ("base_model_path", "vae_path",
                                                                    "propainter_model_dir", "pcm_weights_path")}}
    return EvalModel(name, spec, settings, lambda: ModelsInpainter(config, priors))


def build_models(args: argparse.Namespace, priors: Any = None) -> list[EvalModel]:
    """The ``--model`` entries of the command line, in order (the first is the baseline). ``priors``: with
    ``--backend models``, the ``PriorCache`` every model takes its ProPainter priors from (None: each its own)."""
    pairs = parse_model_flags(args.model)
    if args.backend == "classical":
        return [classical_model(n, s) for n, s in pairs]
    models = [models_model(args, n, s, priors) for n, s in pairs]
    from ..backends.models import resolve_device

    resolve_device(models_config_for(args, pairs[0][1]).device)  # a device torch cannot use: one line, now
    return models
