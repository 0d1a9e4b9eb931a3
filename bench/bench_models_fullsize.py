"""DiffuEraser + ProPainter at their real sizes: seconds and peak GPU memory per video and per stage.

The models are built with the real DiffuEraser / ProPainter classes from the user's checkout and
random weights, nothing downloaded (``regdpo.backends.models_tiny``: ``FULL`` = Stable Diffusion
1.5's UNet config turned into BrushNet with ``BrushNetModel.from_unet`` and into the motion UNet with
``UNetMotionModel.from_unet2d`` and the AnimateDiff v1-5-2 motion adapter config, sd-vae-ft-mse, SD
1.5's CLIP text encoder, a rank-64 LoRA standing for PCM; ProPainter's RAFT, recurrent flow
completion and InpaintGenerator, which have one size). They are written in the user's folder layout
(fp16 on disk for an fp16 run) and loaded by the ``models`` backend exactly as ``regdpo generate
--backend models`` loads real weights, so the figures are those of the generator's code path.

Per video (one synthetic clip, default 22 frames of 512 x 920, fp16 on CUDA):

- ``standard``: DiffuEraser's own inference (ProPainter prior + one DiffuEraser run: the ``inpaint``
  negative; the ``blur`` negative is the same prior) -- what DiffuEraser's README times;
- ``generator_default``: the generator's default negatives (hallucination, blur, flicker in 3 segments);
- per stage of the standard video: ProPainter's RAFT flows, flow completion, image propagation,
  generator (feature propagation + transformer); DiffuEraser's text encoder, VAE encode, denoising
  (BrushNet + motion UNet), VAE decode; seconds, calls and peak GPU memory
  (``torch.cuda.max_memory_allocated``, reset at the start of every stage).

Times: ``torch.cuda.synchronize()`` before and after every timed call; median of ``--repeats`` runs
after one warm-up run. Whole-video runs are timed without the per-stage hooks (whose extra syncs would
slow them); the stage figures come from separate runs with the hooks. Parameter counts per network
are printed beside the published ones. Ratios (shares, per-frame seconds) are measured in one run.

On a machine without CUDA it runs ``--size tiny`` (tiny sizes, a small clip, CPU) as a smoke test:
those figures say nothing about GPU speed. ``--params-only`` builds the models in memory, prints
the parameter counts and stops (the CPU check that ``--size full`` builds the published sizes).

    REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser python bench/bench_models_fullsize.py \\
        --size full --device cuda --json bench_models_fullsize.json
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import MachineLoad  # noqa: E402

from regdpo.backends.base import Clip  # noqa: E402
from regdpo.backends.models_config import ModelsConfig  # noqa: E402
from regdpo.errors import UsageError  # noqa: E402

CLIP_DEFAULTS = {"full": (22, 512, 920), "tiny": (4, 128, 128)}
"""(frames, height, width) per ``--size``: the issue's clip at full size, a CPU-sized one for tiny."""

BACKEND_SETTINGS: dict[str, dict[str, Any]] = {
    "full": {},  # ModelsConfig's defaults: 2-Step PCM, window 22, ProPainter ratio 0.6, RAFT 20 iterations
    "tiny": {"diffueraser_nframes": 4, "propainter_resize_ratio": 1.0, "propainter_raft_iter": 1,
             "flicker_segments": 2},
}

VIDEOS = {"standard": ("inpaint",), "generator_default": ("hallucination", "blur", "flicker")}

STAGES = [
    # (name, runner, attribute path of the owner, method)
    ("propainter.raft", "propainter", "raft", "forward"),
    ("propainter.flow_completion", "propainter", "flow_complete", "forward_bidirect_flow"),
    ("propainter.propagation", "propainter", "inpainter", "img_propagation"),
    ("propainter.generator", "propainter", "inpainter", "forward"),
    ("diffueraser.text_encoder", "diffueraser", "pipeline.text_encoder", "forward"),
    ("diffueraser.vae_encode", "diffueraser", "pipeline.vae", "encode"),
    ("diffueraser.brushnet", "diffueraser", "pipeline.brushnet", "forward"),
    ("diffueraser.unet", "diffueraser", "pipeline.unet", "forward"),
    ("diffueraser.vae_decode", "diffueraser", "pipeline.vae", "decode"),
]
"""The networks timed per stage; ``diffueraser.denoising`` = brushnet + unet (the denoising steps)."""

