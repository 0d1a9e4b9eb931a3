"""Shards from the environment: SLURM job arrays, srun tasks, torchrun ranks (regdpo.generate.shards)."""

import os
import subprocess
import sys

import pytest

from regdpo.errors import UsageError
from regdpo.generate.shards import ShardChoice, device_for, resolve_shard
from helpers import DATA, REPO, needs_data
from test_generate_shards import flags, output_files

SCHEDULER_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
                  "SLURM_ARRAY_TASK_STEP", "SLURM_PROCID", "SLURM_NTASKS", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                  "LOCAL_WORLD_SIZE")


def array(task_id, count, low, step=None):
    env = {"SLURM_ARRAY_TASK_ID": str(task_id), "SLURM_ARRAY_TASK_COUNT": str(count), "SLURM_ARRAY_TASK_MIN": str(low)}
    return env | ({"SLURM_ARRAY_TASK_STEP": str(step)} if step else {})


@pytest.mark.parametrize("env, expected", [
    ({}, (1, 0)),
    (array(1, 4, 1), (4, 0)),
    (array(4, 4, 1), (4, 3)),  # arrays starting at 1
    (array(12, 3, 10), (3, 2)),  # any offset; %K throttling sets no variable
    (array(5, 3, 1, step=2), (3, 2)),  # --array=1-5:2
    ({"SLURM_PROCID": "2", "SLURM_NTASKS": "3"}, (3, 2)),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, (1, 0)),  # one srun task: no shards
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, (2, 1)),
    ({"RANK": "5", "WORLD_SIZE": "8", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, (8, 5)),  # torchrun per node
    (array(2, 2, 1) | {"SLURM_PROCID": "1", "SLURM_NTASKS": "3"}, (6, 4)),  # array task 1 of 2, task 1 of 3
])
def test_shard_from_the_environment(env, expected):
    choice = resolve_shard(None, None, env)
    assert (choice.num_shards, choice.shard_index) == expected
    assert (choice.origin is None) == (expected == (1, 0))


def test_flags_win_and_name_no_origin():
    choice = resolve_shard(3, 1, array(1, 4, 1) | {"RANK": "0", "WORLD_SIZE": "2"})
    assert (choice.num_shards, choice.shard_index, choice.origin) == (3, 1, None)
    assert resolve_shard(2, None, {}).shard_index == 0


@pytest.mark.parametrize("num_shards, shard_index, env, message", [
    (None, 1, {}, "--shard_index needs --num_shards"),
    (None, None, {"RANK": "0"}, "RANK is set but WORLD_SIZE is not"),
    (None, None, {"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is not between 0 and WORLD_SIZE=2 - 1"),
    (None, None, {"SLURM_ARRAY_TASK_ID": "3"}, "without SLURM_ARRAY_TASK_COUNT"),
    (None, None, array(9, 3, 1), "cannot be mapped"),  # --array=1,4,9
    (None, None, array(4, 3, 1, step=2), "cannot be mapped"),
    (None, None, {"RANK": "0", "WORLD_SIZE": "3", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, "do not fit together"),
    (None, None, {"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two' is not a whole number"),
])
def test_contradictions_are_clear_errors(num_shards, shard_index, env, message):
    with pytest.raises(UsageError, match=message):
        resolve_shard(num_shards, shard_index, env)


def test_local_rank_picks_the_cuda_device_unless_given():
    choice = resolve_shard(None, None, {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert device_for(None, choice) == "cuda:1" and device_for("cpu", choice) == "cpu"
    assert device_for(None, ShardChoice()) == "cuda"
    assert choice.message("cuda:1") == ("shard 3 of 4 from the environment (RANK=3 of WORLD_SIZE=4); "
                                        "device cuda:1 from LOCAL_RANK=1")


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in SCHEDULER_VARS}
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env | extra


@needs_data
def test_environment_shards_give_the_bytes_of_an_unsharded_run(tmp_path):
    whole = tmp_path / "whole"
    common = ["--max_videos", 4, "--neg_types", "blur", "flicker"]
    subprocess.run([sys.executable, "-m", "regdpo", "generate", *flags(whole, *common)], cwd=REPO, check=True,
                   env=_clean_env(), capture_output=True)
    kinds = {
        "array": [array(k, 2, 1) for k in (1, 2)],  # --array=1-2
        "srun": [{"SLURM_PROCID": str(k), "SLURM_NTASKS": "2"} for k in (0, 1)],
        "torchrun": [{"RANK": str(k), "WORLD_SIZE": "2", "LOCAL_RANK": str(k)} for k in (0, 1)],
    }
    procs = {}
    for kind, envs in kinds.items():
        for k, extra in enumerate(envs):
            procs[kind, k] = subprocess.Popen(
                [sys.executable, "-m", "regdpo", "generate", *flags(tmp_path / kind, *common)], cwd=REPO,
                env=_clean_env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {key: (p.communicate(timeout=300), p.returncode) for key, p in procs.items()}
    for (kind, k), ((_, stderr), rc) in results.items():
        assert rc == 0, stderr
        first = stderr.splitlines()[0]
        assert first.startswith(f"regdpo generate: shard {k} of 2 from the environment ("), first
    assert "SLURM_ARRAY_TASK_ID=2 - SLURM_ARRAY_TASK_MIN=1 of SLURM_ARRAY_TASK_COUNT=2" in results["array", 1][0][1]
    assert "device cuda:1 from LOCAL_RANK=1" in results["torchrun", 1][0][1]
    reference = output_files(whole)
    for kind in kinds:
        assert output_files(tmp_path / kind) == reference, kind


@needs_data
def test_a_contradictory_environment_stops_before_any_video(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-m", "regdpo", "generate", *flags(out)], cwd=REPO, text=True,
                          env=_clean_env(RANK="4", WORLD_SIZE="2"), capture_output=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "regdpo generate: error: environment: RANK=4 is not between 0 and WORLD_SIZE=2 - 1"]
    assert not out.exists()
