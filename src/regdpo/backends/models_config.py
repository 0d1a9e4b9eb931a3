"""Settings of the ``models`` backend (ProPainter + DiffuEraser) and their checks.

Kept apart from the backend itself so that the command line can validate weight paths
before any video starts without importing torch-heavy model code.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError

WEIGHT_FLAGS = ("base_model_path", "vae_path", "diffueraser_path", "propainter_model_dir", "pcm_weights_path")
"""Flags that name weight folders; giving any of them selects ``--backend models`` by default."""


@dataclass
class ModelsConfig:
    """Everything the models backend needs; built from the generator's flags."""

    base_model_path: str | None = None
    vae_path: str | None = None
    diffueraser_path: str | None = None
    propainter_model_dir: str | None = None
    pcm_weights_path: str | None = None
    diffueraser_repo: str | None = None
    device: str = "cuda"
    flicker_segments: int = 3

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ModelsConfig":
        known = cls.__dataclass_fields__
        return cls(**{k: getattr(args, k) for k in known if getattr(args, k, None) is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def any_weight_path_given(self) -> bool:
        return any(getattr(self, f) for f in WEIGHT_FLAGS)

    def missing(self) -> list[str]:
        """Every problem with the weight paths, one line each (empty when all is in place)."""
        problems = []
        for flag in WEIGHT_FLAGS:
            value = getattr(self, flag)
            if not value:
                problems.append(f"--{flag} is required by --backend models")
            elif not Path(value).is_dir():
                problems.append(f"--{flag} {value}: folder not found")
        return problems

    def check(self) -> None:
        """Raise ``UsageError`` listing everything that is missing."""
        problems = self.missing()
        if problems:
            raise UsageError("cannot use --backend models:\n  " + "\n  ".join(problems))


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add the models backend's flags to the generator's parser."""
    parser.add_argument("--base_model_path", help="Stable Diffusion 1.5 folder (diffusers layout)")
    parser.add_argument("--vae_path", help="sd-vae-ft-mse folder")
    parser.add_argument("--diffueraser_path", help="DiffuEraser weights folder (brushnet/, unet_main/)")
    parser.add_argument(
        "--propainter_model_dir",
        help="folder with ProPainter.pth, recurrent_flow_completion.pth, raft-things.pth",
    )
    parser.add_argument("--pcm_weights_path", help="folder with the PCM LoRA weights (PCM_Weights)")
    parser.add_argument(
        "--diffueraser_repo",
        default=os.environ.get("REGDPO_DIFFUERASER_REPO"),
        help="checkout of the DiffuEraser code (packages diffueraser, propainter, libs); "
        "default $REGDPO_DIFFUERASER_REPO, else it must be importable from sys.path",
    )
