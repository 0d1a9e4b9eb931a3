"""Wall time per video of the generator loop, serial versus overlapped (reader -> backend -> writer).

Runs the real generator (``run_generation``) twice per repeat into temporary folders, with the same
backend object: once with ``LocalEngine(overlap=False)`` (decode, compute, write one after the other,
the loop before the overlap) and once with the default overlapped engine (the next source decoded
ahead, video k written while the backend computes video k+1). Reads every written video's stage
times from its ``meta.json`` and prints, per engine:

    wall s/video (run wall / videos), mean read (decode+resize+mask), compute (backend), write
    (PNG encoding, fsync, commit) s/video, and the two bounds: sum = read+compute+write (what a serial
    loop costs) and max = max(read, compute, write) (what a perfect overlap costs).

``--backend models`` (default when the models venv and a DiffuEraser checkout are there) builds tiny
random weights with the real classes (``regdpo.backends.models_tiny``) and runs on the CPU;
``--backend classical`` needs nothing. On a loaded or 2-core machine the stages compete for the same
cores, so the overlapped wall lies between max and sum; the ratio printed is measured in one run.

Usage (from the repo root)::

    PYTHONPATH=src python bench/bench_overlap.py --backend classical
    REGDPO_DIFFUERASER_REPO=/work/DiffuEraser PYTHONPATH=src /work/venv-models/bin/python \\
        bench/bench_overlap.py --backend models
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from regdpo import format as fmt
from regdpo.generate.config import GenerateConfig
from regdpo.generate.engine import LocalEngine
from regdpo.generate.pipeline import run_generation
from regdpo.generate.sources import discover_sources

REPO = Path(__file__).resolve().parents[1]
READ = ("decode", "resize", "mask")


def build_backend(name: str, tmp: str, frames: int):
    if name == "classical":
        from regdpo.backends.classical import ClassicalBackend

        return ClassicalBackend(flicker_segments=2)
    from regdpo.backends.models import ModelsBackend
    from regdpo.backends.models_config import ModelsConfig
    from regdpo.backends.models_source import import_source
    from regdpo.backends.models_tiny import build_tiny_weights

    config = ModelsConfig(diffueraser_repo=os.environ.get("REGDPO_DIFFUERASER_REPO"))
    config.device = "cpu"
    config.diffueraser_nframes, config.propainter_resize_ratio, config.propainter_raft_iter = 4, 1.0, 2
    config.flicker_segments = 2
    for k, v in build_tiny_weights(tmp, import_source(config.diffueraser_repo)).items():
        setattr(config, k, v)
    config.check()
    return ModelsBackend(config)


def one_run(backend, backend_name: str, sources, out: Path, nframes: int, resolution: int, overlap: bool) -> dict:
    config = GenerateConfig(output_dir=out, backend=backend_name, nframes=nframes, resolution=resolution,
                            flicker_segments=2, seed=1, progress=False)
    config.check()
    t0 = time.perf_counter()
    summary = run_generation(config, backend, sources, log=lambda m: None,
                             engine=LocalEngine(backend, overlap=overlap))
    wall = time.perf_counter() - t0
    written = [o.name for o in summary.outcomes if o.status == "written"]
    timings = [fmt.read_video_meta(out, n).timings for n in written]
    return {
        "videos": len(written),
        "wall": wall / max(len(written), 1),
        "read": float(np.mean([sum(t[k] for k in READ) for t in timings])),
        "compute": float(np.mean([t["negatives"] for t in timings])),
        "write": float(np.mean([t["write"] for t in timings])),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("classical", "models"), default=None,
                        help="default: models when a DiffuEraser checkout is set, else classical")
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data")
    parser.add_argument("--nframes", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=None, help="default: 256 classical, 128 models")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    backend_name = args.backend or ("models" if os.environ.get("REGDPO_DIFFUERASER_REPO") else "classical")
    resolution = args.resolution or (256 if backend_name == "classical" else 128)
    davis, ytvos = args.data / "DAVIS", args.data / "YTBV"
    sources = discover_sources(davis if davis.is_dir() else None, None, ytvos if ytvos.is_dir() else None,
                               "train", None, 30.0)
    with tempfile.TemporaryDirectory(prefix="regdpo_overlap_") as tmp:
        backend = build_backend(backend_name, tmp, args.nframes)
        one_run(backend, backend_name, sources[:1], Path(tmp) / "warmup", args.nframes, resolution, False)
        rows: dict[str, list[dict]] = {"serial": [], "overlapped": []}
        for r in range(args.repeats):  # alternate, so that load changes hit both alike
            for label, overlap in (("serial", False), ("overlapped", True)):
                out = Path(tmp) / f"{label}{r}"
                rows[label].append(one_run(backend, backend_name, sources, out, args.nframes, resolution, overlap))
        backend.close()
    print(f"bench_overlap: {backend_name} backend, {rows['serial'][0]['videos']} videos of {args.data}, "
          f"{args.nframes} frames, short side {resolution}, {args.repeats} repeats, {os.cpu_count()} CPUs")
    print(f"{'engine':<11} {'wall s/video':>12} {'read':>7} {'compute':>8} {'write':>7} {'sum':>7} {'max':>7}")
    mean = {label: {k: float(np.mean([row[k] for row in rs])) for k in rs[0]} for label, rs in rows.items()}
    for label, m in mean.items():
        total, bound = m["read"] + m["compute"] + m["write"], max(m["read"], m["compute"], m["write"])
        print(f"{label:<11} {m['wall']:>12.3f} {m['read']:>7.3f} {m['compute']:>8.3f} {m['write']:>7.3f} "
              f"{total:>7.3f} {bound:>7.3f}")
    s, o = mean["serial"], mean["overlapped"]
    print(f"overlapped / serial wall: {o['wall'] / s['wall']:.2f}; overlapped wall / max(read, compute, write) "
          f"of the serial run: {o['wall'] / max(s['read'], s['compute'], s['write']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
