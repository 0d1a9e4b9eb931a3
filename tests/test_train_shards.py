"""train_region_reg_dpo.py --dpo_shards on the real DiffuEraser classes with tiny weights (CPU): the run
reads the packed dataset, its checkpoints carry the data position, a resumed run goes on with the rest of
the epoch (the same step as an uninterrupted run), a damaged shard is skipped and counted.

Needs what tests/test_train_contract.py needs (REGDPO_DIFFUERASER_REPO, the [models] extra); skips otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from model_fixtures import run_flags, run_train, tiny_case, training_marks

pytestmark = training_marks("webdataset")


@pytest.fixture(scope="module")
def tiny(tiny_weights, tmp_path_factory):
    from regdpo.cli import main as regdpo_main

    tiny = tiny_case(tiny_weights, tmp_path_factory, "tiny_shards",
                     videos=(("clip_a", 7), ("clip_b", 6), ("clip_c", 6)), neg_types=("blur", "hallucination"))
    tiny.packed = tiny.root / "packed"
    assert regdpo_main(["pack", str(tiny.data), str(tiny.packed), "--shard_size", "1", "--no_progress"]) == 0
    return tiny


def run(tiny, out: Path, shards, *extra: str) -> subprocess.CompletedProcess:
    return run_train(tiny.paths, "--dpo_shards", shards, "--output_dir", out, *run_flags(batch=1), *extra)


def metrics(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(s).items() if k != "seconds"}
            for s in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_run_on_shards_resumes_mid_epoch_at_its_data_position(tiny):
    import torch

    whole = tiny.root / "whole"
    proc = run(tiny, whole, tiny.packed, "--max_train_steps", "4", "--checkpointing_steps", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(whole / "checkpoint-2" / "custom_checkpoint_0.pkl", weights_only=False)
    assert state["epoch"] == 0 and state["positions"] == {"0/0": [2, 0, 0]}  # 2 of the epoch's 6 pairs consumed
    resumed = tiny.root / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-2", resumed / "checkpoint-2")
    proc = run(tiny, resumed, tiny.packed, "--max_train_steps", "4", "--checkpointing_steps", "2",
               "--resume_from_checkpoint", "latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in metrics(resumed)] == [3, 4]
    # it went on from position 2 (a restart of the epoch would stand at 2 again), as the uninterrupted run did
    again = torch.load(resumed / "checkpoint-4" / "custom_checkpoint_0.pkl", weights_only=False)
    assert again == torch.load(whole / "checkpoint-4" / "custom_checkpoint_0.pkl", weights_only=False)
    assert again["positions"] == {"0/0": [4, 0, 0]}
    assert metrics(whole)[0]["data_skipped_pairs"] == 0


def test_a_damaged_shard_is_skipped_counted_and_the_run_goes_on(tiny):
    damaged = tiny.root / "damaged"
    shutil.copytree(tiny.packed, damaged)
    shard = damaged / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    out = tiny.root / "damaged_run"
    proc = run(tiny, out, damaged, "--max_train_steps", "3", "--checkpointing_steps", "100")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shard-000001.tar" in proc.stderr and "Traceback" not in proc.stderr
    lines = metrics(out)
    assert [r["step"] for r in lines] == [1, 2, 3]  # 4 readable pairs a epoch: the run goes on
    skipped = [r["data_skipped_pairs"] for r in lines]  # so far this epoch: the sample's 2 pairs as they come
    assert skipped == sorted(skipped) and 1 <= skipped[-1] <= 2 and lines[-1]["data_damaged_shards"] >= 1
    assert sorted(p.name for p in damaged.iterdir()) == sorted(p.name for p in tiny.packed.iterdir())
