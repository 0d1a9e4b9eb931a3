"""Contract tests of Region-Reg-DPO training (regdpo.train, train_region_reg_dpo.py) on the real
DiffuEraser classes with tiny random weights (``models_tiny``), on CPU.

They need a DiffuEraser checkout (``REGDPO_DIFFUERASER_REPO``), the ``[models]`` extra
(accelerate included) and a working torchvision; otherwise they skip and say why::

    REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser pytest tests/test_train_contract.py
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from model_fixtures import (DE_REPO, load_tiny_modules, make_batch, make_step, run_flags, run_train, subprocess_env,
                            tiny_case, train_command, training_marks)

pytestmark = training_marks()
NFRAMES, SIZE = 4, 64


@pytest.fixture(scope="module")
def tiny(tiny_weights, tmp_path_factory):
    return tiny_case(tiny_weights, tmp_path_factory, "tiny_train", neg_types=("blur", "hallucination"))


@pytest.fixture(scope="module")
def modules(tiny):
    return load_tiny_modules(tiny)


@pytest.fixture(scope="module")
def batch(tiny, modules):
    return make_batch(tiny, modules, NFRAMES, SIZE)


@pytest.mark.parametrize("train_modules", ["motion", "spatial"])
def test_step0_loss_is_ln2(modules, batch, train_modules):
    import torch

    step = make_step(modules, train_modules=train_modules, sft_weight=0.0, anchor_weight=1.0)
    loss, diag = step(batch, torch.Generator().manual_seed(0))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    assert abs(diag["inside_term_mean"].item()) < 1e-4
    assert diag["implicit_acc"].item() == 0.5  # policy == reference: ties, not a random 0 or 1
    assert diag["mse_w"].item() == pytest.approx(diag["ref_mse_w"].item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in step.trainable)
    for p in step.trainable:
        p.grad = None


def test_winner_and_loser_share_posterior_noise_noise_and_timestep(modules, batch):
    """With the loser's pixels equal to the winner's, both sides get bit-identical noisy latents."""
    import torch

    same = dict(batch, pixel_values_neg=batch["pixel_values_pos"].clone())
    step = make_step(modules)
    x = step.inputs(same, torch.Generator().manual_seed(3))
    half = x.noisy.shape[0] // 2
    assert x.noisy.shape[0] == 2 * 2 * NFRAMES  # the doubled batch: 2 pairs x 2 sides x frames
    assert torch.equal(x.noisy[:half], x.noisy[half:]) and torch.equal(x.target[:half], x.target[half:])
    assert torch.equal(x.timesteps[:2], x.timesteps[2:])
    mse_w, mse_l = step.policy_mse(x)
    assert torch.equal(mse_w, mse_l)


def test_condition_mask_channel_is_diffuerasers_interpolation(modules, batch):
    import torch
    import torch.nn.functional as F

    step = make_step(modules)
    x = step.inputs(batch, torch.Generator().manual_seed(0))
    masks = batch["masks"].reshape(-1, 1, SIZE, SIZE)
    expected = F.interpolate(masks, size=(SIZE // 8, SIZE // 8))
    half = x.condition.shape[0] // 2
    assert torch.equal(x.condition[:half, 4:], expected) and torch.equal(x.condition[half:, 4:], expected)


def test_step_is_deterministic_per_seed(modules, batch):
    import torch

    step = make_step(modules)
    a, da = step(batch, torch.Generator().manual_seed(5))
    b, db = step(batch, torch.Generator().manual_seed(5))
    c, _ = step(batch, torch.Generator().manual_seed(6))
    assert a.item() == b.item() and da["mse_l"].item() == db["mse_l"].item()
    assert c.item() != a.item()


def test_spatial_training_changes_brushnet_and_2d_layers_only(tiny):
    import torch

    from regdpo.train.modules import is_motion_parameter

    m = load_tiny_modules(tiny)
    b = make_batch(tiny, m, NFRAMES, SIZE)
    step = make_step(m, train_modules="spatial", loss_form="diff", beta_dpo=2500.0)
    before = {f"u.{n}": p.detach().clone() for n, p in m.unet_main.named_parameters()}
    before |= {f"b.{n}": p.detach().clone() for n, p in m.brushnet.named_parameters()}
    opt = torch.optim.SGD(step.trainable, lr=1e-2)
    loss, _ = step(b, torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    after = {f"u.{n}": p for n, p in m.unet_main.named_parameters()} | {f"b.{n}": p for n, p in m.brushnet.named_parameters()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("b.") for k in changed) and any(k.startswith("u.") for k in changed)
    assert not any(is_motion_parameter(k[2:]) for k in changed)
    # the reference did not move
    for name, ref in step.reference.copies["brushnet"].items():
        assert torch.equal(ref, before[f"b.{name}"])


def run_script(tiny, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_train(tiny.paths, "--dpo_data_root", tiny.data, "--output_dir", out, *run_flags(NFRAMES, SIZE), *extra)


@pytest.fixture(scope="module")
def trained(tiny):
    out = tiny.root / "run"
    proc = run_script(tiny, out, "--max_train_steps", "3", "--checkpointing_steps", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _safetensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def test_script_three_steps_write_metrics_and_weights(trained):
    lines = [json.loads(s) for s in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    for key in ("loss", "implicit_acc", "loser_dominant_ratio", "win_gap", "lose_gap", "lr", "seconds"):
        assert all(isinstance(r[key], float) and math.isfinite(r[key]) for r in lines), key
    assert lines[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-5) and lines[0]["implicit_acc"] == 0.5
    assert (trained / "checkpoint-2").is_dir() and not list(trained.glob(".checkpoint-*"))
    for sub in ("unet_main", "brushnet"):
        assert (trained / sub / "config.json").is_file() and (trained / sub / "diffusion_pytorch_model.safetensors").is_file()


def test_script_changes_only_the_motion_modules(tiny, trained):
    import torch

    from regdpo.train.modules import is_motion_parameter

    start = Path(tiny.paths["diffueraser_path"])
    old, new = _safetensors(start / "unet_main"), _safetensors(trained / "unet_main")
    assert old.keys() == new.keys()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed and all(is_motion_parameter(k) for k in changed)
    old_b, new_b = _safetensors(start / "brushnet"), _safetensors(trained / "brushnet")
    assert all(torch.equal(old_b[k], new_b[k]) for k in old_b)


def test_saved_weights_reload_into_diffueraser_classes(tiny, trained):
    from regdpo.backends.models_config import ModelsConfig

    unet = tiny.source.unet_motion_cls.from_pretrained(str(trained), subfolder="unet_main", local_files_only=True)
    brushnet = tiny.source.brushnet_cls.from_pretrained(str(trained), subfolder="brushnet", local_files_only=True)
    assert type(unet).__name__ == "UNetMotionModel" and type(brushnet).__name__ == "BrushNetModel"
    config = ModelsConfig(**dict(tiny.paths, diffueraser_path=str(trained)), diffueraser_repo=DE_REPO)
    assert not [p for p in config.missing() if "diffueraser_path" in p]


def test_script_is_deterministic_per_seed(tiny, trained):
    again = tiny.root / "again"
    proc = run_script(tiny, again, "--max_train_steps", "3", "--checkpointing_steps", "100")
    assert proc.returncode == 0, proc.stderr[-3000:]
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    first = [drop(json.loads(s)) for s in (trained / "metrics.jsonl").read_text().splitlines()]
    second = [drop(json.loads(s)) for s in (again / "metrics.jsonl").read_text().splitlines()]
    assert first == second
    assert (trained / "unet_main" / "diffusion_pytorch_model.safetensors").read_bytes() == \
        (again / "unet_main" / "diffusion_pytorch_model.safetensors").read_bytes()


def test_script_resumes_from_a_checkpoint(tiny, trained):
    import shutil

    out = tiny.root / "resumed"
    out.mkdir()
    shutil.copytree(trained / "checkpoint-2", out / "checkpoint-2")
    proc = run_script(tiny, out, "--max_train_steps", "3", "--resume_from_checkpoint", "latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [3]
    assert (out / "unet_main" / "config.json").is_file()


def run_score(tiny, *extra: str) -> subprocess.CompletedProcess:
    p = tiny.paths
    cmd = [sys.executable, "-m", "regdpo", "score", str(tiny.data), "--base_model_path", p["base_model_path"],
           "--vae_path", p["vae_path"], "--diffueraser_path", p["diffueraser_path"], "--nframes", str(NFRAMES),
           "--resolution", str(SIZE), "--num_timesteps", "2", "--num_noises", "1", "--no-progress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=900)


def test_score_writes_schema_5_and_is_deterministic(tiny, tmp_path):
    proc = run_score(tiny, "--seed", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = (tiny.data / "score.json").read_bytes()
    score = json.loads(first)
    assert score["version"] == 1 and set(score) == {"version", "items", "settings"}
    keys = {(i["video"], i["stream"]) for i in score["items"]}
    assert keys == {(v, t) for v in ("clip_a", "clip_b") for t in ("blur", "hallucination")}
    for item in score["items"]:
        assert set(item) == {"video", "stream", "neg_type", "strength", "ref_margin"}
        assert item["stream"] == item["neg_type"] and item["strength"] == 1.0
        assert isinstance(item["ref_margin"], float) and math.isfinite(item["ref_margin"])
    assert score["settings"]["timesteps"] == [250, 750] and score["settings"]["seed"] == 3
    out = tmp_path / "again.json"
    proc = run_score(tiny, "--seed", "3", "--output", str(out), "--neg_types", "blur")
    assert proc.returncode == 0, proc.stderr[-3000:]
    subset = {(i["video"], i["stream"]): i["ref_margin"] for i in json.loads(out.read_text())["items"]}
    full = {(i["video"], i["stream"]): i["ref_margin"] for i in score["items"]}
    assert subset and all(full[k] == v for k, v in subset.items())  # independent of the subset scored


def test_script_skips_and_counts_a_frame_damaged_after_the_build(tiny, tmp_path):
    """A frame damaged after the dataset was built: with --skip_invalid the pair is passed over, named once in
    one line and counted (metrics.jsonl skipped_pairs, the summary); without it the run stops with one line
    naming the file (also from a DataLoader worker), never the worker's traceback."""
    import shutil

    data = tmp_path / "dpo_data"
    shutil.copytree(tiny.data, data)
    bad = data / "clip_b" / "blur" / "00003.png"
    cmd = train_command(tiny.paths, "--dpo_data_root", data, *run_flags(NFRAMES, SIZE, batch=1, lr=None),
                        "--max_train_steps", "4", "--dataloader_num_workers", "1")
    env = subprocess_env()
    # damaged after the build: its header and end marker pass the build-time checks, its body does not decode
    bad.write_bytes(bad.read_bytes()[:60] + b"\0" * 200 + bad.read_bytes()[-12:])
    proc = subprocess.run([*cmd, "--output_dir", str(tmp_path / "skip"), "--skip_invalid"], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "skipped the unreadable pair" in line]
    assert len(warnings) == 1 and str(bad) in warnings[0] and len(warnings[0]) < 400, proc.stderr[-2000:]
    lines = [json.loads(s) for s in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["skipped_pairs"] == 1
    assert "skipped 1 unreadable pair(s)" in proc.stdout + proc.stderr
    proc = subprocess.run([*cmd, "--output_dir", str(tmp_path / "stop")], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("train_region_reg_dpo.py: error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and len(errors[0]) < 400, errors
