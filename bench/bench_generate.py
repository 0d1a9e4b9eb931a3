"""Wall time per video of the classical backend, and the share spent outside the negative generators.

Runs the real generator (``run_generation``) into a temporary folder and reads the per-stage timings
that every ``meta.json`` records; the wall time per video is measured around each video by the
pipeline (it includes the final commit). Prints, per input set:

    videos, mean wall s/video, mean s per stage, share outside the negative generators
    (decode + resize + masks + compositing/PNG writing + commit) = 1 - negatives / wall.

Usage (from the repo root):
    python bench/bench_generate.py                       # embedded samples, nframes 22, resolution 512
    python bench/bench_generate.py --data ../shared/data --nframes 22 --resolution 512
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from regdpo import format as fmt
from regdpo.backends.classical import ClassicalBackend
from regdpo.generate.config import GenerateConfig
from regdpo.generate.pipeline import run_generation
from regdpo.generate.sources import discover_sources

STAGES = ("decode", "resize", "mask", "negatives", "write")


def bench(label: str, sources, nframes: int, resolution: int, mask_mode: str, repeat: int) -> None:
    walls, stages = [], {s: [] for s in STAGES}
    negative_parts: dict[str, list[float]] = {}
    for r in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            config = GenerateConfig(output_dir=Path(tmp) / "dpo_data", nframes=nframes, resolution=resolution,
                                    mask_mode=mask_mode, seed=r, progress=False)
            config.check()
            t0 = time.perf_counter()
            summary = run_generation(config, ClassicalBackend(config.flicker_segments), sources, log=lambda m: None)
            run_wall = time.perf_counter() - t0
            for o in summary.outcomes:
                if o.status != "written":
                    continue
                meta = fmt.read_video_meta(config.output_dir, o.name)
                walls.append(o.seconds)
                for s in STAGES:
                    stages[s].append(meta.timings.get(s, 0.0))
                for k, v in meta.timings.items():
                    if k.startswith("negatives."):
                        negative_parts.setdefault(k.split(".", 1)[1], []).append(v)
    if not walls:
        print(f"{label}: no video written")
        return
    wall = float(np.mean(walls))
    neg = float(np.mean(stages["negatives"]))
    other = wall - sum(float(np.mean(stages[s])) for s in STAGES)
    print(f"\n{label}: {len(walls)} videos ({repeat} run(s)), nframes {nframes}, resolution {resolution}, "
          f"masks {mask_mode}")
    print(f"  wall per video          {wall:7.3f} s   (whole run {run_wall:.1f} s for the last repetition)")
    for s in STAGES:
        m = float(np.mean(stages[s]))
        print(f"  {s:<23} {m:7.3f} s   {m / wall:6.1%}")
    for k, v in sorted(negative_parts.items()):
        print(f"    negatives.{k:<13} {np.mean(v):7.3f} s")
    print(f"  commit + bookkeeping    {other:7.3f} s   {other / wall:6.1%}")
    print(f"  share outside the negative generators: {1 - neg / wall:.1%} "
          f"(ratio outside/negatives = {(wall - neg) / neg:.2f})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="folder with DAVIS/ and YTBV/ (e.g. ../shared/data); "
                   "default: the embedded sample videos")
    p.add_argument("--nframes", type=int, default=22)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--mask_mode", default="random", choices=("random", "hard"))
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args(argv)
    if args.data:
        sources = discover_sources(args.data / "DAVIS", None, args.data / "YTBV")
        label = f"fixtures {args.data}"
    else:
        sources = discover_sources()
        label = "embedded samples"
    bench(label, sources, args.nframes, args.resolution, args.mask_mode, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
