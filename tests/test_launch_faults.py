"""`regdpo launch` under faults (issue 18, items 5 and 16): its progress in a file is plain lines (no carriage
return), its workers die with it when it is killed with -9, and a relaunch names what still runs in the folder.
CPU workers on small frame folders (no fixtures needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO
from test_reliability_inputs import write_frames

from regdpo import format as fmt

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux only")


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    e["PYTHONPATH"] = str(REPO / "src")
    return e


def launch(src: Path, out: Path, *extra: str, progress: bool = False) -> list[str]:
    return [sys.executable, "-m", "regdpo", "launch", "--gpus", "0,1", *([] if progress else ["--no_progress"]),
            "--", "--video_root", str(src), "--output_dir", str(out), "--nframes", "4", "--resolution", "96",
            "--fps", "30", "--no_progress", *extra]


def sources(folder: Path, n: int, frames: int = 6, size: int = 96) -> Path:
    for k in range(n):
        write_frames(folder / f"c{k:02d}", n=frames, size=size)
    return folder


def generators_writing_into(out: Path) -> list[int]:
    """Pids of the `regdpo generate` processes whose command line names ``out`` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"generate" in argv and os.fsencode(str(out)) in argv:
            pids.append(int(entry.name))
    return pids


def test_launch_into_a_file_draws_no_carriage_returns(tmp_path):
    src = sources(tmp_path / "src", 4)
    log = tmp_path / "log"
    with open(log, "w") as stderr:
        proc = subprocess.run(launch(src, tmp_path / "out", progress=True), cwd=tmp_path, env=env(),
                              stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300)
    assert proc.returncode == 0, log.read_text()
    text = log.read_bytes()
    assert b"\r" not in text, text
    lines = text.decode().splitlines()
    assert lines[0] == "launch: 0/4 videos (0 %), 0.0 s" and lines[-1].startswith("launch: 4/4 videos (100 %)"), lines


def test_launch_killed_with_9_takes_its_workers_and_resume_finishes(tmp_path):
    src = sources(tmp_path / "src", 40, frames=8, size=128)
    out = tmp_path / "out"
    argv = launch(src, out, "--resolution", "128")
    launcher = subprocess.Popen(argv, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob("*/meta.json")):
            time.sleep(0.05)
        workers = generators_writing_into(out)
        assert len(workers) == 2 and launcher.poll() is None, "the workers should be running"
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and generators_writing_into(out):
            time.sleep(0.1)
        assert generators_writing_into(out) == [], "workers outlived their launcher (killed with -9)"
    finally:
        for pid in generators_writing_into(out):
            os.kill(pid, signal.SIGKILL)
    assert len(list(out.glob("*/meta.json"))) < 40  # stopped mid-run
    proc = subprocess.run(argv + ["--resume"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "manifest: " in proc.stdout and "(40 videos" in proc.stdout, proc.stdout


def test_a_relaunch_names_what_still_runs(tmp_path):
    """A worker of an earlier launch (here: a process holding shard 1's lock, as a surviving worker does) makes
    the relaunch stop before it starts anything, naming the process, not a bare "shard already running"."""
    src = sources(tmp_path / "src", 2)
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom regdpo.writer import output_lock\n"
         "with output_lock(sys.argv[1], 'shard-1-of-2'):\n    print('held', flush=True)\n    time.sleep(120)\n",
         str(out)], env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run(launch(src, out, "--resume"), cwd=tmp_path, env=env(), capture_output=True, text=True,
                              timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"regdpo launch: error: {out}: still running there: shard 1 of 2 (pid {holder.pid}, since "), line
    assert "stop it (kill PID)" in line
    assert not (out / fmt.LOGS_DIR).exists()  # nothing started
