"""N CPU workers on the fixtures: `regdpo launch` wall time, videos/s and speed-up versus one worker.

For each N (default 1 .. os.cpu_count()), runs ``regdpo launch --cpu_workers N -- <generate flags>``
into a fresh temporary folder: N ``regdpo generate`` workers, each making one shard of the same work list
(the fixtures' clips, each expanded to ``--masks_per_clip`` entries so every worker has several videos).
The workers see no GPU: the backend runs on the CPU (classical, or the
tiny random-weight models with ``--backend models --device cpu``). Every worker is limited to
``--threads`` compute threads (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` for torch,
``OPENCV_FOR_THREADS_NUM`` for OpenCV; default 1) so N workers do not oversubscribe N cores.

Printed per N: wall seconds of the launch (process start, model load, every video, the manifest),
videos/s, speed-up = wall(1) / wall(N) measured in this one run, cores used (CPU seconds of the
launch and its workers / wall), and whether the output is
byte-identical to the N = 1 folder (every file but the worker logs and run locks; meta.json compared
without its timings). The machine load (``bench/machine.py``) is printed with the figures; ``--json
FILE`` writes them. Exit status 1 when an N's output differs or a launch fails.

Usage (from the repo root)::

    PYTHONPATH=src python bench/bench_workers.py
    REGDPO_DIFFUERASER_REPO=/work/DiffuEraser PYTHONPATH=src /work/venv-models/bin/python \\
        bench/bench_workers.py --backend models --masks_per_clip 1 --resolution 128
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import MachineLoad  # noqa: E402

from regdpo import format as fmt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")
# variables that would make a worker take its shard (or device) from a scheduler's environment
SCHEDULER_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP",
                  "SLURM_PROCID", "SLURM_NTASKS", "RANK", "WORLD_SIZE", "LOCAL_RANK")


def output_digest(root: Path) -> dict[str, str]:
    """sha256 of every file of a dataset folder but worker logs and run locks (meta.json without timings)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or p.name.startswith(fmt.LOCK_FILE) or rel.startswith(fmt.LOGS_DIR + "/"):
            continue
        data = p.read_bytes()
        if p.name == fmt.META_FILE:
            meta = json.loads(data)
            meta.pop("timings", None)
            data = json.dumps(meta, sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def generate_flags(args, out: Path, weights: dict[str, str]) -> list[str]:
    flags = ["--output_dir", str(out), "--nframes", str(args.nframes), "--resolution", str(args.resolution),
             "--masks_per_clip", str(args.masks_per_clip), "--seed", "1", "--backend", args.backend]
    davis, ytvos = args.data / "DAVIS", args.data / "YTBV"
    if davis.is_dir():
        flags += ["--davis_root", str(davis)]
    if ytvos.is_dir():
        flags += ["--ytvos_root", str(ytvos)]
    if args.backend == "models":
        flags += ["--device", "cpu", "--diffueraser_nframes", "4", "--propainter_raft_iter", "2",
                  "--propainter_resize_ratio", "1.0", "--flicker_segments", "2"]  # as bench_overlap
        for k, v in weights.items():
            flags += [f"--{k}", v]
    return flags


def worker_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCHEDULER_VARS}
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update({k: str(threads) for k in THREAD_VARS})
    return env


