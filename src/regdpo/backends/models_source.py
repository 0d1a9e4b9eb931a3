"""Import the user's DiffuEraser / ProPainter code (never vendored: its licences differ).

The code comes from a DiffuEraser checkout (packages ``diffueraser``, ``libs``, ``propainter``)
given by ``--diffueraser_repo`` / ``$REGDPO_DIFFUERASER_REPO``, or from ``sys.path``. Only the
model classes are imported: not ``diffueraser.diffueraser`` nor ``propainter.inference``, whose
file-based ``forward()`` the backend replaces with in-memory drivers.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .models_config import SOURCE_FILES

INSTALL_HINT = (
    'pip install "diffusers==0.29.2" "transformers==4.41.1" "peft==0.13.2" einops safetensors scipy, '
    "and the torchvision build that matches your torch"
)


CHECKOUT_PACKAGES = ("diffueraser", "libs", "propainter")
"""The top-level packages of a DiffuEraser checkout (a missing one means: no checkout, not a library)."""


@dataclass(frozen=True)
class DiffuEraserSource:
    """The classes the backend drives, as imported from the user's checkout."""

    repo: str | None
    pipeline_cls: Any  # diffueraser.pipeline_diffueraser.StableDiffusionDiffuEraserPipeline
    brushnet_cls: Any  # libs.brushnet_CA.BrushNetModel
    unet_motion_cls: Any  # libs.unet_motion_model.UNetMotionModel
    motion_adapter_cls: Any  # libs.unet_motion_model.MotionAdapter
    unet2d_cls: Any  # libs.unet_2d_condition.UNet2DConditionModel
    raft_bi_cls: Any  # propainter.model.modules.flow_comp_raft.RAFT_bi
    raft_cls: Any  # propainter.RAFT.RAFT
    flow_complete_cls: Any  # propainter.model.recurrent_flow_completion.RecurrentFlowCompleteNet
    inpainter_cls: Any  # propainter.model.propainter.InpaintGenerator


def import_source(repo: str | None) -> DiffuEraserSource:
    """Import the model classes from ``repo`` (added to ``sys.path``) or from ``sys.path``.

    Raises ``UsageError`` naming the checkout and the failing import, with the pinned
    versions the DiffuEraser code was written for.
    """
    if repo:
        root = Path(repo).resolve()
        missing = [f for f in SOURCE_FILES if not (root / f).is_file()]
        if missing:
            raise UsageError(f"--diffueraser_repo {repo}: not a DiffuEraser checkout ({root / missing[0]} not found)")
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    where = f"--diffueraser_repo {repo}" if repo else "sys.path"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipeline = importlib.import_module("diffueraser.pipeline_diffueraser")
            brushnet = importlib.import_module("libs.brushnet_CA")
            motion = importlib.import_module("libs.unet_motion_model")
            unet2d = importlib.import_module("libs.unet_2d_condition")
            raft_bi = importlib.import_module("propainter.model.modules.flow_comp_raft")
            raft = importlib.import_module("propainter.RAFT")
            flow = importlib.import_module("propainter.model.recurrent_flow_completion")
            inpainter = importlib.import_module("propainter.model.propainter")
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "").split(".")[0]
        if not repo and missing in CHECKOUT_PACKAGES:  # the checkout itself is absent, not a library
            raise UsageError(
                f"the DiffuEraser code was not found (no module {missing!r}): give its checkout with "
                f"--diffueraser_repo PATH (or $REGDPO_DIFFUERASER_REPO), a clone of "
                f"github.com/lixiaowen-xw/DiffuEraser"
            ) from None
        raise UsageError(
            f"cannot import the DiffuEraser code from {where}: {exc}. It was written for "
            f"diffusers 0.29.2, transformers 4.41.1 and peft 0.13.2: {INSTALL_HINT}"
        ) from exc
    return DiffuEraserSource(
        repo=str(repo) if repo else None,
        pipeline_cls=pipeline.StableDiffusionDiffuEraserPipeline,
        brushnet_cls=brushnet.BrushNetModel,
        unet_motion_cls=motion.UNetMotionModel,
        motion_adapter_cls=motion.MotionAdapter,
        unet2d_cls=unet2d.UNet2DConditionModel,
        raft_bi_cls=raft_bi.RAFT_bi,
        raft_cls=raft.RAFT,
        flow_complete_cls=flow.RecurrentFlowCompleteNet,
        inpainter_cls=inpainter.InpaintGenerator,
    )
