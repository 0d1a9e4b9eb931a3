"""Where the ``models`` backend spends its time, per stage and per network.

By default it builds tiny randomly initialised weights with the real DiffuEraser / ProPainter
classes (``regdpo.backends.models_tiny``) and runs on the CPU; pass the weight flags of
``regdpo generate`` (``--base_model_path`` ...) and ``--device cuda`` to time the real models.

It prints, for one clip:
- per-stage seconds of ``generate`` (ProPainter sub-stages, hallucination, flicker), mean of
  ``--repeats`` runs after one warm-up run, and each stage's share of the total;
- seconds and call counts per network (RAFT, flow completion, ProPainter generator, VAE
  encode/decode, BrushNet, motion UNet, text encoder), measured by timing wrappers;
- the model work per video (ProPainter runs, DiffuEraser runs, denoised frames);
- a measured ratio against a naive baseline on the same clip: ProPainter run separately for
  blur and for the flicker prior, and flicker made by one full-clip run per segment seed;
- resident memory (and CUDA memory) after each video, to show it does not grow.

``--candidates N`` measures instead the on-policy candidates (``regdpo generate --inpaint_candidates N``):
one ``generate`` drawing N inpaint candidates (one ProPainter run shared, N DiffuEraser runs) against N
one-candidate ``generate`` calls (N ProPainter runs, N DiffuEraser runs), and whether DiffuEraser's
pipeline takes two videos (two seeds of one clip) in one call, the batching N candidates would need.

Needs a DiffuEraser checkout (``--diffueraser_repo`` or ``$REGDPO_DIFFUERASER_REPO``) and the
``[models]`` extra with a working torchvision. Example::

    REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser python bench/bench_models.py --frames 12 --size 160
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

from regdpo.backends.base import Clip
from regdpo.backends.models_config import ModelsConfig, add_arguments


def rss_mb() -> float:
    """Current resident set size of this process (Linux /proc), in MiB."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def make_clip(frames: int, size: int, seed: int) -> Clip:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size, size + 4 * frames, 3), dtype=np.uint8)
    video = np.stack([base[:, 4 * t:4 * t + size] for t in range(frames)])
    hole = np.zeros(video.shape[:3], bool)
    for t in range(frames):
        hole[t, size // 4 + t:size // 2 + size // 8 + t, size // 4:3 * size // 4] = True
    return Clip(name=f"bench{seed}", frames=video, hole=hole, seed=seed)


class NetworkTimer:
    """Wraps callables of the loaded networks to add up their wall time and calls."""

    def __init__(self, sync):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.sync = sync

    def wrap(self, owner, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.sync()
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1

        setattr(owner, attr, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def instrument(backend, timer: NetworkTimer) -> None:
    pp, de = backend.propainter, backend.diffueraser
    pipe = de.pipeline
    for owner, attr, name in [
        (pp.raft, "forward", "ProPainter: RAFT flows"),
        (pp.flow_complete, "forward_bidirect_flow", "ProPainter: flow completion"),
        (pp.inpainter, "img_propagation", "ProPainter: image propagation"),
        (pp.inpainter, "forward", "ProPainter: generator (feature prop + transformer)"),
        (pipe.vae, "encode", "DiffuEraser: VAE encode"),
        (pipe.vae, "decode", "DiffuEraser: VAE decode"),
        (pipe.brushnet, "forward", "DiffuEraser: BrushNet"),
        (pipe.unet, "forward", "DiffuEraser: motion UNet"),
        (pipe.text_encoder, "forward", "DiffuEraser: text encoder"),
    ]:
        timer.wrap(owner, attr, name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=160, help="square clip side, multiple of 8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--videos", type=int, default=3, help="videos for the memory check")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--candidates", type=int, default=0, metavar="N",
                        help="measure N inpaint candidates in one call against N one-candidate calls (only that)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    config = ModelsConfig.from_args(args)
    if args.device is None:
        config.device = "cpu"
    tiny = not config.any_weight_path_given()
    if tiny:  # small settings that keep a CPU run short
        for field, value in dict(diffueraser_nframes=4, propainter_resize_ratio=0.8, propainter_raft_iter=2,
                                 flicker_segments=2).items():
            if getattr(args, field, None) is None:
                setattr(config, field, value)

    import torch

    from regdpo.backends.models import ModelsBackend, flicker_plan, flicker_seeds, stitch_flicker
    from regdpo.backends.models_source import import_source

    tmp = tempfile.TemporaryDirectory(prefix="regdpo_bench_")
    if tiny:
        from regdpo.backends.models_tiny import build_tiny_weights

        if config.source_problems():
            print(f"bench_models: {config.source_problems()[0]}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        paths = build_tiny_weights(tmp.name, import_source(config.diffueraser_repo))
        for k, v in paths.items():
            setattr(config, k, v)
        print(f"tiny weights built in {time.perf_counter() - t0:.1f} s under {tmp.name}")
    t0 = time.perf_counter()
    backend = ModelsBackend(config)
    print(f"models loaded in {time.perf_counter() - t0:.1f} s on {backend.device} ({backend.dtype}); "
          f"torch threads {torch.get_num_threads()}")
    cuda = backend.device.type == "cuda"
    timer = NetworkTimer(torch.cuda.synchronize if cuda else (lambda: None))
    instrument(backend, timer)

    clip = make_clip(args.frames, args.size, seed=1)
    if args.candidates:
        bench_candidates(backend, clip, args.candidates, args.repeats, torch)
        backend.close()
        tmp.cleanup()
        return 0
    types = ("hallucination", "blur", "flicker")
    print(f"clip: {args.frames} frames, {args.size}x{args.size}, hole {clip.hole.mean():.0%} of pixels; "
          f"settings: {config.pcm_ckpt}, window {config.diffueraser_nframes}, "
          f"{config.flicker_segments} flicker segments ({config.flicker_scheme}), "
          f"ProPainter ratio {config.propainter_resize_ratio}, RAFT iters {config.propainter_raft_iter}")
    backend.generate(clip, types)  # warm-up (first calls allocate and pick kernels)
    timer.reset()
    stage_sum: dict[str, float] = defaultdict(float)
    walls = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = backend.generate(clip, types)
        walls.append(time.perf_counter() - t0)
        for k, v in result.timings.items():
            stage_sum[k] += v
    wall = float(np.mean(walls))
    print(f"\ngenerate(): {wall:.2f} s per video (mean of {args.repeats})")
    print(f"  {'stage':34s} {'seconds':>8s} {'share':>6s}")
    for name in ("propainter", "hallucination", "flicker"):
        secs = stage_sum[name] / args.repeats
        print(f"  {name:34s} {secs:8.2f} {secs / wall:6.1%}")
        if name == "propainter":
            for sub in sorted(k for k in stage_sum if k.startswith("propainter_")):
                s = stage_sum[sub] / args.repeats
                print(f"    {sub:32s} {s:8.2f} {s / wall:6.1%}")
    print(f"\n  {'network':50s} {'seconds':>8s} {'share':>6s} {'calls':>6s}")
    for name in sorted(timer.seconds, key=lambda n: -timer.seconds[n]):
        secs = timer.seconds[name] / args.repeats
        print(f"  {name:50s} {secs:8.2f} {secs / wall:6.1%} {timer.calls[name] // args.repeats:6d}")
    fl = result.info["flicker"]
    print(f"\nmodel work per video: ProPainter runs 1 (blur = flicker prior), DiffuEraser runs "
          f"{1 + fl['diffueraser_runs']} (hallucination 1 + flicker {fl['diffueraser_runs']}), "
          f"denoised frames {args.frames + fl['denoised_frames']} for a {args.frames}-frame clip")

    if not args.no_baseline:
        de, pp = backend.diffueraser, backend.propainter
        t0 = time.perf_counter()
        with torch.inference_mode():
            pp.run(clip.frames, clip.hole)  # blur
            prior = pp.run(clip.frames, clip.hole)  # prior, computed again
            de.run(clip.frames, clip.hole, None, 1)
            plan = flicker_plan(clip.num_frames, config.flicker_segments, "full_runs")
            stitch_flicker(lambda a, b, s: de.run(clip.frames[a:b], clip.hole[a:b], prior[a:b], s)[0],
                           clip.num_frames, plan, flicker_seeds(clip.seed, config.flicker_segments))
        base = time.perf_counter() - t0
        print(f"\nbaseline (ProPainter twice, flicker = one full run per segment seed): {base:.2f} s; "
              f"ours / baseline = {wall / base:.2f}")

    print("\nmemory after each video (no growth expected):")
    for k in range(args.videos):
        backend.generate(make_clip(args.frames, args.size, seed=10 + k), types)
        line = f"  video {k}: RSS {rss_mb():8.1f} MiB"
        if cuda:
            line += f", CUDA allocated {torch.cuda.memory_allocated() / 2**20:8.1f} MiB"
        print(line)
    backend.close()
    tmp.cleanup()
    return 0


def bench_candidates(backend, clip: Clip, n: int, repeats: int, torch) -> None:
    """N inpaint candidates in one ``generate`` vs N one-candidate ``generate`` calls; a two-video pipeline call."""
    from dataclasses import replace

    backend.generate(clip, ["inpaint"])  # warm-up
    shared, separate = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = backend.generate(clip, ["inpaint"], candidates={"inpaint": n})
        shared.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for k in range(n):  # what N runs of the generator would do: ProPainter again each time
            backend.generate(replace(clip, seed=clip.seed + k), ["inpaint"])
        separate.append(time.perf_counter() - t0)
    one, many = float(np.mean(shared)), float(np.mean(separate))
    pp = result.timings.get("propainter", 0.0)
    print(f"\n{n} inpaint candidates of one {clip.num_frames}-frame clip (mean of {repeats}):")
    print(f"  one generate(candidates={n}): {one:.2f} s (ProPainter {pp:.2f} s once, {n} DiffuEraser runs)")
    print(f"  {n} one-candidate generate calls: {many:.2f} s ({n} ProPainter runs, {n} DiffuEraser runs)")
    print(f"  speed-up of the shared run: {many / one:.2f}x")
    de = backend.diffueraser
    from PIL import Image

    masks = [Image.fromarray(np.where(h, np.uint8(255), np.uint8(0)), "L") for h in clip.hole]
    masked = [Image.fromarray(np.where(h[..., None], np.uint8(0), f)) for f, h in zip(clip.frames, clip.hole)]
    lat = (clip.num_frames * 2, de.latent_channels, clip.frames.shape[1] // de.scale, clip.frames.shape[2] // de.scale)
    try:
        with torch.inference_mode():
            de.pipeline(num_frames=min(de.nframes, clip.num_frames), prompt=["", ""], images=masked, masks=masks,
                        num_inference_steps=de.steps, generator=torch.Generator().manual_seed(0), guidance_scale=0.0,
                        latents=torch.randn(lat, dtype=de.dtype, device=de.device), output_type="np")
        verdict = "ran (check its output before relying on it)"
    except Exception as exc:  # the finding is the exception
        verdict = f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    print(f"  two seeds of one clip in one DiffuEraser pipeline call (prompt batch 2): {verdict}")
    print("  so the N DiffuEraser runs are not batched: the pipeline denoises one video per call")


if __name__ == "__main__":
    sys.exit(main())