def launch(n: int, args, out: Path, weights: dict[str, str]) -> dict:
    """One `regdpo launch` with n workers into ``out``: wall seconds, videos, exit status."""
    command = [sys.executable, "-m", "regdpo", "launch", "--cpu_workers", str(n), "--no_progress",
               "--", *generate_flags(args, out, weights)]
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run(command, cwd=REPO, env=worker_env(args.threads), capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    videos = len(list(out.glob(f"*/{fmt.META_FILE}")))
    if proc.returncode != 0:
        failed = sorted((out / fmt.FAILED_DIR).glob("*.json"))
        reason = json.loads(failed[0].read_text()).get("reason") if failed else None
        print(f"bench_workers: launch with {n} workers exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
              + (f"first failure: {reason}\n" if reason else ""), file=sys.stderr)
    return {"workers": n, "wall": wall, "videos": videos, "exit": proc.returncode, "cores_used": cpu / wall}


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (the launcher and, reaped by it, its workers)."""
    t = os.times()
    return t.children_user + t.children_system


def build_weights(backend: str, tmp: str) -> dict[str, str]:
    if backend != "models":
        return {}
    from regdpo.backends.models_source import import_source
    from regdpo.backends.models_tiny import build_tiny_weights

    repo = os.environ.get("REGDPO_DIFFUERASER_REPO")
    if not repo:
        raise SystemExit("bench_workers: --backend models needs REGDPO_DIFFUERASER_REPO (a DiffuEraser checkout)")
    return {"diffueraser_repo": repo, **build_tiny_weights(Path(tmp) / "weights", import_source(repo))}


def run_bench(args) -> dict:
    results: dict = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "backend": args.backend,
                     "nframes": args.nframes, "resolution": args.resolution, "masks_per_clip": args.masks_per_clip,
                     "threads_per_worker": args.threads, "rows": []}
    with MachineLoad() as load, tempfile.TemporaryDirectory(prefix="regdpo_workers_") as tmp:
        weights = build_weights(args.backend, tmp)
        digests = {}
        for n in args.workers:
            out = Path(tmp) / f"workers{n}"
            row = launch(n, args, out, weights)
            digests[n] = output_digest(out)
            results["rows"].append(row)
    first = args.workers[0]
    base = results["rows"][0]["wall"]
    for row in results["rows"]:
        row["videos_per_s"] = row["videos"] / row["wall"]
        row["speedup"] = base / row["wall"]
        row["identical"] = (row["exit"] == 0 and results["rows"][0]["exit"] == 0 and bool(digests[first])
                            and digests[row["workers"]] == digests[first])
    results["machine"] = load.summary()
    results["load_average"] = [load.load_before, load.load_after]
    return results


def main(argv=None) -> int:
    cpus = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=list(range(1, cpus + 1)),
                        help=f"worker counts, the first the reference (default: 1 .. {cpus}, this machine's CPUs)")
    parser.add_argument("--backend", choices=("classical", "models"), default="classical")
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data")
    parser.add_argument("--nframes", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--masks_per_clip", type=int, default=8,
                        help="entries per fixture clip, so each worker has several videos (default: 8)")
    parser.add_argument("--threads", type=int, default=1, help="compute threads per worker (default: 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if any(not 1 <= n <= cpus for n in args.workers):
        parser.error(f"--workers {args.workers}: each count must be between 1 and {cpus} (this machine's CPUs)")
    if not (args.data / "DAVIS").is_dir() and not (args.data / "YTBV").is_dir():
        parser.error(f"--data {args.data}: no DAVIS/ or YTBV/ folder (the fixtures)")
    results = run_bench(args)
    print(f"bench_workers: regdpo launch, {args.backend} backend on the CPU, fixtures of {args.data} "
          f"({args.masks_per_clip} masks per clip), {args.nframes} frames, short side {args.resolution}, "
          f"{args.threads} thread(s) per worker, {cpus} CPUs")
    print(f"{'workers':>7} {'videos':>6} {'wall s':>8} {'videos/s':>8} {'speed-up':>8} {'cores used':>10} "
          f"{'identical':>9}")
    for r in results["rows"]:
        print(f"{r['workers']:>7} {r['videos']:>6} {r['wall']:>8.2f} {r['videos_per_s']:>8.3f} "
              f"{r['speedup']:>7.2f}x {r['cores_used']:>10.2f} {'yes' if r['identical'] else 'NO':>9}")
    print("cores used = CPU seconds of the launch and its workers / wall (a worker can use more than one "
          "core: the writer's PNG encoding runs on its own threads beside the compute)")
    print(results["machine"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    ok = all(r["identical"] and r["exit"] == 0 for r in results["rows"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
