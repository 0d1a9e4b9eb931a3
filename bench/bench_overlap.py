"""Wall time per video of the generator loop, serial versus overlapped (reader -> backend -> writer).

Runs the real generator (``run_generation``) into temporary folders, with the same backend object,
once with ``LocalEngine(overlap=False)`` (decode, compute, write one after the other: the loop before
the overlap) and once with the default overlapped engine (the next source decoded ahead, video k
written while the backend computes video k+1), alternating serial / overlapped per repeat so that a
change of machine load hits both alike. Stage times come from every written video's ``meta.json``.

Per backend (``classical``; ``models`` = tiny random weights built with the real DiffuEraser /
ProPainter classes, ``regdpo.backends.models_tiny``, on the CPU) and per mode:

- ``real``: the backend as ``regdpo generate`` runs it (torch with its default intra-op threads, one per
  core; OpenCV on one thread, as ``regdpo.frames`` sets it);
- ``real-1thread`` (models only): the same with ``torch.set_num_threads(1)``, so the compute takes one
  core and leaves the other to the reader and the writer, as on a GPU machine where the compute is on
  the GPU and the CPU is free (classical compute is already on one thread);
- ``simulated-gpu``: a model of a GPU-bound backend, **only in this bench**: a first serial pass records
  the real backend's result and compute seconds per video; then the backend returns that result after
  sleeping those seconds, so the compute costs its real time but no CPU (the writer's PNG encoding is
  real).

Printed per mode: serial and overlapped wall s/video; read (decode + resize + mask), compute (backend)
and write (PNG encoding, fsync, commit) s/video of the serial run; compute s/video of the overlapped run
(the cost of sharing the cores); max(compute, write) and compute + write; and

    hidden = (serial - overlapped) / ((sum - max) * (N - 1) / N)

with sum and max over (read, compute, write) of the serial run and N videos: the share of the time a
perfect pipeline of N videos saves that the overlapped loop saves (1.0 = only the slowest stage is left;
read is small, so this is (serial - overlapped) / min(compute, write) up to the first and last video).
The JSON (``--json FILE``) also has ``hidden_of_min`` = (serial - overlapped) / min(compute, write).
Last, ``idle`` = wall - compute per video of the serial and of the overlapped run: the time the backend
(on a GPU machine, the GPU) waits for the reader and the writer. It is measured within one run, so it
does not move with the compute's run-to-run variation; ``hidden`` does, and when write << compute (the
tiny models) that variation can be larger than the write itself.
The machine load (``bench/machine.py``) is printed with the figures.

Usage (from the repo root; the second runs both backends)::

    PYTHONPATH=src python bench/bench_overlap.py
    REGDPO_DIFFUERASER_REPO=/work/DiffuEraser PYTHONPATH=src /work/venv-models/bin/python \\
        bench/bench_overlap.py --json overlap.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import MachineLoad  # noqa: E402

from regdpo import format as fmt  # noqa: E402
from regdpo.backends.base import BackendResult, Clip, NegativeBackend  # noqa: E402
from regdpo.generate.config import GenerateConfig  # noqa: E402
from regdpo.generate.engine import LocalEngine  # noqa: E402
from regdpo.generate.pipeline import run_generation  # noqa: E402
from regdpo.generate.sources import discover_sources, expand_masks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
READ = ("decode", "resize", "mask")
BACKENDS = ("classical", "models")
MODES = ("real", "real-1thread", "simulated-gpu")
# per backend: short side, entries per clip (--masks_per_clip): enough videos for a pipeline to fill
DEFAULTS = {"classical": {"resolution": 256, "masks_per_clip": 4}, "models": {"resolution": 128, "masks_per_clip": 1}}


class SimulatedGPUBackend(NegativeBackend):
    """A model of a GPU-bound backend (bench only): the first call per clip runs the real backend and
    records its result and seconds; later calls sleep those seconds and return a copy of that result."""

    def __init__(self, inner: NegativeBackend):
        self.inner, self.name, self.supported_types = inner, inner.name, inner.supported_types
        self.recorded: dict[tuple, tuple[BackendResult, float]] = {}

    def generate(self, clip: Clip, neg_types: Sequence[str],
                 strengths: Mapping[str, Sequence[float]] | None = None) -> BackendResult:
        key = (clip.name, tuple(neg_types), repr(strengths))
        if key not in self.recorded:
            t0 = time.perf_counter()
            result = self.inner.generate(clip, neg_types, strengths)
            self.recorded[key] = (result, time.perf_counter() - t0)
            return self._copy(result)  # the recording call: the real compute has taken its time
        result, seconds = self.recorded[key]
        time.sleep(seconds)  # the compute's time, on the "GPU": the CPU is free meanwhile
        return self._copy(result)

    @staticmethod
    def _copy(result: BackendResult) -> BackendResult:
        """The writer owns what it gets (``compute_video``): hand out copies, keep the recording."""
        return BackendResult({k: v.copy() for k, v in result.negatives.items()}, result.info, result.timings)

    def settings(self) -> dict[str, Any]:
        return self.inner.settings()


def models_unavailable() -> str | None:
    """Why the models backend cannot run here, or None."""
    if not os.environ.get("REGDPO_DIFFUERASER_REPO"):
        return "REGDPO_DIFFUERASER_REPO (a DiffuEraser checkout) is not set"
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        return f"{exc} (run with the models venv's python)"
    return None


def build_backend(name: str, tmp: str) -> NegativeBackend:
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


def torch_threads(n: int | None) -> int | None:
    """Set torch's intra-op threads (None: leave them); returns the previous count (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    return before


