"""``regdpo score ROOT``: the reference model's margin per pair, written to ``ROOT/score.json``.

``score.json`` (SCHEMA 5, read by ``regdpo select``)::

    {"version": 1,
     "items": [{"video", "stream", "neg_type", "strength", "ref_margin"}, ...],
     "settings": {...how the margins were measured...}}

Items are keyed by ``(video, stream)``, in the dataset's order. ``ref_margin`` is defined in
``regdpo.train.score``. A pair whose frames cannot be read is reported on stderr (and under a
top-level ``failures`` list) and the run goes on; exit status 1 then, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..cli_types import MAX_FRAMES, MAX_SIDE, integer, real
from ..errors import FormatError, FrameReadError, UsageError
from .config import LATENT_SAMPLING, DPOStepConfig

SCORE_FILE = "score.json"
SCORE_VERSION = 1
MAX_WEIGHT = 1e6  # region weights (as train_region_reg_dpo.py)
MAX_DRAWS = 1000  # timesteps (of DiffuEraser's 1000) and noise draws averaged per pair


def configure_parser(parser: argparse.ArgumentParser) -> None:
    d = DPOStepConfig()
    parser.add_argument("root", help="dataset folder (dpo_data)")
    parser.add_argument("--base_model_name_or_path", "--base_model_path", dest="base_model_name_or_path",
                        required=True, help="Stable Diffusion 1.5 folder")
    parser.add_argument("--vae_path", required=True, help="sd-vae-ft-mse folder")
    parser.add_argument("--diffueraser_path", required=True, help="the reference DiffuEraser weights (brushnet/, "
                        "unet_main/), as given to train_region_reg_dpo.py")
    parser.add_argument("--diffueraser_repo", default=os.environ.get("REGDPO_DIFFUERASER_REPO"),
                        help="DiffuEraser code checkout (default $REGDPO_DIFFUERASER_REPO)")
    parser.add_argument("--manifest", default=None, help="manifest to score (default ROOT/manifest.json)")
    parser.add_argument("--neg_types", default=None, help="comma-separated negative types (default all)")
    parser.add_argument("--output", default=None, help=f"where to write (default ROOT/{SCORE_FILE})")
    parser.add_argument("--nframes", type=integer(1, MAX_FRAMES), default=10, help="frames per scored window (default 10)")
    parser.add_argument("--resolution", type=integer(8, MAX_SIDE), default=512, help="crop side, a multiple of 8 (default 512)")
    parser.add_argument("--num_timesteps", type=integer(1, MAX_DRAWS), default=4, help="fixed timesteps averaged (default 4)")
    parser.add_argument("--num_noises", type=integer(1, MAX_DRAWS), default=2, help="noise draws averaged (default 2)")
    parser.add_argument("--seed", type=integer(), default=0, help="seed of the noises and the windows (default 0)")
    parser.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (default)")
    parser.add_argument("--precision", choices=("auto", "fp16", "fp32"), default="auto",
                        help="model precision: auto = fp16 on CUDA, fp32 on CPU (the MSEs are fp32 always)")
    parser.add_argument("--w_hole", type=real(0, MAX_WEIGHT), default=d.w_hole)
    parser.add_argument("--w_boundary", type=real(0, MAX_WEIGHT), default=d.w_boundary)
    parser.add_argument("--w_context", type=real(0, MAX_WEIGHT), default=d.w_context)
    parser.add_argument("--boundary_dilation", type=integer(1, MAX_SIDE), default=7)
    parser.add_argument("--latent_sampling", choices=LATENT_SAMPLING, default=d.latent_sampling)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check(args: argparse.Namespace) -> DPOStepConfig:
    from .weights import weight_problems

    config = DPOStepConfig(w_hole=args.w_hole, w_boundary=args.w_boundary, w_context=args.w_context,
                           latent_sampling=args.latent_sampling)
    problems = config.problems() + weight_problems(args.base_model_name_or_path, args.vae_path, args.diffueraser_path)
    if not Path(args.root).is_dir():
        problems.append(f"{args.root}: dataset folder not found")
    for name in ("nframes", "num_timesteps", "num_noises"):
        if getattr(args, name) < 1:
            problems.append(f"--{name} {getattr(args, name)}: must be >= 1")
    if args.resolution < 8 or args.resolution % 8:
        problems.append(f"--resolution {args.resolution}: must be a multiple of 8")
    if args.boundary_dilation % 2 == 0:
        problems.append(f"--boundary_dilation {args.boundary_dilation}: must be odd (a centred square kernel)")
    if problems:
        raise UsageError("; ".join(problems))
    return config


def _pair_keyed(dataset_cls: Any) -> Any:
    """``dataset_cls`` whose item windows depend on ``(seed, video, stream)``, not on the item's
    index: a pair's margin is then the same whatever subset (``--manifest``, ``--neg_types``) is scored."""
    import numpy as np

    from ..seeding import derive_seed

    class PairKeyed(dataset_cls):
        def _rng(self, index: int) -> np.random.Generator:
            pair = self.pairs[index]
            stream = getattr(pair, "stream", pair.neg_type)
            return np.random.default_rng(derive_seed(self.seed, "score", pair.video, stream))

    return PairKeyed


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomically, never through a link planted in the dataset (``safe_io``: exclusive temporary + rename)."""
    from ..safe_io import write_text_atomic

    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    from ..safe_io import check_writable

    config = _check(args)
    out = Path(args.output) if args.output else Path(args.root) / SCORE_FILE
    check_writable(out.parent, "--output" if args.output else "dataset root")  # before the models load
    import torch
    from ..backends.models import resolve_device, resolve_dtype
    from ..backends.models_source import import_source
    from ..dataset import DPODataset, collate_fn
    from .score import noise_seeds, pair_margin, score_timesteps, stream_of
    from .step import DiffuEraserDPOStep
    from .weights import load_modules

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.precision, device)
    m = load_modules(import_source(args.diffueraser_repo), base_model_path=args.base_model_name_or_path,
                     vae_path=args.vae_path, diffueraser_path=args.diffueraser_path)
    for module in (m.vae, m.text_encoder, m.brushnet, m.unet_main):
        module.to(device, dtype=dtype).eval()
    step = DiffuEraserDPOStep(vae=m.vae, text_encoder=m.text_encoder, brushnet=m.brushnet, unet_main=m.unet_main,
                              noise_scheduler=m.noise_scheduler, config=config, weight_dtype=dtype)
    data_args = argparse.Namespace(dpo_data_root=args.root, manifest=args.manifest, nframes=args.nframes,
                                   resolution=args.resolution, boundary_dilation=args.boundary_dilation,
                                   neg_types=args.neg_types, center_crop=True, dataset_seed=args.seed)
    dataset = _pair_keyed(DPODataset)(data_args, m.tokenizer)
    timesteps = score_timesteps(args.num_timesteps, step.num_train_timesteps)
    seeds = noise_seeds(args.seed, args.num_noises)
    items, failures = [], []
    from ..progress import Progress

    for index in Progress(len(dataset), "score", "pair", enabled=not args.no_progress).wrap(range(len(dataset))):
        pair = dataset.pairs[index]
        try:
            item = dataset[index]
            margin = pair_margin(step, collate_fn([item]), timesteps, seeds)[0]
        except (FrameReadError, FormatError) as exc:
            stream = getattr(pair, "stream", pair.neg_type)
            failures.append({"video": pair.video, "stream": stream, "neg_type": pair.neg_type, "error": str(exc)})
            print(f"regdpo score: {pair.video} / {stream}: {exc}", file=sys.stderr)
            continue
        stream, strength = stream_of(item)
        items.append({"video": item["video"], "stream": stream, "neg_type": item["neg_type"], "strength": strength,
                      "ref_margin": margin})
    settings = {
        "base_model_name_or_path": str(args.base_model_name_or_path), "vae_path": str(args.vae_path),
        "diffueraser_path": str(args.diffueraser_path), "manifest": args.manifest, "neg_types": args.neg_types,
        "nframes": args.nframes, "resolution": args.resolution, "timesteps": timesteps, "num_noises": args.num_noises,
        "seed": args.seed, "precision": str(dtype).replace("torch.", ""), "w_hole": config.w_hole,
        "w_boundary": config.w_boundary, "w_context": config.w_context, "boundary_dilation": args.boundary_dilation,
        "latent_sampling": config.latent_sampling, "crop": "center",
        "ref_margin": "mean over timesteps and noises of the reference's region-weighted MSE, loser minus winner",
    }
    payload: dict[str, Any] = {"version": SCORE_VERSION, "items": items, "settings": settings}
    if failures:
        payload["failures"] = failures
    _write_json(out, payload)
    print(f"regdpo score: {len(items)} pair(s) scored, {len(failures)} failed -> {out}", file=sys.stderr)
    return 1 if failures else 0
