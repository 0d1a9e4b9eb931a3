"""`regdpo launch`: one generate worker per "GPU" (CPU backend here), one manifest, a clean stop."""

import os
import signal
import subprocess
import sys
import time

import pytest

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from regdpo.errors import UsageError
from regdpo.launch import parse_gpus, worker_shards, worst_status
from helpers import DATA, REPO, needs_data
from test_generate_env_shards import _clean_env
from test_generate_shards import flags, output_files


def test_worker_shards_split_the_launchers_shard():
    assert worker_shards(1, 0, 2) == [(2, 0), (2, 1)]
    shards = worker_shards(3, 1, 2)  # launcher = shard 1 of 3 (e.g. a SLURM array task), two GPUs
    assert shards == [(6, 1), (6, 4)]
    videos = range(40)
    assert sorted(i for n, k in shards for i in videos if i % n == k) == [i for i in videos if i % 3 == 1]


def test_worst_status():
    assert worst_status([0, 0]) == 0
    assert worst_status([0, 1]) == 1
    assert worst_status([1, 2, 0]) == 2
    assert worst_status([0, -signal.SIGKILL]) == 128 + signal.SIGKILL
    assert worst_status([130, 1]) == 130


@pytest.mark.parametrize("text, message", [("", "at least one"), ("0,0", "listed twice"), ("0,x", "not a GPU")])
def test_bad_gpus(text, message):
    with pytest.raises(UsageError, match=message):
        parse_gpus(text)


def test_refused_flags(tmp_path, capsys):
    assert regdpo_main(["launch", "--gpus", "0,1", "--", "--output_dir", str(tmp_path / "o"), "--overwrite"]) == 2
    assert "--overwrite: the workers run side by side" in capsys.readouterr().err
    assert regdpo_main(["launch", "--gpus", "0,1", "--", "--output_dir", str(tmp_path / "o"), "--device",
                        "cuda:1"]) == 2
    assert "give the GPUs with --gpus" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def launch(out, *extra, gpus="0,1"):
    return [sys.executable, "-m", "regdpo", "launch", "--gpus", gpus, "--no_progress", "--", *flags(out, *extra)]


@needs_data
def test_two_workers_give_the_bytes_of_one_process(tmp_path):
    whole, launched = tmp_path / "whole", tmp_path / "launched"
    assert regdpo_main(["generate", *flags(whole)]) == 0
    proc = subprocess.run(launch(launched), cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = output_files(launched)
    logs = {k: v for k, v in files.items() if k.startswith(fmt.LOGS_DIR + "/")}
    assert sorted(logs) == ["_logs/worker-0.log", "_logs/worker-1.log"]
    for g in (0, 1):
        header = logs[f"_logs/worker-{g}.log"].decode().splitlines()[0]
        assert f"CUDA_VISIBLE_DEVICES={g} " in header and f"--num_shards 2 --shard_index {g}" in header
    assert {k: v for k, v in files.items() if k not in logs} == output_files(whole)
    assert "manifest: " in proc.stdout and "(5 videos, 15 pairs, 0 failed)" in proc.stdout
    # --overwrite deletes the logs with the rest: they are regdpo's
    assert regdpo_main(["generate", *flags(launched, "--overwrite", "--max_videos", 1)]) == 0
    assert not (launched / fmt.LOGS_DIR).exists()


@needs_data
def test_sigterm_stops_every_worker_and_leaves_a_resumable_folder(tmp_path):
    videos = tmp_path / "videos"
    # twenty sources (hard links of one DAVIS sequence): a stopped worker still writes the videos it has
    # already decoded or computed (up to three in flight with the overlapped loop), so with fewer sources
    # both workers could legitimately finish everything after the first commit
    for k in range(20):
        folder = videos / f"clip{k}"
        folder.mkdir(parents=True)
        for frame in (DATA / "DAVIS" / "JPEGImages" / "480p" / "tennis").iterdir():
            os.link(frame, folder / frame.name)
    extra = ["--video_root", videos, "--nframes", 12, "--resolution", 192]
    whole, launched = tmp_path / "whole", tmp_path / "launched"
    assert regdpo_main(["generate", *flags(whole, *extra)]) == 0
    proc = subprocess.Popen(launch(launched, *extra), cwd=REPO, env=_clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(launched.glob("*/meta.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=200)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr
    for g in (0, 1):  # each worker was stopped, not left running: it said so in its log and exited
        assert "exit 130" in stdout.splitlines()[g] or "exit 0" in stdout.splitlines()[g], stdout
    finished = [p.parent.name for p in launched.glob("*/meta.json")]
    assert 0 < len(finished) < 20, finished  # stopped mid-run
    assert all((launched / n / fmt.META_FILE).is_file() for n in os.listdir(launched) if n.startswith("video_"))
    staging = launched / fmt.STAGING_DIR
    assert not staging.exists() or not [p for p in staging.rglob("*") if p.is_file()]
    resumed = subprocess.run(launch(launched, *extra, "--resume"), cwd=REPO, env=_clean_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    files = {k: v for k, v in output_files(launched).items() if not k.startswith(fmt.LOGS_DIR + "/")}
    assert files == output_files(whole)