def one_run(backend, backend_name: str, sources, out: Path, nframes: int, resolution: int, masks_per_clip: int,
            overlap: bool) -> dict:
    """One generator run into ``out``; wall s/video and mean stage s/video of the written videos."""
    config = GenerateConfig(output_dir=out, backend=backend_name, nframes=nframes, resolution=resolution,
                            flicker_segments=2, seed=1, progress=False, masks_per_clip=masks_per_clip)
    config.check()
    t0 = time.perf_counter()
    summary = run_generation(config, backend, sources, log=lambda m: None,
                             engine=LocalEngine(backend, overlap=overlap))
    wall = time.perf_counter() - t0
    written = [o.name for o in summary.outcomes if o.status == "written"]
    if not written:
        raise SystemExit(f"bench_overlap: no video written in {out} ({summary.lines()})")
    timings = [fmt.read_video_meta(out, n).timings for n in written]
    return {
        "videos": len(written),
        "wall": wall / len(written),
        "read": float(np.mean([sum(t[k] for k in READ) for t in timings])),
        "compute": float(np.mean([t["negatives"] for t in timings])),
        "write": float(np.mean([t["write"] for t in timings])),
    }


def figures(serial: dict, overlapped: dict) -> dict:
    """The derived figures of one mode (see the module docstring)."""
    stages = [serial["read"], serial["compute"], serial["write"]]
    n = serial["videos"]
    ideal = (sum(stages) - max(stages)) * (n - 1) / n
    saved = serial["wall"] - overlapped["wall"]
    return {
        "videos": n,
        "serial_wall": serial["wall"],
        "overlapped_wall": overlapped["wall"],
        "read": serial["read"],
        "compute": serial["compute"],
        "write": serial["write"],
        "compute_overlapped": overlapped["compute"],
        "write_overlapped": overlapped["write"],
        "max_compute_write": max(serial["compute"], serial["write"]),
        "compute_plus_write": serial["compute"] + serial["write"],
        "speedup": serial["wall"] / overlapped["wall"],
        "hidden": saved / ideal if ideal > 0 else float("nan"),
        "idle_serial": serial["wall"] - serial["compute"],
        "idle_overlapped": overlapped["wall"] - overlapped["compute"],
        "hidden_of_min": saved / min(serial["compute"], serial["write"]),
    }


def mean_row(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) if k != "videos" else rows[0][k] for k in rows[0]}


