"""``regdpo launch``: one generator process per GPU on this machine.

``regdpo launch --gpus 0,1,2,3 -- <generate flags>`` starts one ``regdpo generate`` worker per GPU,
each seeing only its GPU (``CUDA_VISIBLE_DEVICES``) and making one shard of the videos
(``--num_shards`` / ``--shard_index``, so the union is byte-identical to one process). Each worker
writes ``{output_dir}/_logs/worker-K.log``; the launcher shows one progress line for all of them,
rebuilds ``manifest.json`` once at the end and exits with the worst worker's status. Ctrl-C or
SIGTERM stops every worker cleanly (each finishes writing what it has computed and exits); the
folder then resumes with the same command and ``--resume``.

Progress: on a terminal a tqdm bar; in a file or a pipe (a SLURM log) plain lines, one every 30 s at most
(``regdpo.progress.Progress``), never carriage returns. The workers die with the launcher, even when it is
killed with ``kill -9``: on Linux each worker asks the kernel for SIGTERM when its parent dies
(``prctl(PR_SET_PDEATHSIG)``, through ctypes), which it handles like Ctrl-C (the video in progress is abandoned,
``--resume`` finishes the folder). Before it starts any worker, the launcher names what still runs in the
folder (a worker of an earlier launch, a generator: pid, start, command, from the run locks).

When the launcher itself runs as one shard (flags, or a SLURM array / srun task / torchrun rank in
the environment, see ``regdpo.generate.shards``), shard K of N is split again: worker g makes shard
``K + N * g`` of ``N * G``, which is exactly the videos of shard K.

CPU mode: ``regdpo launch --cpu_workers N -- <generate flags>`` starts N workers that see no GPU
(``CUDA_VISIBLE_DEVICES=""``), named ``CPU worker k`` in the log and the summary; the rest is the same.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import format as fmt
from .cli_types import MAX_WORKERS, integer, real
from .errors import UsageError
from .progress import Progress
from .safe_read import read_input_bytes
from .writer import failure_file_name

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_S = 0.5


def configure_parser(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--gpus", help="comma-separated GPU ids, one worker each, e.g. 0,1,2,3 "
                       "(each worker sees its GPU as cuda:0 through CUDA_VISIBLE_DEVICES)")
    where.add_argument("--cpu_workers", type=integer(1, MAX_WORKERS), metavar="N",
                       help="N workers on the CPU instead (they see no GPU: CUDA_VISIBLE_DEVICES=''), e.g. the "
                       "classical backend on a machine without GPUs")
    parser.add_argument("--stop_timeout", type=real(0.0, 7 * 86400.0), default=120.0, metavar="S",
                        help="on Ctrl-C / SIGTERM, "
                        "seconds a worker gets to finish writing before it is killed (default: %(default)s)")
    parser.add_argument("--no_progress", action="store_true", help="no combined progress line")
    parser.add_argument("generate_args", nargs=argparse.REMAINDER, metavar="-- GENERATE_FLAGS",
                        help="the flags of `regdpo generate`, after --")


def parse_gpus(text: str) -> list[str]:
    """``"0,1, 3"`` -> ``["0", "1", "3"]``; ids must be distinct non-negative integers (or UUIDs)."""
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus:
        raise UsageError(f"--gpus {text!r}: give at least one GPU id, e.g. --gpus 0,1")
    if len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus {text!r}: a GPU is listed twice")
    for g in gpus:
        if not (g.isdigit() or g.startswith(("GPU-", "MIG-"))):
            raise UsageError(f"--gpus {text!r}: {g!r} is not a GPU index (or GPU-/MIG- UUID)")
    return gpus


def worker_shards(num_shards: int, shard_index: int, workers: int) -> list[tuple[int, int]]:
    """``(num_shards, shard_index)`` of each worker splitting shard ``shard_index`` of ``num_shards``."""
    return [(num_shards * workers, shard_index + num_shards * g) for g in range(workers)]


def worst_status(codes: Sequence[int]) -> int:
    """The status of the worst worker: a signal (as 128 + N) over usage (2) over failed videos (1) over 0."""
    normal = [128 - c if c < 0 else c for c in codes]
    return max(normal, default=0)


@dataclass
class Worker:
    index: int
    gpu: str  # "" for a CPU worker (--cpu_workers)
    log_path: Path
    process: subprocess.Popen

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def label(self) -> str:
        """``worker 0 (GPU 3)``, or ``CPU worker 0``."""
        return f"worker {self.index} (GPU {self.gpu})" if self.gpu else f"CPU worker {self.index}"


def _generate_args(args: argparse.Namespace) -> list[str]:
    rest = list(args.generate_args)
    if rest and rest[0] == "--":
        rest = rest[1:]
    return rest


def run(args: argparse.Namespace) -> int:
    from .generate import cli as generate_cli
    from .generate.pipeline import check_output_dir
    from .generate.sources import discover_sources
    from .writer import rebuild_manifest
    from .cli import normalize_flag_spelling

    gpus = parse_gpus(args.gpus) if args.gpus is not None else [""] * args.cpu_workers  # "": a CPU worker
    gen_argv = _generate_args(args)
    parser = generate_cli.build_parser()
    parser.prog = "regdpo launch: generate flag"
    gen_argv = normalize_flag_spelling(gen_argv, parser)
    gen_args = parser.parse_args(gen_argv)
    if gen_args.overwrite:
        raise UsageError("--overwrite: the workers run side by side in one folder; delete the folder first, then "
                         "launch (or --resume to finish it)")
    if not gpus[0] and gen_args.device not in (None, "auto", "cpu"):
        raise UsageError(f"--device {gen_args.device}: --cpu_workers run on the CPU (they see no GPU); drop --device "
                         f"or give the GPUs with --gpus")
    if gen_args.device not in (None, "cuda", "auto", "cpu"):
        raise UsageError(f"--device {gen_args.device}: each worker sees its GPU as cuda:0 (CUDA_VISIBLE_DEVICES); "
                         f"give the GPUs with --gpus instead")
    config = generate_cli.config_from_args(gen_args)
    if config.environment_note:
        print(f"regdpo launch: {config.environment_note}", file=sys.stderr, flush=True)
    check_output_dir(config)  # a non-empty folder needs --resume, as for generate (shards always resume)
    root = config.output_dir
    discovered = discover_sources(config.davis_root, config.davis_split, config.ytvos_root, config.ytvos_split,
                                  config.video_root, config.assumed_fps)
    entries = generate_cli.work_list(config, discovered)
    names = [s.name for s in entries]
    clip_of = {s.name: s.clip_name for s in entries if s.mask_index}  # a skipped source's record is entry 0's

    shards = worker_shards(config.num_shards, config.shard_index, len(gpus))
    still_running = running_in(root, shards)
    if still_running:
        raise UsageError(f"{root}: still running there: {'; '.join(still_running)}. A worker of an earlier launch "
                         f"(or another generator) is writing into this folder: wait for it to finish or stop it "
                         f"(kill PID), then run this command again")
    logs = root / fmt.LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    workers = [_start(g, gpu, logs, gen_argv, shard) for g, (gpu, shard) in enumerate(zip(gpus, shards))]
    stopped = _watch(workers, root, names, args, clip_of)
    codes = [w.returncode for w in workers]
    manifest = rebuild_manifest(root)
    d = manifest.to_dict()
    for w, code in zip(workers, codes):
        print(f"{w.label}: exit {code}, log {w.log_path}" + _last_line(w.log_path))
    print(f"manifest: {root / fmt.MANIFEST_FILE} ({d['num_videos']} videos, {d['num_pairs']} pairs, "
          f"{len(d.get('failed', []))} failed)")
    if stopped is not None:
        print(f"regdpo launch: stopped by {signal.Signals(stopped).name}; the finished videos in {root} are kept, "
              f"run the same command with --resume to finish", file=sys.stderr)
        return 128 + stopped
    return worst_status(codes)


def running_in(root: Path, shards: Sequence[tuple[int, int]]) -> list[str]:
    """What holds a run lock of ``root`` that the workers of ``shards`` need: a whole run's ``.lock`` or a shard's
    ``.lock.shard-K-of-N`` (``"shard 1 of 2: pid 1234, since ...: regdpo generate ..."``); empty when free."""
    from .writer import lock_holder

    found = []
    holder = lock_holder(root / fmt.LOCK_FILE)
    if holder:
        found.append(f"a generator without shards ({holder})")
    for num_shards, shard_index in shards:
        holder = lock_holder(root / f"{fmt.LOCK_FILE}.shard-{shard_index}-of-{num_shards}")
        if holder:
            found.append(f"shard {shard_index} of {num_shards} ({holder})")
    return found


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int):
    """A ``preexec_fn``: the child gets SIGTERM when the launcher dies (Linux ``prctl(PR_SET_PDEATHSIG)``), and
    stops at once if the launcher died before that was set (then it is no longer its parent). Elsewhere a
    no-op (see the module docstring)."""
    def preexec() -> None:
        if not sys.platform.startswith("linux"):
            return
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _start(index: int, gpu: str, logs: Path, gen_argv: list[str], shards: tuple[int, int]) -> Worker:
    num_shards, shard_index = shards
    # --resume: the launcher has checked the folder and made _logs/ in it; a worker continues what is there
    # (as every shard does; without it a lone worker, --gpus 0, would refuse the folder the launcher made)
    command = [sys.executable, "-m", "regdpo", "generate", *gen_argv, "--num_shards", str(num_shards),
               "--shard_index", str(shard_index), "--resume", "--no_progress", "--no_manifest"]
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_RANK"}  # the worker's GPU is its cuda:0
    env["CUDA_VISIBLE_DEVICES"] = gpu  # "" (a CPU worker): no GPU visible
    log_path = logs / f"worker-{index}.log"
    log = open(log_path, "a", buffering=1)
    label = f"worker {index}" if gpu else f"CPU worker {index}"
    log.write(f"# regdpo launch {label}: CUDA_VISIBLE_DEVICES={gpu or chr(39) * 2} {' '.join(command)}\n")
    # own session: a Ctrl-C in the terminal reaches the launcher only, which stops the workers in order
    # and a parent-death signal: killed with -9, the launcher takes its workers with it
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                               preexec_fn=_die_with_parent(os.getpid()))
    log.close()
    return Worker(index, gpu, log_path, process)


def _watch(workers: list[Worker], root: Path, names: list[str], args, clip_of: dict[str, str] | None = None) -> int | None:
    """Wait for every worker, showing progress; on a stop signal stop them all. Returns that signal or None."""
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in STOP_SIGNALS}
    bar = Progress(len(names), "launch", "video", enabled=not args.no_progress)  # plain lines when not a terminal
    stop_sent = None
    try:
        while any(w.returncode is None for w in workers):
            if received and stop_sent is None:
                stop_sent = time.monotonic()
                for w in workers:
                    _signal(w, signal.SIGINT)  # KeyboardInterrupt: the worker writes what it computed, exits
            if stop_sent is not None and time.monotonic() - stop_sent > args.stop_timeout:
                for w in workers:
                    _signal(w, signal.SIGKILL)  # committed videos are safe; staging is cleared next run
            _progress(bar, workers, root, names, clip_of)
            time.sleep(POLL_S)
        _progress(bar, workers, root, names, clip_of)
    finally:
        bar.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return received[0] if received else None


def _signal(worker: Worker, signum: int) -> None:
    if worker.returncode is None:
        try:
            os.killpg(worker.process.pid, signum)
        except ProcessLookupError:
            pass


def _progress(bar, workers: list[Worker], root: Path, names: list[str], clip_of: dict[str, str] | None = None) -> None:
    if not bar.enabled:
        return
    clip_of = clip_of or {}

    def recorded(name: str) -> bool:  # (a skipped source's --masks_per_clip entries share entry 0's record)
        return any((root / fmt.FAILED_DIR / failure_file_name(n)).is_file() for n in {name, clip_of.get(name, name)})

    done = sum((root / n / fmt.META_FILE).is_file() for n in names)
    failed = sum(recorded(n) and not (root / n / fmt.META_FILE).is_file() for n in names)
    running = sum(w.returncode is None for w in workers)
    bar.set_postfix_str(f"{done} written, {failed} failed or skipped, {running}/{len(workers)} workers running",
                        refresh=True)
    bar.advance_to(done + failed)


def _last_line(path: Path) -> str:
    try:
        lines = [l for l in read_input_bytes(path, "log").decode(errors="replace").splitlines()
                 if l.strip() and not l.startswith("#")]
    except OSError:
        return ""
    return f": {lines[-1].strip()}" if lines else ""
