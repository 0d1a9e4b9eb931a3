"""Watching a training run: --report_to (accelerate's trackers) and validation while training.

The runs use the real DiffuEraser classes with tiny random weights (as tests/test_train_contract.py) and
skip without a checkout (``REGDPO_DIFFUERASER_REPO``), the ``[models]`` extra and torchvision; the
TensorBoard run also needs ``tensorboard`` or ``tensorboardX``. The flag checks run everywhere."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from model_fixtures import DE_REPO, needs_diffueraser, run_flags, run_train, tiny_case
from regdpo.train import tracking

NFRAMES, SIZE = 4, 64
needs_training = needs_diffueraser("accelerate")


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
def tiny(tiny_weights, tmp_path_factory):
    return tiny_case(tiny_weights, tmp_path_factory, "tiny_monitor", neg_types=("blur",))


def run_script(tiny, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_train(tiny.paths, "--dpo_data_root", tiny.data, "--output_dir", out, *run_flags(NFRAMES, SIZE),
                     "--checkpointing_steps", "100", *extra)


@needs_training
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


# ---------------------------------------------------------------------- validation while training


def test_validation_flags_are_checked_before_any_model_loads(tmp_path, capsys):
    from regdpo.train.loop import main

    common = ["--base_model_name_or_path", str(tmp_path), "--vae_path", str(tmp_path), "--diffueraser_path",
              str(tmp_path), "--dpo_data_root", str(tmp_path), "--output_dir", str(tmp_path / "out")]
    assert main([*common, "--validation_steps", "5"]) == 2
    assert "--validation_steps needs --validation_set" in capsys.readouterr().err
    assert main([*common, "--validation_set", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--validation_set {tmp_path}: no evalset.json there" in err
    assert "--validation_set needs --propainter_model_dir" in err and "--validation_set needs --pcm_weights_path" in err
    assert not (tmp_path / "out").exists()


def test_validation_record_and_warning():
    from regdpo.train.validation import VALIDATION_METRICS, validation_record, warning_line

    ref = {k: 1.0 for k in VALIDATION_METRICS}
    ref["hole_psnr"] = 25.0
    same = validation_record(0, "reference", "dev", ["a", "b"], 0, ref, ref, 1.5)
    assert same == {"step": 0, "validation": {"model": "reference", "split": "dev", "clips": ["a", "b"], "seed": 0,
                                              "metrics": ref, "reference": ref,
                                              "delta": {k: 0.0 for k in VALIDATION_METRICS},
                                              "below_reference": False, "seconds": 1.5}}
    assert warning_line(same) is None
    worse = validation_record(10, "trained", "dev", ["a", "b"], 0, {**ref, "hole_psnr": 24.5}, ref, 1.0)
    assert worse["validation"]["below_reference"] and worse["validation"]["delta"]["hole_psnr"] == -0.5
    assert warning_line(worse).startswith("WARNING: step 10: the dev hole_psnr (24.500 dB over 2 clip(s)) is below "
                                          "the reference model's (25.000 dB)")
    better = validation_record(10, "trained", "dev", ["a"], 0, {**ref, "hole_psnr": 26.0}, ref, 1.0)
    assert not better["validation"]["below_reference"] and warning_line(better) is None
    counted = validation_record(0, "reference", "dev", ["a", "b"], 0, ref, ref, 1.5, {"computed": 2, "reused": 0})
    assert counted == {"step": 0, "validation": {**same["validation"], "priors": {"computed": 2, "reused": 0}}}


def test_copy_weights_goes_under_lora_adapters():
    import torch

    from regdpo.train.validation import base_state_keys, copy_weights

    class Wrapped(torch.nn.Module):  # a peft-style LoRA wrapper: base_layer + adapters
        def __init__(self):
            super().__init__()
            self.base_layer = torch.nn.Linear(3, 2)
            self.lora_A = torch.nn.ModuleDict({"default": torch.nn.Linear(3, 1, bias=False)})

    target = torch.nn.Sequential()
    target.add_module("proj", Wrapped())
    target.add_module("norm", torch.nn.LayerNorm(2))
    trained = torch.nn.Sequential()
    trained.add_module("proj", torch.nn.Linear(3, 2))
    trained.add_module("norm", torch.nn.LayerNorm(2))
    torch.nn.init.normal_(trained.norm.weight)
    assert base_state_keys(list(target.state_dict())) == {"proj.weight": "proj.base_layer.weight",
                                                          "proj.bias": "proj.base_layer.bias",
                                                          "norm.weight": "norm.weight", "norm.bias": "norm.bias"}
    lora = target.proj.lora_A["default"].weight.clone()
    copy_weights(target.half(), trained.state_dict())
    assert torch.equal(target.proj.base_layer.weight, trained.proj.weight.half())
    assert torch.equal(target.norm.weight, trained.norm.weight.half())
    assert torch.equal(target.proj.lora_A["default"].weight, lora.half())  # the adapter stays
    with pytest.raises(ValueError, match="does not match"):
        copy_weights(target, {"proj.weight": trained.proj.weight})


@pytest.fixture(scope="module")
def dev_evalset(tiny):
    from regdpo.audit.synthetic import textured_clip
    from regdpo.cli import main
    from regdpo.frames import write_rgb

    videos = tiny.root / "videos"
    for k in range(2):
        folder = videos / f"src{k}"
        folder.mkdir(parents=True)
        for i, frame in enumerate(textured_clip(6, 136, 136, seed=k + 1)):
            write_rgb(folder / f"{i:05d}.png", frame)
    out = tiny.root / "evalset"
    assert main(["evalset", str(out), "--video_root", str(videos), "--nframes", "4", "--height", "128", "--width",
                 "128", "--split", "dev:2", "--no_progress"]) == 0
    return out


@needs_training
def test_validation_lines_appear_in_metrics_jsonl_and_equal_regdpo_eval(tiny, dev_evalset):
    p = tiny.paths
    out = tiny.root / "validated"
    models = ["--propainter_model_dir", p["propainter_model_dir"], "--pcm_weights_path", p["pcm_weights_path"],
              "--propainter_resize_ratio", "1.0", "--propainter_raft_iter", "1"]
    tensorboard = any(importlib.util.find_spec(n) for n in ("tensorboard", "tensorboardX"))
    proc = run_script(tiny, out, "--max_train_steps", "3", "--validation_set", str(dev_evalset),
                      "--validation_steps", "2", "--validation_clips", "1", *models, *(["--report_to", "tensorboard"] if tensorboard else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "validation" not in r] == [1, 2, 3]
    checks = [r for r in lines if "validation" in r]
    assert [(r["step"], r["validation"]["model"]) for r in checks] == [(0, "reference"), (2, "trained"),
                                                                        (3, "trained")]
    reference = checks[0]["validation"]["metrics"]
    for r in checks:
        v = r["validation"]
        assert v["split"] == "dev" and len(v["clips"]) == 1 and v["seed"] == 7 and v["reference"] == reference
        for key in ("hole_psnr", "hole_ssim", "hole_temporal_deviation"):
            assert isinstance(v["metrics"][key], float)
        assert ("WARNING: step %d:" % r["step"] in proc.stderr) == v["below_reference"]
    assert checks[0]["validation"]["delta"]["hole_psnr"] == 0
    # each dev clip's ProPainter prior computed once, at the reference scoring, and reused by every later one
    assert [r["validation"]["priors"] for r in checks] == [{"computed": 1, "reused": 0},
                                                          {"computed": 0, "reused": 1}, {"computed": 0, "reused": 1}]
    assert checks[2]["validation"]["metrics"] != reference  # the trained weights reached the validation pipeline
    if tensorboard:
        data = b"".join(f.read_bytes() for f in (out / "logs").rglob("events.out.tfevents.*"))
        assert b"validation/hole_psnr" in data and b"validation/delta_hole_psnr" in data

    # the last validation equals `regdpo eval` of the saved weights (same seed, same clips, same inference)
    from regdpo.cli import main

    report = tiny.root / "eval_final"
    assert main(["eval", str(dev_evalset), "--split", "dev", "--seed", "7", "--backend", "models",
                 "--model", f"final={out}", "--base_model_path", p["base_model_path"], "--vae_path", p["vae_path"],
                 "--pcm_weights_path", p["pcm_weights_path"], "--propainter_model_dir", p["propainter_model_dir"],
                 "--propainter_resize_ratio", "1.0", "--propainter_raft_iter", "1", "--device", "cpu",
                 *(["--diffueraser_repo", DE_REPO] if DE_REPO else []), "--output_dir", str(report),
                 "--no_progress", "--no_html"]) == 0
    (row,) = [c for c in json.loads((report / "eval.json").read_text())["clips"]
              if c["name"] == checks[2]["validation"]["clips"][0]]
    for key in ("hole_psnr", "hole_ssim", "hole_temporal_deviation"):
        assert row["final"][key] == pytest.approx(checks[2]["validation"]["metrics"][key], abs=1e-4)


def test_validator_reuses_each_prior_with_the_scores_of_a_fresh_computation(tiny, dev_evalset):
    """Two scorings: the second computes no prior (ProPainter freed after the first) and both equal a scoring
    whose prior the models backend computes itself."""
    import numpy as np

    from regdpo.backends.base import Clip
    from regdpo.backends.models import ModelsBackend
    from regdpo.backends.models_config import ModelsConfig
    from regdpo.evaluation.metrics import PixelMetrics, split_values
    from regdpo.evaluation.runner import clip_seed
    from regdpo.frames import composite
    from regdpo.train.validation import Validator, mean_scores

    config = ModelsConfig(**tiny.paths, diffueraser_repo=DE_REPO, device="cpu", diffueraser_nframes=4,
                          propainter_resize_ratio=1.0, propainter_raft_iter=1, oom_retry="off")
    validator = Validator(str(dev_evalset), "dev", 1, config, seed=3)
    try:
        first, _ = validator.score()
        assert validator.last_priors == {"computed": 1, "reused": 0} and validator.priors.compute.runner is None
        second, _ = validator.score()
        assert validator.last_priors == {"computed": 0, "reused": 1} and validator.priors.compute.loads == 1
        (clip,) = validator.clips
    finally:
        validator.close()
    backend = ModelsBackend(config)
    try:
        raw = backend.generate(Clip(clip.name, clip.gt, clip.hole, clip_seed(3, clip.name)), ["inpaint"])
    finally:
        backend.close()
    output = composite(np.asarray(raw.negatives["inpaint"]), clip.gt, clip.hole)
    fresh = mean_scores([split_values(PixelMetrics().measure(clip.gt, output, clip.hole))[0]])
    assert first == second == fresh and isinstance(fresh["hole_psnr"], float)
