"""Load DiffuEraser's modules for training, and save trained weights in DiffuEraser's layout.

Folders are those of the models backend (docs/models.md): ``--base_model_name_or_path`` an SD 1.5
folder (``tokenizer/``, ``text_encoder/``, ``scheduler/``), ``--vae_path`` an sd-vae-ft-mse
folder, ``--diffueraser_path`` the finished DiffuEraser weights (``brushnet/``, ``unet_main/``).
Everything loads with ``local_files_only`` (nothing is downloaded). The classes come from the
user's DiffuEraser checkout (``regdpo.backends.models_source``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..safe_read import read_input_text


@dataclass
class DiffuEraserModules:
    tokenizer: Any
    text_encoder: Any
    vae: Any
    brushnet: Any
    unet_main: Any
    noise_scheduler: Any


def weight_problems(base_model_path: str | None, vae_path: str | None, diffueraser_path: str | None,
                    base_flag: str = "--base_model_name_or_path") -> list[str]:
    """Missing folders and files, one line each (file system only)."""
    problems = []
    need = {
        base_flag: (base_model_path, ["scheduler/scheduler_config.json", "text_encoder/config.json",
                                      "tokenizer/vocab.json"]),
        "--vae_path": (vae_path, ["config.json"]),
        "--diffueraser_path": (diffueraser_path, ["brushnet/config.json", "unet_main/config.json"]),
    }
    for flag, (path, files) in need.items():
        if not path:
            problems.append(f"{flag} is required")
        elif not Path(path).is_dir():
            problems.append(f"{flag} {path}: folder not found")
        else:
            problems += [f"{flag}: {Path(path) / f} not found" for f in files if not (Path(path) / f).is_file()]
    return problems


def load_modules(source: Any, *, base_model_path: str, vae_path: str, diffueraser_path: str) -> DiffuEraserModules:
    """The tokenizer, text encoder, VAE, BrushNet, motion UNet and DDPM noise scheduler (fp32, CPU)."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import AutoTokenizer, CLIPTextModel

    problems = weight_problems(base_model_path, vae_path, diffueraser_path)
    if problems:
        raise UsageError("; ".join(problems))
    te_config = json.loads(read_input_text(Path(base_model_path) / "text_encoder" / "config.json", "config file"))
    arch = (te_config.get("architectures") or ["?"])[0]
    if arch != "CLIPTextModel":
        raise UsageError(f"--base_model_name_or_path {base_model_path}: text encoder {arch} is not supported "
                         "(DiffuEraser uses Stable Diffusion 1.5's CLIPTextModel)")
    local = {"local_files_only": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(base_model_path, subfolder="tokenizer", use_fast=False, **local)
        text_encoder = CLIPTextModel.from_pretrained(base_model_path, subfolder="text_encoder", **local)
        vae = AutoencoderKL.from_pretrained(vae_path, **local)
        brushnet = source.brushnet_cls.from_pretrained(diffueraser_path, subfolder="brushnet", **local)
        unet_main = source.unet_motion_cls.from_pretrained(diffueraser_path, subfolder="unet_main", **local)
        noise_scheduler = DDPMScheduler.from_pretrained(base_model_path, subfolder="scheduler", **local)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    return DiffuEraserModules(tokenizer, text_encoder, vae, brushnet, unet_main, noise_scheduler)


MODULE_FOLDERS = ("unet_main", "brushnet")
"""The folders of DiffuEraser's weights that training writes (``--diffueraser_path`` holds both)."""


def save_diffueraser_weights(output_dir: str | Path, unet_main: Any, brushnet: Any, *,
                             source_path: str | Path | None = None, untouched: tuple[str, ...] = ()) -> dict[str, str]:
    """Write ``output_dir/unet_main/`` and ``output_dir/brushnet/``: DiffuEraser's weight layout,
    loadable as ``--diffueraser_path``.

    A trained module is written with diffusers' ``save_pretrained`` (fp32 safetensors: the policy's
    weights stay fp32 whatever ``--mixed_precision``; its frozen parameters are the loaded values).
    A module named in ``untouched`` (nothing of it trained, e.g. BrushNet under ``--train_modules
    motion``) is not re-serialised from memory, where mixed precision may have cast it: the files of
    ``source_path/<module>`` are copied byte for byte, so it is exactly what was loaded.
    """
    out = Path(output_dir)
    paths = {key: out / key for key in MODULE_FOLDERS}
    modules = {"unet_main": unet_main, "brushnet": brushnet}
    for key in MODULE_FOLDERS:
        if key in untouched:
            if source_path is None:
                raise ValueError(f"{key} is untouched: its source folder is needed to copy it")
            copy_folder_files(Path(source_path) / key, paths[key])
        else:
            modules[key].save_pretrained(str(paths[key]), safe_serialization=True)
    return {k: str(v) for k, v in paths.items()}


def copy_folder_files(src: Path, dst: Path) -> list[Path]:
    """Copy every regular file of folder ``src`` (not its subfolders) into ``dst``, byte for byte, each
    through a temporary name and a rename (``safe_io.replacing``); returns the written paths."""
    import shutil

    from ..safe_io import replacing

    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for f in sorted(src.iterdir()):
        if f.is_file():
            with replacing(dst / f.name) as tmp:
                shutil.copyfile(f, tmp)
            written.append(dst / f.name)
    return written
