"""Shared by the contract tests that run the real DiffuEraser / ProPainter classes with tiny random weights
(``regdpo.backends.models_tiny``) on CPU: where the DiffuEraser checkout is, why such a test cannot run here,
a module's setup on the session's tiny weights, and the command line of a tiny training run.

Conventions: ``DE_REPO`` is ``$REGDPO_DIFFUERASER_REPO`` (``None`` when unset or empty: the code is then looked
for on ``sys.path``). The tiny weights are built once a session by the ``tiny_weights`` fixture
(tests/conftest.py) and are read-only for every test: runs write under their own folders. ``paths`` is
``models_tiny``'s dict of ``ModelsConfig`` path fields (``base_model_path``, ``vae_path``, ``diffueraser_path``,
``propainter_model_dir``, ``pcm_weights_path``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import REPO, tree_files, write_pair_dataset

DE_REPO = os.environ.get("REGDPO_DIFFUERASER_REPO") or None
"""The DiffuEraser checkout the contract tests import (``$REGDPO_DIFFUERASER_REPO``), ``None`` for ``sys.path``."""

TRAIN_SCRIPT = REPO / "train_region_reg_dpo.py"


def diffueraser_skip_reason(repo: str | None, extra_modules: tuple[str, ...] = ()) -> str | None:
    """Why the contract tests against the real DiffuEraser code cannot run here, or ``None``.

    ``repo``: the checkout (``$REGDPO_DIFFUERASER_REPO``) or ``None`` for ``sys.path``; also needs
    the ``[models]`` extra, a torchvision that works beside torch, and ``extra_modules``.
    """
    from regdpo.backends.models_config import ModelsConfig

    if repo is None and ModelsConfig(diffueraser_repo=None).source_problems():
        return "no DiffuEraser checkout: set REGDPO_DIFFUERASER_REPO (or put the code on PYTHONPATH)"
    if repo is not None and ModelsConfig(diffueraser_repo=repo).source_problems():
        return ModelsConfig(diffueraser_repo=repo).source_problems()[0]
    wanted = ("diffusers", "transformers", "peft", "einops", "scipy", "safetensors", "torchvision", *extra_modules)
    absent = [m for m in wanted if importlib.util.find_spec(m) is None]
    if absent:
        return f"the models backend needs {', '.join(absent)} (pip install -e .[models] and torchvision)"
    try:
        importlib.import_module("torchvision.ops")  # ProPainter's deform_conv2d
    except Exception as exc:  # a torchvision that does not match torch fails here
        return f"torchvision does not work beside this torch ({exc})"
    return None


def needs_diffueraser(*extra_modules: str):
    """A ``skipif`` mark: skip, with ``diffueraser_skip_reason``'s one line, where ``DE_REPO``, the ``[models]``
    extra, a working torchvision or one of ``extra_modules`` is missing."""
    reason = diffueraser_skip_reason(DE_REPO, extra_modules)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def training_marks(*extra_modules: str) -> list:
    """The ``pytestmark`` of a module whose every test trains or loads the tiny models for training: needs
    ``accelerate`` (and ``extra_modules``) besides the models backend; diffusers' Future/UserWarnings ignored."""
    return [needs_diffueraser("accelerate", *extra_modules),
            pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")]


def build_tiny(root: Path) -> SimpleNamespace:
    """Tiny random weights (``models_tiny``, seed 0) of the real classes under ``root``: ``source`` (the imported
    DiffuEraser code), ``paths`` (the path fields) and ``digest`` (``tree_digest``, to check nothing wrote
    into them)."""
    from regdpo.backends.models_source import import_source
    from regdpo.backends.models_tiny import build_tiny_weights

    source = import_source(DE_REPO)
    paths = build_tiny_weights(root, source)
    return SimpleNamespace(source=source, paths=paths, digest=tree_digest(root))


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative POSIX path and bytes under ``root``, in sorted order."""
    h = hashlib.sha256()
    for rel in tree_files(root):
        h.update(rel.encode() + b"\0" + (Path(root) / rel).read_bytes() + b"\0")
    return h.hexdigest()


def tiny_case(tiny_weights: SimpleNamespace, tmp_path_factory, name: str, **dataset) -> SimpleNamespace:
    """A module's setup on the session's tiny weights: ``root`` (a fresh folder ``name``), ``source``,
    ``paths``, and ``data``, a pair dataset ``root/dpo_data`` written by ``write_pair_dataset(**dataset)``."""
    root = tmp_path_factory.mktemp(name)
    data = write_pair_dataset(root / "dpo_data", **dataset)
    return SimpleNamespace(root=root, source=tiny_weights.source, paths=tiny_weights.paths, data=data)


def textured_evalset(root: Path, frames: int, size: int) -> Path:
    """``root/evalset``: an eval set of 2 synthetic textured videos (``root/videos``), split ``test:2``,
    ``frames`` x ``size`` x ``size`` clips, made through ``regdpo evalset``."""
    from regdpo.audit.synthetic import textured_clip
    from regdpo.cli import main
    from regdpo.frames import write_rgb

    videos = root / "videos"
    for k in range(2):
        (videos / f"v{k}").mkdir(parents=True)
        for i, frame in enumerate(textured_clip(frames + 2, size, size + 16, seed=k + 5)):
            write_rgb(videos / f"v{k}" / f"{i:05d}.png", frame)
    out = root / "evalset"
    assert main(["evalset", str(out), "--video_root", str(videos), "--split", "test:2", "--nframes", str(frames),
                 "--height", str(size), "--width", str(size), "--no_progress"]) == 0
    return out


def subprocess_env() -> dict[str, str]:
    """The environment of a script a test runs: this checkout's ``src`` as ``PYTHONPATH``, and ``DE_REPO`` as
    ``REGDPO_DIFFUERASER_REPO`` when set."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    if DE_REPO:
        env["REGDPO_DIFFUERASER_REPO"] = DE_REPO
    return env


def train_command(paths: dict, *flags) -> list[str]:
    """The command line of train_region_reg_dpo.py from the weights ``paths``, then ``flags`` (data, output,
    sizes, ...; each turned into a string)."""
    return [sys.executable, str(TRAIN_SCRIPT), "--base_model_name_or_path", paths["base_model_path"],
            "--vae_path", paths["vae_path"], "--diffueraser_path", paths["diffueraser_path"], *map(str, flags)]


def run_flags(nframes: int = 4, size: int = 64, batch: int = 2, lr: str | None = "1e-3", seed: int = 7) -> list[str]:
    """The size flags of a tiny training run: ``batch`` pairs of ``nframes`` frames at ``size`` px a step,
    learning rate ``lr`` (``None``: the script's default), seed ``seed``; the defaults are most runs'."""
    flags = ["--nframes", str(nframes), "--resolution", str(size), "--train_batch_size", str(batch)]
    if lr is not None:
        flags += ["--learning_rate", lr]
    return [*flags, "--seed", str(seed)]


def run_train(paths: dict, *flags, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``train_command(paths, *flags)`` in ``subprocess_env()``; its output captured as text."""
    return subprocess.run(train_command(paths, *flags), capture_output=True, text=True, env=subprocess_env(),
                          timeout=timeout)


def load_tiny_modules(tiny: SimpleNamespace):
    """``regdpo.train.weights.load_modules`` of ``tiny``'s weights: fresh modules, free to train."""
    from regdpo.train.weights import load_modules

    p = tiny.paths
    return load_modules(tiny.source, base_model_path=p["base_model_path"], vae_path=p["vae_path"],
                        diffueraser_path=p["diffueraser_path"])


def make_batch(tiny: SimpleNamespace, modules, nframes: int, size: int) -> dict:
    """The collated training batch of ``tiny.data``'s first two pairs (dataset seed 0) at ``nframes`` x ``size``
    px, tokenized by ``modules.tokenizer``."""
    from regdpo.dataset import DPODataset, collate_fn

    ds = DPODataset(SimpleNamespace(dpo_data_root=str(tiny.data), nframes=nframes, resolution=size, dataset_seed=0),
                    modules.tokenizer)
    return collate_fn([ds[0], ds[1]])


def make_step(modules, **config):
    """A ``DiffuEraserDPOStep`` over ``modules`` with ``DPOStepConfig(**config)``."""
    from regdpo.train.config import DPOStepConfig
    from regdpo.train.step import DiffuEraserDPOStep

    return DiffuEraserDPOStep(vae=modules.vae, text_encoder=modules.text_encoder, brushnet=modules.brushnet,
                              unet_main=modules.unet_main, noise_scheduler=modules.noise_scheduler,
                              config=DPOStepConfig(**config))
