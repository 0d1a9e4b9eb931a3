"""``regdpo eval EVALSET --model NAME=SPEC ... --output_dir DIR``: models side by side, paired statistics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from ..backends import models_config
from ..cli_types import integer
from ..errors import UsageError
from ..progress import plural
from ..safe_io import check_writable, real_dir
from . import learned_hooks

DESCRIPTION = """\
Run every --model on every clip of one split of an eval set (`regdpo evalset`), measure each output against
the GT (whole-frame and hole-only PSNR / SSIM, hole L1, boundary PSNR, temporal deviation in the hole) and
compare every model with the first: per-clip deltas, wins / ties / losses, the mean delta with a paired
bootstrap 95 % interval, and a verdict per metric. Writes DIR/eval.json and DIR/eval.html; resumable
(rerun the same command). See docs/evaluation.md.
"""

EPILOG = """\
--backend models: SPEC is a DiffuEraser weights folder (brushnet/, unet_main/): a release, or the
--output_dir of train_region_reg_dpo.py; each runs DiffuEraser's standard inference with the ProPainter
prior and the shared weight flags below. Each clip's prior is computed once for all the models and kept in
DIR/priors/ for resumes (--no_prior_cache: once per model; the same results). --backend classical (no
GPU): SPEC is a classical fill: inpaint, blur, hallucination, flicker (or e.g. blur_s0.50). auto
(default): models when a weight flag is given, else classical.
"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("evalset", type=Path, metavar="EVALSET", help="an eval set folder (regdpo evalset)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=SPEC",
                        help="a model to evaluate; the first is the baseline the others are compared with")
    parser.add_argument("--output_dir", type=Path, required=True, help="where eval.json, eval.html, the per-clip "
                        "results (units/), the ProPainter priors (priors/) and with --save_frames the frames go")
    parser.add_argument("--split", default="test", help="the split to evaluate (default: %(default)s)")
    parser.add_argument("--backend", choices=("auto", "classical", "models"), default="auto",
                        help="what runs the models (default: auto)")
    parser.add_argument("--seed", type=integer(0, 2**31 - 1), default=0,
                        help="inference seed; every model gets the same seed per clip (default 0)")
    parser.add_argument("--save_frames", action="store_true", help="also write each model's composited output as "
                        "lossless PNG under DIR/frames/{model}/{clip}/")
    parser.add_argument("--no_progress", action="store_true", help="no progress display")
    parser.add_argument("--no_html", action="store_true", help="write eval.json only")
    parser.add_argument("--no_prior_cache", action="store_true", help="--backend models: run ProPainter per model "
                        "per clip instead of once per clip into DIR/priors/ (the same results; slower)")
    weights = parser.add_argument_group("--backend models: the weights every model shares")
    models_config.add_arguments(weights)
    learned_hooks.add_arguments(parser)


def resolve_backend(args: argparse.Namespace) -> str:
    if args.backend != "auto":
        return args.backend
    return "models" if models_config.ModelsConfig.from_args(args).any_weight_path_given() else "classical"


def run(args: argparse.Namespace, clip_metrics: Sequence[Any] | None = None, set_metrics: Sequence[Any] = ()) -> int:
    """The command. ``clip_metrics`` / ``set_metrics``: metric providers (``regdpo.evaluation.metrics``),
    default the pixel metrics and the learned ones (LPIPS, E_warp, VFID; not measured without weights)."""
    from .evalset import load_evalset, verify_evalset
    from .models import build_models, parse_model_flags
    from .report import print_table, write_outputs
    from .metrics import PixelMetrics
    from .runner import EvalRunner

    parse_model_flags(args.model)  # a malformed --model before anything is read
    if getattr(args, "diffueraser_path", None):
        raise UsageError("--diffueraser_path: give each model's weights as --model NAME=DIR instead")
    args.backend = resolve_backend(args)
    evalset = load_evalset(args.evalset)
    clips = evalset.split(args.split)
    verify_evalset(evalset)
    models = build_models(args)
    if clip_metrics is None:
        from ..backends.models import resolve_device

        device = getattr(args, "device", None) or ("auto" if args.backend == "models" else "cpu")
        loaded = learned_hooks.learned_from_args(args, str(resolve_device(device)))
        learned, vfid = learned_hooks.providers(loaded)
        clip_metrics, set_metrics = [PixelMetrics(), learned], [vfid, *set_metrics]
        not_measured = {name: reason for name, reason in loaded.status().items() if reason}
    else:
        not_measured = {}
    out = Path(args.output_dir)
    if out.resolve().is_relative_to(evalset.root.resolve()):
        raise UsageError(f"--output_dir {out}: inside the eval set {evalset.root}, which stays frozen")
    check_writable(out, "--output_dir")
    real_dir(out)
    clip_metrics = list(clip_metrics)
    priors = None
    if args.backend == "models" and not getattr(args, "no_prior_cache", False):  # ProPainter once per clip
        from .models import models_config_for
        from .priors import eval_prior_cache

        priors = eval_prior_cache(models_config_for(args, models[0].spec), out)
        models = build_models(args, priors)

    def log(line: str) -> None:
        print(f"regdpo eval: {line}", file=sys.stderr, flush=True)

    log(f"{plural(len(models), 'model')} x {plural(len(clips), 'clip')} of split {args.split} "
        f"({args.backend} backend) -> {out}")
    for reason in dict.fromkeys(not_measured.values()):
        log(f"{', '.join(n for n, r in not_measured.items() if r == reason)} not measured: {reason}")
    runner = EvalRunner(evalset, clips, models, out, seed=args.seed, save_frames=args.save_frames,
                        clip_metrics=clip_metrics, set_metrics=set_metrics, progress=not args.no_progress, log=log)
    try:
        results = runner.run()
    finally:
        if priors is not None:
            log(priors.summary())
            priors.release()
    specs = [s for p in [*clip_metrics, *set_metrics] for s in p.specs]
    doc = write_outputs(out, evalset, args.split, clips, models, results, specs, set_metrics,
                        backend=args.backend, seed=args.seed, html=not args.no_html)
    print_table(doc, sys.stdout)
    if doc["failed"]:
        log(f"{plural(len(doc['failed']), 'clip result')} failed (listed in eval.json 'failed'); rerun the same "
            f"command to retry them")
        return 1
    return 0
