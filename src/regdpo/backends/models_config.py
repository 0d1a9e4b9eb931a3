"""Settings of the ``models`` backend (ProPainter + DiffuEraser) and their checks.

Kept apart from the backend itself so that the command line can validate flags, weight
paths and the DiffuEraser source before any video starts without importing torch or
the model code. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..cli_types import MAX_FRAMES, MAX_SIDE, integer, real
from ..errors import UsageError

WEIGHT_FLAGS = ("base_model_path", "vae_path", "diffueraser_path", "propainter_model_dir", "pcm_weights_path")
"""Flags that name weight folders; giving any of them selects ``--backend models`` by default."""

PCM_MODE = "sd15"
"""Sub-folder and name part of the PCM LoRA files for Stable Diffusion 1.5."""

PCM_CHECKPOINTS: dict[str, tuple[str, int, str]] = {
    # name: (file name template, denoising steps, scheduler) as DiffuEraser defines them
    "2-Step": ("pcm_{}_smallcfg_2step_converted.safetensors", 2, "tcd"),
    "4-Step": ("pcm_{}_smallcfg_4step_converted.safetensors", 4, "tcd"),
    "8-Step": ("pcm_{}_smallcfg_8step_converted.safetensors", 8, "tcd"),
    "16-Step": ("pcm_{}_smallcfg_16step_converted.safetensors", 16, "tcd"),
    "Normal CFG 4-Step": ("pcm_{}_normalcfg_4step_converted.safetensors", 4, "tcd"),
    "Normal CFG 8-Step": ("pcm_{}_normalcfg_8step_converted.safetensors", 8, "tcd"),
    "Normal CFG 16-Step": ("pcm_{}_normalcfg_16step_converted.safetensors", 16, "tcd"),
    "LCM-Like LoRA": ("pcm_{}_lcmlike_lora_converted.safetensors", 4, "lcm"),
}
"""PCM checkpoints: the LoRA file under ``--pcm_weights_path/sd15/``, its steps and scheduler."""

PROPAINTER_FILES = ("ProPainter.pth", "recurrent_flow_completion.pth", "raft-things.pth")

SOURCE_FILES = (
    "diffueraser/pipeline_diffueraser.py",
    "libs/brushnet_CA.py",
    "libs/unet_motion_model.py",
    "libs/unet_2d_condition.py",
    "propainter/model/propainter.py",
    "propainter/model/recurrent_flow_completion.py",
    "propainter/model/modules/flow_comp_raft.py",
    "propainter/RAFT/raft.py",
)
"""Files of the DiffuEraser checkout that the backend imports (relative to the checkout)."""

PYTHON_MODULES = {
    "diffusers": "diffusers==0.29.2",
    "transformers": "transformers==4.41.1",
    "peft": "peft==0.13.2",
    "einops": "einops",
    "safetensors": "safetensors",
    "scipy": "scipy",
    "torchvision": "torchvision (the build that matches your torch; ProPainter needs torchvision.ops)",
}
"""Python modules the DiffuEraser / ProPainter code needs, with what to install."""

FLICKER_SCHEMES = ("segments", "full_runs")
OOM_RETRIES = ("reduced", "off")
PRECISIONS = ("auto", "fp16", "fp32")
MAX_NFRAMES = 32  # the motion modules' maximum sequence length


@dataclass
class ModelsConfig:
    """Everything the models backend needs; built from the generator's flags.

    Paths are folders in the layouts the DiffuEraser project documents (see docs/models.md).
    ``device`` is ``cuda``, ``cuda:N``, ``cpu`` or ``auto`` (CUDA when available).
    """

    base_model_path: str | None = None
    vae_path: str | None = None
    diffueraser_path: str | None = None
    propainter_model_dir: str | None = None
    pcm_weights_path: str | None = None
    diffueraser_repo: str | None = None
    device: str = "cuda"
    flicker_segments: int = 3
    pcm_ckpt: str = "2-Step"
    diffueraser_nframes: int = 22
    model_precision: str = "auto"
    flicker_scheme: str = "segments"
    diffueraser_use_prompt: bool = False
    propainter_resize_ratio: float = 0.6
    propainter_mask_dilation: int = 0
    propainter_raft_iter: int = 20
    propainter_subvideo_length: int = 50
    propainter_neighbor_length: int = 10
    propainter_ref_stride: int = 10
    oom_retry: str = "reduced"
    """After a CUDA out-of-memory error: ``reduced`` = make the video once more at ``MemoryReduction``'s
    settings; ``off`` = the video fails at once (every video of the dataset made at the same settings)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ModelsConfig":
        known = cls.__dataclass_fields__
        return cls(**{k: getattr(args, k) for k in known if getattr(args, k, None) is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def any_weight_path_given(self) -> bool:
        return any(getattr(self, f) for f in WEIGHT_FLAGS)

    # ------------------------------------------------------------------ checks
    def pcm_file(self) -> Path | None:
        """The PCM LoRA file this config loads (``None`` when the path or checkpoint is unset/unknown)."""
        if not self.pcm_weights_path or self.pcm_ckpt not in PCM_CHECKPOINTS:
            return None
        return Path(self.pcm_weights_path) / PCM_MODE / PCM_CHECKPOINTS[self.pcm_ckpt][0].format(PCM_MODE)

    def missing(self) -> list[str]:
        """Every missing folder, file, source checkout or Python module, one line each.

        Empty when everything the backend will load is in place. Reads only the file system
        (no model code, no torch import).
        """
        problems: list[str] = []
        for flag in WEIGHT_FLAGS:
            value = getattr(self, flag)
            if not value:
                problems.append(f"--{flag} is required by --backend models")
            elif not Path(value).is_dir():
                problems.append(f"--{flag} {value}: folder not found")
        base = _dir(self.base_model_path)
        if base:
            problems += _need_files(base, "--base_model_path", ["scheduler/scheduler_config.json",
                                                                 "text_encoder/config.json",
                                                                 "tokenizer/vocab.json",
                                                                 "tokenizer/merges.txt"])
            problems += _need_weights(base / "text_encoder", "--base_model_path", ("model.safetensors",
                                                                                 "pytorch_model.bin"))
        vae = _dir(self.vae_path)
        if vae:
            problems += _need_files(vae, "--vae_path", ["config.json"])
            problems += _need_weights(vae, "--vae_path", _DIFFUSERS_WEIGHTS)
        der = _dir(self.diffueraser_path)
        if der:
            for sub in ("brushnet", "unet_main"):
                problems += _need_files(der, "--diffueraser_path", [f"{sub}/config.json"])
                problems += _need_weights(der / sub, "--diffueraser_path", _DIFFUSERS_WEIGHTS)
        pp = _dir(self.propainter_model_dir)
        if pp:
            problems += _need_files(pp, "--propainter_model_dir", list(PROPAINTER_FILES))
        pcm = self.pcm_file()
        if _dir(self.pcm_weights_path) and pcm is not None and not pcm.is_file():
            problems.append(f"--pcm_weights_path: {pcm} not found (needed by --pcm_ckpt {self.pcm_ckpt!r})")
        problems += self.source_problems()
        for module, what in PYTHON_MODULES.items():
            if importlib.util.find_spec(module) is None:
                problems.append(f"Python module {module!r} is not installed (pip install {what})")
        return problems

    def source_problems(self) -> list[str]:
        """Problems locating the DiffuEraser code (``--diffueraser_repo`` or ``sys.path``)."""
        if self.diffueraser_repo:
            repo = Path(self.diffueraser_repo)
            if not repo.is_dir():
                return [f"--diffueraser_repo {repo}: folder not found"]
            absent = [f for f in SOURCE_FILES if not (repo / f).is_file()]
            if absent:
                return [f"--diffueraser_repo {repo}: not a DiffuEraser checkout ({repo / absent[0]} not found)"]
            return []
        spec = importlib.util.find_spec("diffueraser")
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not any((Path(loc) / "pipeline_diffueraser.py").is_file() for loc in locations):
            return [
                "the DiffuEraser code was not found: pass --diffueraser_repo (or set "
                "REGDPO_DIFFUERASER_REPO) to a checkout of github.com/lixiaowen-xw/DiffuEraser, "
                "or put it on PYTHONPATH"
            ]
        return []

    def flag_problems(self) -> list[str]:
        """Invalid values of the non-path flags, one line each."""
        problems = []
        if self.pcm_ckpt not in PCM_CHECKPOINTS:
            problems.append(f"--pcm_ckpt {self.pcm_ckpt!r}: choose one of {', '.join(map(repr, PCM_CHECKPOINTS))}")
        if not 4 <= int(self.diffueraser_nframes) <= MAX_NFRAMES:
            problems.append(f"--diffueraser_nframes {self.diffueraser_nframes}: must be between 4 and {MAX_NFRAMES}")
        if self.model_precision not in PRECISIONS:
            problems.append(f"--model_precision {self.model_precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.oom_retry not in OOM_RETRIES:
            problems.append(f"--oom_retry {self.oom_retry!r}: choose one of {', '.join(OOM_RETRIES)}")
        if self.flicker_scheme not in FLICKER_SCHEMES:
            problems.append(f"--flicker_scheme {self.flicker_scheme!r}: choose one of {', '.join(FLICKER_SCHEMES)}")
        if int(self.flicker_segments) < 2:
            problems.append(f"--flicker_segments {self.flicker_segments}: the models backend needs >= 2 segments")
        if not 0.0 < float(self.propainter_resize_ratio) <= 4.0:
            problems.append(f"--propainter_resize_ratio {self.propainter_resize_ratio}: must be in (0, 4]")
        if int(self.propainter_mask_dilation) < 0:
            problems.append(f"--propainter_mask_dilation {self.propainter_mask_dilation}: must be >= 0")
        if int(self.propainter_raft_iter) < 1:
            problems.append(f"--propainter_raft_iter {self.propainter_raft_iter}: must be >= 1")
        if int(self.propainter_subvideo_length) < 2:
            problems.append(f"--propainter_subvideo_length {self.propainter_subvideo_length}: must be >= 2")
        if int(self.propainter_neighbor_length) < 2:
            problems.append(f"--propainter_neighbor_length {self.propainter_neighbor_length}: must be >= 2")
        if int(self.propainter_ref_stride) < 1:
            problems.append(f"--propainter_ref_stride {self.propainter_ref_stride}: must be >= 1")
        device = str(self.device)
        if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
            problems.append(f"--device {device!r}: use cuda, cuda:N, cpu or auto")
        return problems

    def check_resolution(self, resolution: int) -> None:
        """Refuse, before any video, settings that can never work at ``--resolution`` (every clip's short
        side): ProPainter's working size (``--propainter_resize_ratio`` x the short side) below RAFT's minimum
        (``models_propainter.MIN_SIDE``). One-line ``UsageError`` naming both flags and what would work."""
        import math

        from .models_propainter import MIN_SIDE, processing_size

        ratio = float(self.propainter_resize_ratio)
        side = min(processing_size(resolution, resolution, ratio))
        if side >= MIN_SIDE:
            return
        need_ratio = math.ceil(MIN_SIDE / resolution * 100) / 100
        while min(processing_size(resolution, resolution, need_ratio)) < MIN_SIDE:
            need_ratio = round(need_ratio + 0.01, 2)
        need_resolution = 8 * math.ceil(MIN_SIDE / ratio / 8)
        while min(processing_size(need_resolution, need_resolution, ratio)) < MIN_SIDE:
            need_resolution += 8
        raise UsageError(
            f"--propainter_resize_ratio {ratio:g} at --resolution {resolution}: ProPainter would work at {side} px "
            f"on every clip's short side, RAFT needs at least {MIN_SIDE}; use --propainter_resize_ratio "
            f"{need_ratio:g} or more, or --resolution {need_resolution} or more")

    def check(self) -> None:
        """Raise ``UsageError`` listing everything that is missing or invalid."""
        problems = self.flag_problems() + self.missing()
        if problems:
            raise UsageError("cannot use --backend models:\n  " + "\n  ".join(problems))

    # ------------------------------------------------------------------ derived
    @property
    def num_inference_steps(self) -> int:
        return PCM_CHECKPOINTS[self.pcm_ckpt][1]


@dataclass(frozen=True)
class MemoryReduction:
    """The models backend's reduced settings: how it runs a video again after a CUDA out-of-memory error.

    Each knob is one of the backend's flags, multiplied by its factor (integers rounded down), never below
    the flag's minimum: ProPainter's working size (``--propainter_resize_ratio``; x0.75 = about 56 % of the
    pixels), its sub-video length (flows completed per call) and local window (frames per transformer call),
    and DiffuEraser's denoising window (``--diffueraser_nframes``: frames per UNet / BrushNet call, the
    largest activations of a run). A factor of 1.0 leaves its knob alone.
    """

    propainter_resize_ratio: float = 0.75
    propainter_subvideo_length: float = 0.5
    propainter_neighbor_length: float = 0.5
    diffueraser_nframes: float = 0.5

    MINIMUM = {"propainter_subvideo_length": 2, "propainter_neighbor_length": 2, "diffueraser_nframes": 4}

    def __post_init__(self) -> None:
        for knob, factor in asdict(self).items():
            if not 0.0 < float(factor) <= 1.0:
                raise ValueError(f"MemoryReduction.{knob}: a factor in (0, 1], got {factor}")

    def changes(self, config: ModelsConfig) -> dict[str, list[Any]]:
        """``{flag: [normal, reduced]}`` for every knob this reduction changes in ``config``."""
        out: dict[str, list[Any]] = {}
        for knob, factor in asdict(self).items():
            normal = getattr(config, knob)
            if knob in self.MINIMUM:
                reduced: Any = max(self.MINIMUM[knob], min(int(normal), int(int(normal) * float(factor))))
            else:
                reduced = round(float(normal) * float(factor), 4)
            if reduced != normal:
                out[knob] = [normal, reduced]
        return out

    def apply(self, config: ModelsConfig) -> ModelsConfig:
        """``config`` with every knob at its reduced value."""
        return replace(config, **{knob: values[1] for knob, values in self.changes(config).items()})


def oom_reduction(config: ModelsConfig, reduction: MemoryReduction | None = None) -> MemoryReduction | None:
    """The reduction the backend retries an out-of-memory video at: ``reduction`` (default ``MemoryReduction()``),
    or None with ``--oom_retry off``."""
    if config.oom_retry == "off":
        return None
    return MemoryReduction() if reduction is None else reduction


_DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _dir(value: str | None) -> Path | None:
    return Path(value) if value and Path(value).is_dir() else None


def _need_files(root: Path, flag: str, names: list[str]) -> list[str]:
    return [f"{flag}: {root / n} not found" for n in names if not (root / n).is_file()]


def _need_weights(folder: Path, flag: str, names: tuple[str, ...]) -> list[str]:
    if folder.is_dir() and not any((folder / n).is_file() for n in names):
        return [f"{flag}: no weights in {folder} (expected {' or '.join(names)})"]
    return []


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add the models backend's flags to the generator's parser.

    Defaults are ``None`` here so that ``ModelsConfig``'s defaults apply; the help says them.
    ``--device`` is added only if the parser does not define it already.
    """
    d = ModelsConfig()
    parser.add_argument("--base_model_path", help="Stable Diffusion 1.5 folder (diffusers layout: tokenizer/, "
                        "text_encoder/, scheduler/ are read)")
    parser.add_argument("--vae_path", help="sd-vae-ft-mse folder (config.json + diffusion_pytorch_model.*)")
    parser.add_argument("--diffueraser_path", help="DiffuEraser weights folder (brushnet/, unet_main/)")
    parser.add_argument(
        "--propainter_model_dir",
        help="folder with ProPainter.pth, recurrent_flow_completion.pth, raft-things.pth",
    )
    parser.add_argument("--pcm_weights_path",
                        help="PCM_Weights folder; the LoRA is read from its sd15/ sub-folder")
    parser.add_argument(
        "--diffueraser_repo",
        default=os.environ.get("REGDPO_DIFFUERASER_REPO"),
        help="checkout of the DiffuEraser code (packages diffueraser, propainter, libs); "
        "default $REGDPO_DIFFUERASER_REPO, else it must be importable from sys.path",
    )
    parser.add_argument("--pcm_ckpt", choices=list(PCM_CHECKPOINTS),
                        help=f"PCM LoRA: sets DiffuEraser's denoising steps and scheduler (default {d.pcm_ckpt!r})")
    parser.add_argument("--diffueraser_nframes", type=integer(4, MAX_NFRAMES),
                        help=f"frames per DiffuEraser denoising window, 4-{MAX_NFRAMES} "
                        f"(default {d.diffueraser_nframes})")
    parser.add_argument("--model_precision", choices=PRECISIONS,
                        help="model precision: auto = fp16 on CUDA, fp32 on CPU (default auto)")
    parser.add_argument("--flicker_scheme", choices=FLICKER_SCHEMES,
                        help="segments: each flicker segment is its own DiffuEraser run with its own seed; "
                        "full_runs: one full-clip run per segment seed, segment k taken from run k "
                        f"(default {d.flicker_scheme})")
    parser.add_argument("--oom_retry", choices=OOM_RETRIES,
                        help="after a CUDA out-of-memory error, make the video once more at reduced settings "
                        "(ProPainter working size x0.75, its windows and DiffuEraser's halved; recorded in "
                        "meta.json 'reduced'), or off: the video fails (default reduced)")
    parser.add_argument("--diffueraser_use_prompt", action="store_true", default=None,
                        help="condition DiffuEraser on the clip's prompt (default: empty prompt, as DiffuEraser does)")
    parser.add_argument("--propainter_resize_ratio", type=real(0.0, 4.0, lo_open=True),
                        help="ProPainter works at this fraction of the clip size (longer side capped at 960 px); "
                        f"its result is resized back to the clip size (default {d.propainter_resize_ratio})")
    parser.add_argument("--propainter_mask_dilation", type=integer(0, MAX_SIDE),
                        help="pixels ProPainter dilates the stored mask by (default 0: exactly the stored mask)")
    parser.add_argument("--propainter_raft_iter", type=integer(1, 1000),
                        help=f"RAFT refinement iterations (default {d.propainter_raft_iter})")
    parser.add_argument("--propainter_subvideo_length", type=integer(2, MAX_FRAMES),
                        help=f"ProPainter sub-video length (default {d.propainter_subvideo_length})")
    parser.add_argument("--propainter_neighbor_length", type=integer(2, MAX_FRAMES),
                        help=f"ProPainter local window length (default {d.propainter_neighbor_length})")
    parser.add_argument("--propainter_ref_stride", type=integer(1, MAX_FRAMES),
                        help=f"ProPainter reference frame stride (default {d.propainter_ref_stride})")
    try:
        parser.add_argument("--device", help="cuda, cuda:N, cpu or auto (default cuda)")
    except argparse.ArgumentError:
        pass  # the generator defines --device itself