README_ANCHOR = [
    # DiffuEraser's README: 250 frames on an NVIDIA L20, whole inference (ProPainter prior + DiffuEraser)
    {"width": 640, "height": 360, "frames": 250, "seconds": 92, "gpu_memory_gb": 12},
    {"width": 960, "height": 540, "frames": 250, "seconds": 175, "gpu_memory_gb": 20},
    {"width": 1280, "height": 720, "frames": 250, "seconds": 314, "gpu_memory_gb": 33},
]


def make_clip(frames: int, height: int, width: int, seed: int) -> Clip:
    """A panning random texture with a moving rectangular hole (about 1/8 of the frame)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width + 4 * frames, 3), dtype=np.uint8)
    video = np.stack([base[:, 4 * t:4 * t + width] for t in range(frames)])
    hole = np.zeros(video.shape[:3], bool)
    h0, w0 = height // 4, width // 4
    for t in range(frames):
        dy = (t * height // 64) % (height // 4)
        hole[t, h0 + dy:h0 + dy + height // 4, w0:w0 + width // 2] = True
    return Clip(name=f"bench{seed}", frames=video, hole=hole, seed=seed)


def parse_clip(text: str) -> tuple[int, int, int]:
    """``FRAMESxHEIGHTxWIDTH`` (e.g. ``250x360x640``) -> (frames, height, width); sides multiples of 8."""
    try:
        frames, height, width = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FRAMESxHEIGHTxWIDTH, e.g. 250x360x640") from None
    if frames < 2 or height < 8 or width < 8 or height % 8 or width % 8:
        raise argparse.ArgumentTypeError(f"{text!r}: need >= 2 frames and sides that are multiples of 8")
    return frames, height, width


# ---------------------------------------------------------------------- measuring


class Gpu:
    """``synchronize`` and peak-memory calls that do nothing off CUDA (then peaks are ``None``)."""

    def __init__(self, device: Any):
        import torch

        self.torch, self.device = torch, device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated(self.device) / 2**20 if self.cuda else None

    def allocated_mib(self) -> float | None:
        return self.torch.cuda.memory_allocated(self.device) / 2**20 if self.cuda else None


class StageHooks:
    """Wraps the networks' methods: seconds, calls and peak memory per stage, one video at a time.

    Each call: sync, note the peak since the last reset (memory between stages), reset the peak,
    run, sync; the stage's peak is the largest over its calls. ``video_peak`` covers everything.
    """

    def __init__(self, gpu: Gpu):
        self.gpu = gpu
        self.depth = 0
        self.clear()

    def clear(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.peaks: dict[str, float] = {}
        self.between_peak: float | None = None

    def _note(self, name: str, peak: float | None) -> None:
        if peak is not None:
            self.peaks[name] = max(self.peaks.get(name, 0.0), peak)

    def wrap(self, owner: Any, method: str, name: str) -> None:
        original = getattr(owner, method)
        gpu = self.gpu

        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.depth:  # a wrapped network inside another: counted in the outer one
                return original(*args, **kwargs)
            gpu.sync()
            between = gpu.peak_mib()
            if between is not None:
                self.between_peak = max(self.between_peak or 0.0, between)
            gpu.reset_peak()
            self.depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                gpu.sync()
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1
                self.depth -= 1
                self._note(name, gpu.peak_mib())
                gpu.reset_peak()

        setattr(owner, method, timed)

    def install(self, backend: Any) -> None:
        for name, runner, path, method in STAGES:
            owner = getattr(backend, runner)
            for part in path.split("."):
                owner = getattr(owner, part)
            self.wrap(owner, method, name)


def timed_video(backend: Any, gpu: Gpu, clip: Clip, types: tuple[str, ...]) -> tuple[float, float | None, Any]:
    """(seconds, peak GPU MiB, result) of one ``generate`` call, synchronised."""
    gpu.sync()
    gpu.reset_peak()
    start = time.perf_counter()
    result = backend.generate(clip, types)
    gpu.sync()
    return time.perf_counter() - start, gpu.peak_mib(), result


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def peak_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(max(known), 1) if known else None


def machine_description(device: Any) -> dict[str, Any]:
    """Hardware and software the figures come from."""
    import diffusers
    import torch

    out: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "cpu_cores": os.cpu_count(),
        "torch": torch.__version__, "diffusers": diffusers.__version__, "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return out


# ---------------------------------------------------------------------- the run


def stage_table(runs: list[dict[str, Any]], video_seconds: float) -> dict[str, dict[str, Any]]:
    """Median seconds, calls and peak MiB per stage over the staged runs, plus the groups."""
    names = [s[0] for s in STAGES]
    table: dict[str, dict[str, Any]] = {}
    for name in names + ["diffueraser.denoising", "propainter", "diffueraser", "diffueraser.other"]:
        secs = [r["seconds"].get(name, 0.0) for r in runs]
        table[name] = {
            "seconds": round(median(secs), 4),
            "share_of_video": round(median(secs) / video_seconds, 4) if video_seconds > 0 else None,
            "calls": runs[0]["calls"].get(name),
            "peak_gpu_mib": peak_or_none([r["peaks"].get(name) for r in runs]),
        }
    return table


def staged_run(backend: Any, hooks: StageHooks, gpu: Gpu, clip: Clip) -> dict[str, Any]:
    """One standard video with the stage hooks; per-stage seconds / calls / peaks and the groups."""
    hooks.clear()
    seconds, peak, result = timed_video(backend, gpu, clip, VIDEOS["standard"])
    secs = dict(hooks.seconds)
    peaks = dict(hooks.peaks)
    secs["diffueraser.denoising"] = secs.get("diffueraser.brushnet", 0.0) + secs.get("diffueraser.unet", 0.0)
    secs["propainter"] = float(result.timings.get("propainter", 0.0))
    secs["diffueraser"] = float(result.timings.get("inpaint", 0.0))
    secs["diffueraser.other"] = max(0.0, secs["diffueraser"] - sum(
        secs.get(n, 0.0) for n in ("diffueraser.text_encoder", "diffueraser.vae_encode", "diffueraser.brushnet",
                                   "diffueraser.unet", "diffueraser.vae_decode")))
    if gpu.cuda:
        for group, parts in (("diffueraser.denoising", ("diffueraser.brushnet", "diffueraser.unet")),
                             ("propainter", [s[0] for s in STAGES if s[1] == "propainter"]),
                             ("diffueraser", [s[0] for s in STAGES if s[1] == "diffueraser"])):
            peaks[group] = max((peaks[p] for p in parts if p in peaks), default=None)
    calls = dict(hooks.calls)
    calls["diffueraser.denoising"] = calls.get("diffueraser.brushnet", 0) + calls.get("diffueraser.unet", 0)
    video_peak = max([p for p in [hooks.between_peak, peak, *hooks.peaks.values()] if p is not None], default=None)
    return {"video_seconds": seconds, "video_peak": video_peak, "seconds": secs, "calls": calls, "peaks": peaks}


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from regdpo.backends.models import ModelsBackend, resolve_device
    from regdpo.backends.models_source import import_source
    from regdpo.backends.models_tiny import SIZES, build_modules, save_modules

    sizes = SIZES[args.size]
    device = resolve_device(args.device)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    if dtype == torch.float16 and device.type != "cuda":
        raise UsageError(f"--dtype fp16 needs a CUDA device (got --device {args.device}); use --dtype fp32")
    frames, height, width = args.frames, args.height, args.width
    report: dict[str, Any] = {
        "bench": "bench_models_fullsize", "version": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "size": args.size, "dtype": args.dtype, "machine": machine_description(device),
    }
    source = import_source(args.diffueraser_repo)
    t0 = time.perf_counter()
    models = build_modules(source, sizes, seed=args.seed)
    report["build_seconds"] = round(time.perf_counter() - t0, 2)
    report["params"] = dict(models.params)
    report["published_params"] = dict(sizes.published_params)
    print_params(report)
    if args.params_only:
        return report

    with tempfile.TemporaryDirectory(prefix="regdpo_fullsize_", dir=args.weights_dir) as tmp:
        t0 = time.perf_counter()
        paths = save_modules(tmp, models, save_dtype=dtype if dtype == torch.float16 else None)
        del models
        gc.collect()
        report["save_seconds"] = round(time.perf_counter() - t0, 2)
        settings = {**BACKEND_SETTINGS[args.size], **({"pcm_ckpt": args.pcm_ckpt} if args.pcm_ckpt else {})}
        config = ModelsConfig(**paths, diffueraser_repo=args.diffueraser_repo, device=str(device),
                              model_precision=args.dtype, **settings)
        backend = ModelsBackend(config)
        report["load_seconds"] = round(backend.load_seconds, 2)
        try:
            measure(backend, report, args, (frames, height, width))
        finally:
            backend.close()
    return report


def measure(backend: Any, report: dict[str, Any], args: argparse.Namespace, clip_size: tuple[int, int, int]) -> None:
    gpu = Gpu(backend.device)
    frames, height, width = clip_size
    clip = make_clip(frames, height, width, seed=args.seed + 1)
    c = backend.config
    report["settings"] = {
        "pcm_ckpt": c.pcm_ckpt, "steps": backend.diffueraser.steps, "diffueraser_nframes": c.diffueraser_nframes,
        "propainter_resize_ratio": c.propainter_resize_ratio, "propainter_raft_iter": c.propainter_raft_iter,
        "flicker_segments": c.flicker_segments, "flicker_scheme": c.flicker_scheme, "repeats": args.repeats,
    }
    report["clip"] = {"frames": frames, "height": height, "width": width,
                      "hole_fraction": round(float(clip.hole.mean()), 4)}
    report["weights_gpu_mib"] = None if gpu.allocated_mib() is None else round(gpu.allocated_mib(), 1)
    print(f"\nclip {frames} frames {width}x{height} (hole {clip.hole.mean():.0%}), {args.dtype} on "
          f"{backend.device}; build {report['build_seconds']} s, save {report['save_seconds']} s, "
          f"load {report['load_seconds']} s; settings {report['settings']}")

    for types in VIDEOS.values():  # warm-up: first calls allocate and load kernels
        backend.generate(clip, types)
    videos: dict[str, Any] = {}
    for name, types in VIDEOS.items():
        runs = [timed_video(backend, gpu, clip, types)[:2] for _ in range(args.repeats)]
        secs = [r[0] for r in runs]
        videos[name] = {"neg_types": list(types), "seconds": round(median(secs), 4),
                        "seconds_all": [round(s, 4) for s in secs], "seconds_per_frame": round(median(secs) / frames, 4),
                        "peak_gpu_mib": peak_or_none([r[1] for r in runs])}
    report["videos"] = videos

    hooks = StageHooks(gpu)
    hooks.install(backend)
    staged = [staged_run(backend, hooks, gpu, clip) for _ in range(args.repeats)]
    report["stages"] = stage_table(staged, median([s["video_seconds"] for s in staged]))
    report["staged_video"] = {"seconds": round(median([s["video_seconds"] for s in staged]), 4),
                              "peak_gpu_mib": peak_or_none([s["video_peak"] for s in staged])}

    extra = []
    for size in args.extra_clip:
        other = make_clip(*size, seed=args.seed + 2)
        secs, peak, _ = timed_video(backend, gpu, other, VIDEOS["standard"])
        extra.append({"frames": size[0], "height": size[1], "width": size[2], "neg_types": list(VIDEOS["standard"]),
                      "seconds": round(secs, 4), "seconds_per_frame": round(secs / size[0], 4),
                      "peak_gpu_mib": None if peak is None else round(peak, 1), "repeats": 1, "warm_up": False})
    report["extra_clips"] = extra
    report["ratios"] = ratios(report)
    report["readme_anchor"] = [{**a, "seconds_per_frame": round(a["seconds"] / a["frames"], 3)} for a in README_ANCHOR]


def ratios(report: dict[str, Any]) -> dict[str, float | None]:
    """Ratios of figures measured in this run."""
    st, v = report["stages"], report["videos"]

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 4) if a is not None and b else None

    out = {
        "diffueraser_over_propainter": div(st["diffueraser"]["seconds"], st["propainter"]["seconds"]),
        "denoising_share_of_diffueraser": div(st["diffueraser.denoising"]["seconds"], st["diffueraser"]["seconds"]),
        "brushnet_over_unet": div(st["diffueraser.brushnet"]["seconds"], st["diffueraser.unet"]["seconds"]),
        "generator_default_over_standard": div(v["generator_default"]["seconds"], v["standard"]["seconds"]),
        "staged_over_unhooked_standard": div(report["staged_video"]["seconds"], v["standard"]["seconds"]),
    }
    for e in report.get("extra_clips", []):
        key = f"per_frame_{e['frames']}x{e['height']}x{e['width']}_over_main_clip"
        out[key] = div(e["seconds_per_frame"], v["standard"]["seconds_per_frame"])
    return out


# ---------------------------------------------------------------------- printing


def print_params(report: dict[str, Any]) -> None:
    published = report["published_params"]
    print(f"models ({report['size']} sizes, random weights) built in {report['build_seconds']} s")
    print(f"  {'network':22s} {'parameters':>15s} {'published':>15s}")
    for name, count in report["params"].items():
        pub = f"{published[name]:,d}" if name in published else ""
        print(f"  {name:22s} {count:15,d} {pub:>15s}")


def print_report(report: dict[str, Any], load: str) -> None:
    if "videos" not in report:
        print(load)
        return
    v, st = report["videos"], report["stages"]

    def mib(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f}"

    print(f"\nweights on the GPU: {mib(report['weights_gpu_mib'])} MiB")
    print(f"\nper video (median of {report['settings']['repeats']} after a warm-up):")
    print(f"  {'video':20s} {'seconds':>9s} {'s/frame':>9s} {'peak MiB':>9s}  negatives")
    for name, row in v.items():
        print(f"  {name:20s} {row['seconds']:9.3f} {row['seconds_per_frame']:9.4f} {mib(row['peak_gpu_mib']):>9s}  "
              f"{', '.join(row['neg_types'])}")
    print(f"\nper stage of the standard video (hooked runs: {report['staged_video']['seconds']:.3f} s, "
          f"peak {mib(report['staged_video']['peak_gpu_mib'])} MiB):")
    print(f"  {'stage':28s} {'seconds':>9s} {'share':>7s} {'calls':>6s} {'peak MiB':>9s}")
    for name, row in st.items():
        share = "" if row["share_of_video"] is None else f"{row['share_of_video']:.1%}"
        calls = "" if row["calls"] is None else str(row["calls"])
        print(f"  {name:28s} {row['seconds']:9.3f} {share:>7s} {calls:>6s} {mib(row['peak_gpu_mib']):>9s}")
    for e in report["extra_clips"]:
        print(f"\nextra clip {e['frames']} frames {e['width']}x{e['height']} (one run, no warm-up): "
              f"{e['seconds']:.2f} s, {e['seconds_per_frame']:.4f} s/frame, peak {mib(e['peak_gpu_mib'])} MiB")
    print("\nratios measured in this run:")
    for k, r in report["ratios"].items():
        print(f"  {k:50s} {'-' if r is None else f'{r:.3f}'}")
    print("\nDiffuEraser's README (quoted, not measured here; NVIDIA L20, 250 frames, its own inference):")
    for a in report["readme_anchor"]:
        print(f"  {a['width']}x{a['height']}: {a['seconds']} s ({a['seconds_per_frame']} s/frame), "
              f"{a['gpu_memory_gb']} GB")
    if report["size"] == "tiny" or report["machine"].get("gpu") is None:
        print("\n(tiny sizes or no GPU: a smoke test; these figures say nothing about GPU speed)")
    print(load)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("full", "tiny"), help="model sizes (default: full with CUDA, else tiny)")
    parser.add_argument("--frames", type=int, help="clip frames (default 22 full, 4 tiny)")
    parser.add_argument("--height", type=int, help="clip height, multiple of 8 (default 512 full, 128 tiny)")
    parser.add_argument("--width", type=int, help="clip width, multiple of 8 (default 920 full, 128 tiny)")
    parser.add_argument("--dtype", choices=("fp16", "fp32"), help="default fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default cuda when available)")
    parser.add_argument("--repeats", type=int, help="timed runs per figure after the warm-up (default 3 full, 1 tiny)")
    parser.add_argument("--pcm_ckpt", help="PCM checkpoint name: sets the denoising steps (default 2-Step)")
    parser.add_argument("--extra-clip", type=parse_clip, action="append", default=[], metavar="FxHxW",
                        help="also time the standard video once on this clip size, e.g. 250x360x640 "
                        "(DiffuEraser's README setting); repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params-only", action="store_true",
                        help="build the models in memory, print the parameter counts and stop")
    parser.add_argument("--weights-dir", help="folder for the temporary random weights (default: the temp folder)")
    parser.add_argument("--diffueraser_repo", default=os.environ.get("REGDPO_DIFFUERASER_REPO"),
                        help="DiffuEraser checkout (default $REGDPO_DIFFUERASER_REPO)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    return parser


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    import torch

    cuda = torch.cuda.is_available()
    args.size = args.size or ("full" if cuda else "tiny")
    args.device = args.device or ("cuda" if cuda else "cpu")
    on_cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("fp16" if on_cuda else "fp32")
    f, h, w = CLIP_DEFAULTS[args.size]
    args.frames, args.height, args.width = args.frames or f, args.height or h, args.width or w
    args.repeats = args.repeats or (3 if args.size == "full" else 1)
    if args.frames < 2 or args.height % 8 or args.width % 8 or args.repeats < 1:
        raise UsageError(f"--frames {args.frames} --height {args.height} --width {args.width} --repeats "
                         f"{args.repeats}: need >= 2 frames, sides that are multiples of 8, >= 1 repeat")
    if args.pcm_ckpt is not None:
        from regdpo.backends.models_config import PCM_CHECKPOINTS

        if args.pcm_ckpt not in PCM_CHECKPOINTS:
            raise UsageError(f"--pcm_ckpt {args.pcm_ckpt!r}: choose one of {', '.join(PCM_CHECKPOINTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = ModelsConfig(diffueraser_repo=args.diffueraser_repo)
    problems = config.source_problems() + [p for p in config.missing() if p.startswith("Python module")]
    if problems:
        print(f"bench_models_fullsize: {problems[0]}", file=sys.stderr)
        return 2
    try:
        args = resolve_defaults(args)
        with MachineLoad() as load:
            report = run_bench(args)
    except UsageError as exc:
        print(f"bench_models_fullsize: {exc}", file=sys.stderr)
        return 2
    report["load"] = load.summary()
    print_report(report, load.summary())
    if args.json:
        out = Path(args.json)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, out)
        print(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
