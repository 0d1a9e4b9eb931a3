"""train_region_reg_dpo.py without models: flags, checks, saturation rule, checkpoint lookup (runs in CI)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO
from regdpo.errors import UsageError
from regdpo.train.config import DPOStepConfig
from regdpo.train.loop import build_parser, check_args, find_checkpoint, saturated, step_config


def args_for(tmp_path, *extra):
    for name in ("sd15", "vae", "de", "data"):
        (tmp_path / name).mkdir(exist_ok=True)
    return build_parser().parse_args([
        "--base_model_name_or_path", str(tmp_path / "sd15"), "--vae_path", str(tmp_path / "vae"),
        "--diffueraser_path", str(tmp_path / "de"), "--dpo_data_root", str(tmp_path / "data"), *extra])


def test_beta_default_follows_the_loss_form(tmp_path):
    assert step_config(args_for(tmp_path)).beta_dpo == 10.0
    assert step_config(args_for(tmp_path, "--loss_form", "diff")).beta_dpo == 2500.0
    assert step_config(args_for(tmp_path, "--loss_form", "diff", "--beta_dpo", "5000")).beta_dpo == 5000.0
    assert step_config(args_for(tmp_path, "--loser_clip", "-1")).loser_clip is None
    c = step_config(args_for(tmp_path, "--train_modules", "both", "--w_context", "0"))
    assert (c.train_modules, c.w_context) == ("both", 0.0)


def test_check_names_every_bad_flag_and_missing_file(tmp_path):
    args = args_for(tmp_path, "--resolution", "60", "--boundary_dilation", "8")
    args.w_hole = -1.0  # refused by its flag's type on the command line; checked here for a Namespace built in code
    with pytest.raises(UsageError) as err:
        check_args(args)
    text = str(err.value)
    assert "--resolution 60" in text and "--w_hole -1" in text and "--boundary_dilation 8" in text
    assert "--vae_path" in text and "config.json not found" in text


def test_script_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "train_region_reg_dpo.py"), "--base_model_name_or_path",
                           str(tmp_path / "none"), "--vae_path", str(tmp_path), "--diffueraser_path", str(tmp_path),
                           "--dpo_data_root", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("train_region_reg_dpo.py: error:") and "Traceback" not in proc.stderr
    assert "--base_model_name_or_path" in proc.stderr and "folder not found" in proc.stderr


def test_saturation_needs_the_whole_window():
    hot = {"implicit_acc": 1.0, "implicit_acc_margin": 1.0, "loser_dominant_ratio": 1.0}
    learning = {"implicit_acc": 0.7, "implicit_acc_margin": 0.2, "loser_dominant_ratio": 0.4}
    assert saturated([hot] * 5, 5)
    assert not saturated([hot] * 4, 5)
    assert not saturated([hot] * 4 + [learning] + [hot] * 4, 5)
    accurate = {"implicit_acc": 1.0, "implicit_acc_margin": 1.0, "loser_dominant_ratio": 0.5}
    assert not saturated([accurate] * 10, 5)  # accurate, not loser-driven
    assert saturated([learning] + [hot] * 5, 5)


def _diagnostics(model_w, model_l, ref_w, ref_l):
    import torch

    from regdpo.dpo import diagnostics_to_floats, dpo_loss

    t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    _, diag = dpo_loss(t(model_w), t(model_l), t(ref_w), t(ref_l), 10.0, form="logratio", loser_clip=1.0,
                       loser_weight=0.25)
    return diagnostics_to_floats(diag)


def test_saturation_warning_never_fires_on_float_noise():
    """Tiny random weights a few steps in: every pair 'won' by inside ~1e-4 (implicit_acc 1.00), losers
    a hair worse: float noise, not saturation."""
    ref_w, ref_l = [1.0, 1.1, 0.9, 1.2], [1.3, 1.2, 1.0, 1.4]
    noise = _diagnostics([r * (1 - 1e-5) for r in ref_w], [r * (1 + 4e-5) for r in ref_l], ref_w, ref_l)
    assert noise["implicit_acc"] == 1.0 and noise["loser_dominant_ratio"] == 1.0
    assert 0 < noise["inside_term_mean"] < 1e-3
    assert noise["implicit_acc_margin"] == 0.0
    assert not saturated([noise] * 50, 50)


def test_saturation_warning_fires_on_real_saturation():
    """Losers made much worse, winners unchanged: every pair won by a wide margin through the loser."""
    ref_w, ref_l = [1.0, 1.1, 0.9, 1.2], [1.3, 1.2, 1.0, 1.4]
    hot = _diagnostics(ref_w, [r * 2.0 for r in ref_l], ref_w, ref_l)
    assert hot["implicit_acc_margin"] == 1.0 and hot["loser_dominant_ratio"] == 1.0
    assert hot["inside_term_mean"] > 0.5
    assert saturated([hot] * 50, 50)


def test_find_checkpoint(tmp_path):
    assert find_checkpoint(tmp_path, "latest") is None
    for n in (2, 10, 4):
        (tmp_path / f"checkpoint-{n}").mkdir()
    (tmp_path / ".checkpoint-12.partial").mkdir()
    assert find_checkpoint(tmp_path, "latest").name == "checkpoint-10"
    assert find_checkpoint(tmp_path, "checkpoint-4").name == "checkpoint-4"
    with pytest.raises(UsageError, match="folder not found"):
        find_checkpoint(tmp_path, "checkpoint-99")
    (tmp_path / "other").mkdir()
    with pytest.raises(UsageError, match="not a checkpoint-N"):
        find_checkpoint(tmp_path, str(tmp_path / "other"))


def test_step_config_checks():
    assert DPOStepConfig().problems() == []
    bad = DPOStepConfig(train_modules="all", loss_form="x", w_hole=0, w_boundary=0, w_context=0).problems()
    assert len(bad) == 3


def test_score_timesteps_and_streams():
    from regdpo.train.score import noise_seeds, score_timesteps, stream_of

    assert score_timesteps(4) == [125, 375, 625, 875] and score_timesteps(1) == [500]
    with pytest.raises(ValueError):
        score_timesteps(0)
    assert noise_seeds(3, 2) == noise_seeds(3, 2) and len(set(noise_seeds(3, 2))) == 2
    assert stream_of({"neg_type": "blur"}) == ("blur", 1.0)
    assert stream_of({"neg_type": "blur", "neg_strength": 0.5}) == ("blur_s0.50", 0.5)
    assert stream_of({"neg_type": "blur", "neg_strength": 0.5, "stream": "x"}) == ("x", 0.5)


def test_score_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "regdpo", "score", str(tmp_path / "nope"), "--base_model_path",
                           str(tmp_path), "--vae_path", str(tmp_path), "--diffueraser_path", str(tmp_path),
                           "--resolution", "60"], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("regdpo score: error:")
    assert "dataset folder not found" in proc.stderr and "--resolution 60" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_8bit_adam_without_bitsandbytes_is_one_usage_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(UsageError) as err:
        check_args(args_for(tmp_path, "--use_8bit_adam"))
    assert "--use_8bit_adam needs bitsandbytes" in str(err.value) and "regdpo[train8bit]" in str(err.value)
    assert "\n" not in str(err.value)


def test_8bit_adam_uses_bitsandbytes_adamw8bit(monkeypatch):
    import importlib.machinery
    import types

    import torch

    from regdpo.train.optim import optimizer_class, optional_package_problems

    class AdamW8bit(torch.optim.AdamW):
        pass

    bnb = types.ModuleType("bitsandbytes")
    bnb.__spec__ = importlib.machinery.ModuleSpec("bitsandbytes", None)
    bnb.optim = types.SimpleNamespace(AdamW8bit=AdamW8bit)
    monkeypatch.setitem(sys.modules, "bitsandbytes", bnb)
    assert optional_package_problems(True, False) == []
    assert optimizer_class(True) is AdamW8bit and optimizer_class(False) is torch.optim.AdamW


def test_allow_tf32_sets_both_switches():
    import torch

    from regdpo.train.optim import allow_tf32

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        allow_tf32()
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_data_flags_dpo_shards_or_a_root_and_no_folder_selection_on_shards(tmp_path):
    bare = build_parser().parse_args(["--base_model_name_or_path", str(tmp_path), "--vae_path", str(tmp_path),
                                      "--diffueraser_path", str(tmp_path)])
    with pytest.raises(UsageError, match="--dpo_data_root or --dpo_shards is required"):
        check_args(bare)
    shards = args_for(tmp_path, "--dpo_shards", "s3://bucket/packed", "--manifest", str(tmp_path / "m.json"))
    assert shards.dpo_shards == ["s3://bucket/packed"]
    with pytest.raises(UsageError, match="--dpo_shards: --manifest / --exclude_evalset select from a folder"):
        check_args(shards)
