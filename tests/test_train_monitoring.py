"""Watching a training run: --report_to (accelerate's trackers) and validation while training.

The runs use the real DiffuEraser classes with tiny random weights (as tests/test_train_contract.py) and
skip without a checkout (``REGDPO_DIFFUERASER_REPO``), the ``[models]`` extra and torchvision; the
TensorBoard run also needs ``tensorboard`` or ``tensorboardX``. The flag checks run everywhere."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import REPO as REPO_ROOT
from helpers import diffueraser_skip_reason, write_pair_dataset
from regdpo.train import tracking

DE_REPO = os.environ.get("REGDPO_DIFFUERASER_REPO") or None
NFRAMES, SIZE = 4, 64


def _reason() -> str | None:
    return diffueraser_skip_reason(DE_REPO, ("accelerate",))


# ---------------------------------------------------------------------- flags (no models needed)


def test_report_to_names_the_missing_package(monkeypatch):
    assert tracking.report_to_problem("none") is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert tracking.report_to_problem("tensorboard") == ("--report_to tensorboard: the tensorboard or tensorboardX "
                                                         "package is not installed (pip install tensorboard)")
    assert tracking.report_to_problem("wandb") == ("--report_to wandb: the wandb package is not installed "
                                                   "(pip install wandb)")


def test_report_to_without_its_package_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from regdpo.train.loop import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    rc = main(["--base_model_name_or_path", str(tmp_path), "--vae_path", str(tmp_path), "--diffueraser_path",
               str(tmp_path), "--dpo_data_root", str(tmp_path), "--output_dir", str(tmp_path / "out"),
               "--report_to", "wandb"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "--report_to wandb: the wandb package is not installed (pip install wandb)" in err
    assert not (tmp_path / "out").exists()


def test_tracker_values():
    record = {"step": 3, "loss": 0.5, "implicit_acc": 1, "saturated": False, "note": "x"}
    assert tracking.scalars(record, "train/") == {"train/loss": 0.5, "train/implicit_acc": 1.0,
                                                  "train/saturated": 0.0}
    assert tracking.tracker_config({"a": None, "b": [1], "c": 2, "d": "x", "e": True}) == {"c": 2, "d": "x",
                                                                                           "e": True}


# ---------------------------------------------------------------------- tiny training runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    reason = _reason()
    if reason:
        pytest.skip(reason)
    from regdpo.backends.models_source import import_source
    from regdpo.backends.models_tiny import build_tiny_weights

    root = tmp_path_factory.mktemp("tiny_monitor")
    source = import_source(DE_REPO)
    paths = build_tiny_weights(root / "weights", source)
    data = write_pair_dataset(root / "dpo_data", neg_types=("blur",))
    return SimpleNamespace(root=root, paths=paths, data=data)


def run_script(tiny, out: Path, *extra: str) -> subprocess.CompletedProcess:
    p = tiny.paths
    cmd = [sys.executable, str(REPO_ROOT / "train_region_reg_dpo.py"),
           "--base_model_name_or_path", p["base_model_path"], "--vae_path", p["vae_path"],
           "--diffueraser_path", p["diffueraser_path"], "--dpo_data_root", str(tiny.data),
           "--output_dir", str(out), "--nframes", str(NFRAMES), "--resolution", str(SIZE),
           "--train_batch_size", "2", "--learning_rate", "1e-3", "--seed", "7", "--checkpointing_steps", "100", *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    if DE_REPO:
        env["REGDPO_DIFFUERASER_REPO"] = DE_REPO
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def test_report_to_tensorboard_writes_event_files(tiny):
    if not any(importlib.util.find_spec(n) for n in ("tensorboard", "tensorboardX")):
        pytest.skip("neither tensorboard nor tensorboardX is installed")
    out = tiny.root / "tb"
    proc = run_script(tiny, out, "--max_train_steps", "2", "--report_to", "tensorboard")
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = sorted((out / "logs" / tracking.TRACKER_PROJECT).rglob("events.out.tfevents.*"))
    assert events
    data = b"".join(p.read_bytes() for p in events)
    for tag in (b"train/loss", b"train/implicit_acc", b"train/lr"):
        assert tag in data, tag
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