def bench_backend(name: str, args, sources, tmp: str, log) -> dict:
    """Every mode of one backend: {mode: figures}."""
    d = DEFAULTS[name]
    resolution, masks_per_clip = args.resolution or d["resolution"], args.masks_per_clip or d["masks_per_clip"]
    work = expand_masks(sources, masks_per_clip)
    backend = build_backend(name, tmp)
    run = lambda b, label, overlap: one_run(b, name, work, Path(tmp) / f"{name}-{label}", args.nframes,  # noqa: E731
                                            resolution, masks_per_clip, overlap)
    out: dict[str, Any] = {"resolution": resolution, "masks_per_clip": masks_per_clip, "modes": {}}
    try:
        one_run(backend, name, work[:1], Path(tmp) / f"{name}-warmup", args.nframes, resolution, masks_per_clip,
                False)
        default_threads = torch_threads(None)
        for mode in args.modes:
            if mode == "real-1thread" and name != "models":
                continue  # classical compute is numpy + OpenCV on one thread already
            threads = 1 if mode == "real-1thread" else default_threads
            torch_threads(threads)
            b = backend
            if mode == "simulated-gpu":
                b = SimulatedGPUBackend(backend)
                run(b, "record", False)  # records the real result and compute seconds of every video
            rows: dict[str, list[dict]] = {"serial": [], "overlapped": []}
            for r in range(args.repeats):
                for label, overlap in (("serial", False), ("overlapped", True)):
                    rows[label].append(run(b, f"{mode}-{label}{r}", overlap))
            torch_threads(default_threads)
            out["modes"][mode] = {"torch_threads": threads, **figures(mean_row(rows["serial"]),
                                                                      mean_row(rows["overlapped"]))}
            log(f"  {name} {mode}: done")
    finally:
        backend.close()
    return out


def print_table(results: dict) -> None:
    head = (f"{'backend':<10} {'mode':<14} {'serial':>7} {'overlap':>7} {'read':>6} {'compute':>7} {'write':>6} "
            f"{'cmp/ovl':>7} {'max(c,w)':>8} {'c+w':>6} {'speedup':>7} {'hidden':>6} {'idle':>6} {'idle/ovl':>8}")
    print(head)
    for name, r in results["backends"].items():
        if "skipped" in r:
            print(f"{name:<10} skipped: {r['skipped']}")
            continue
        for mode, f in r["modes"].items():
            print(f"{name:<10} {mode:<14} {f['serial_wall']:>7.3f} {f['overlapped_wall']:>7.3f} {f['read']:>6.3f} "
                  f"{f['compute']:>7.3f} {f['write']:>6.3f} {f['compute_overlapped']:>7.3f} "
                  f"{f['max_compute_write']:>8.3f} {f['compute_plus_write']:>6.3f} {f['speedup']:>6.2f}x "
                  f"{f['hidden']:>6.2f} {f['idle_serial']:>6.3f} {f['idle_overlapped']:>8.3f}")
    print("s/video; read/compute/write of the serial run, cmp/ovl = compute s/video in the overlapped run; "
          "hidden = (serial - overlapped) / ((read+compute+write - max) * (N-1)/N), 1.0 = all but the slowest "
          "stage hidden; idle = wall - compute, the time the backend (the GPU) waits per video, serial / overlapped "
          "(within one run; when write << compute, hidden is dominated by the compute's run-to-run variation, idle "
          "is not)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=(*BACKENDS, "all"), default="all",
                        help="default: all (models skipped, with the reason, when it cannot run here)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data")
    parser.add_argument("--nframes", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=None,
                        help="short side (default: 256 classical, 128 models)")
    parser.add_argument("--masks_per_clip", type=int, default=None,
                        help="entries per fixture clip (default: 4 classical, 1 models)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    davis, ytvos = args.data / "DAVIS", args.data / "YTBV"
    if not davis.is_dir() and not ytvos.is_dir():
        parser.error(f"--data {args.data}: no DAVIS/ or YTBV/ folder (the fixtures)")
    sources = discover_sources(davis if davis.is_dir() else None, None, ytvos if ytvos.is_dir() else None,
                               "train", None, 30.0)
    names = BACKENDS if args.backend == "all" else (args.backend,)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "nframes": args.nframes,
                               "repeats": args.repeats, "clips": [s.name for s in sources], "backends": {}}
    with MachineLoad() as load, tempfile.TemporaryDirectory(prefix="regdpo_overlap_") as tmp:
        for name in names:
            why = models_unavailable() if name == "models" else None
            if why:
                results["backends"][name] = {"skipped": why}
                continue
            log(f"bench_overlap: {name} ...")
            results["backends"][name] = bench_backend(name, args, sources, tmp, log)
    results["machine"] = load.summary()
    results["load_average"] = [load.load_before, load.load_after]
    print(f"bench_overlap: {len(sources)} fixture clips of {args.data}, {args.nframes} frames, "
          f"{args.repeats} repeat(s), {os.cpu_count()} CPUs; " +
          "; ".join(f"{n}: {r['modes'][next(iter(r['modes']))]['videos']} videos at short side {r['resolution']}"
                    for n, r in results["backends"].items() if "modes" in r and r["modes"]))
    print_table(results)
    print(results["machine"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
