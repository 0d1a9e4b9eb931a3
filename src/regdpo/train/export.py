"""``regdpo export CHECKPOINT``: a training ``checkpoint-N`` folder as DiffuEraser weights.

A ``checkpoint-N`` is ``accelerate``'s state (``model.safetensors``, ``model_1.safetensors``,
optimizer, scheduler, RNG states), which DiffuEraser cannot load. ``regdpo export`` loads the
DiffuEraser weights the run started from (``--diffueraser_path``, the same folder as the training
script's), puts the checkpoint's trained modules into them and writes ``OUTPUT/unet_main/`` and
``OUTPUT/brushnet/``: the layout of the training script's final weights, loadable as
``--diffueraser_path`` by DiffuEraser and by ``regdpo generate``. A module the run did not train
(BrushNet under ``--train_modules motion``) is copied byte for byte from ``--diffueraser_path``.

Which model file is which module: ``regdpo_checkpoint.json`` in the checkpoint (written by the
training script: ``{"models": ["unet_main", ...]}`` in ``accelerator.prepare``'s order); a checkpoint
without it follows the script's order (``unet_main`` first, then ``brushnet`` when it was trained).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..errors import FormatError, UsageError
from ..safe_read import read_input_text

CHECKPOINT_INFO = "regdpo_checkpoint.json"
PREPARE_ORDER = ("unet_main", "brushnet")  # the training script's accelerator.prepare order


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint-N folder of train_region_reg_dpo.py")
    parser.add_argument("--diffueraser_path", required=True, help="the DiffuEraser weights the run started from "
                        "(brushnet/, unet_main/): the training script's --diffueraser_path")
    parser.add_argument("--output", required=True, help="folder to write unet_main/ and brushnet/ into")
    parser.add_argument("--diffueraser_repo", default=os.environ.get("REGDPO_DIFFUERASER_REPO"),
                        help="DiffuEraser code checkout (default $REGDPO_DIFFUERASER_REPO)")


def write_checkpoint_info(folder: str | Path, models: list[str], train_modules: str) -> None:
    """Record which ``model*.safetensors`` of an ``accelerate`` checkpoint is which module."""
    from ..safe_io import write_text_atomic

    write_text_atomic(Path(folder) / CHECKPOINT_INFO,
                      json.dumps({"models": list(models), "train_modules": train_modules}, indent=2) + "\n")


def checkpoint_models(checkpoint: Path) -> dict[str, Path]:
    """``{module: model file}`` of an ``accelerate`` checkpoint folder (``model.safetensors`` = the first
    prepared model, ``model_1.safetensors`` the second; ``.bin`` when saved without safetensors)."""
    info = checkpoint / CHECKPOINT_INFO
    if info.is_file():
        try:
            names = json.loads(read_input_text(info, "checkpoint record"))["models"]
            if not (isinstance(names, list) and names and all(n in PREPARE_ORDER for n in names)):
                raise ValueError(f"models must be a non-empty list of {', '.join(PREPARE_ORDER)}")
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(f"{info}: not a regdpo checkpoint record ({exc})") from None
    else:
        names = list(PREPARE_ORDER)
    found = {}
    for i, name in enumerate(names):
        stem = "model" if i == 0 else f"model_{i}"
        for ext in (".safetensors", ".bin"):
            if (checkpoint / (stem + ext)).is_file():
                found[name] = checkpoint / (stem + ext)
                break
        else:
            if info.is_file() or i == 0:
                raise FormatError(f"{checkpoint}: {stem}.safetensors not found (not a complete checkpoint-N folder)")
    return found


def load_state(path: Path) -> dict[str, Any]:
    """A model file of a checkpoint as a state dict, without the ``module.`` prefix of a DDP wrapper."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def export_checkpoint(checkpoint: str | Path, diffueraser_path: str | Path, output: str | Path,
                      source: Any) -> dict[str, str]:
    """Write DiffuEraser weights of ``checkpoint`` under ``output``; returns the written folders."""
    import warnings

    from .weights import MODULE_FOLDERS, save_diffueraser_weights

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise UsageError(f"{checkpoint}: checkpoint folder not found")
    for key in MODULE_FOLDERS:
        if not (Path(diffueraser_path) / key / "config.json").is_file():
            raise UsageError(f"--diffueraser_path: {Path(diffueraser_path) / key / 'config.json'} not found")
    files = checkpoint_models(checkpoint)
    classes = {"unet_main": source.unet_motion_cls, "brushnet": source.brushnet_cls}
    modules = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, path in files.items():
            module = classes[key].from_pretrained(str(diffueraser_path), subfolder=key, local_files_only=True)
            try:
                module.load_state_dict(load_state(path), strict=True)
            except RuntimeError as exc:
                raise FormatError(f"{path}: does not fit {key} of {diffueraser_path} "
                                f"({' '.join(str(exc).split())[:300]})") from None
            modules[key] = module
    untouched = tuple(k for k in MODULE_FOLDERS if k not in modules)
    Path(output).mkdir(parents=True, exist_ok=True)
    return save_diffueraser_weights(output, modules.get("unet_main"), modules.get("brushnet"),
                                     source_path=diffueraser_path, untouched=untouched)


def run(args: argparse.Namespace) -> int:
    from ..backends.models_source import import_source

    out = Path(args.output)
    if out.resolve() == Path(args.diffueraser_path).resolve():
        raise UsageError(f"--output {out}: the same folder as --diffueraser_path (it would overwrite the source)")
    saved = export_checkpoint(args.checkpoint, args.diffueraser_path, out, import_source(args.diffueraser_repo))
    print(f"wrote {saved['unet_main']} and {saved['brushnet']}")
    return 0
