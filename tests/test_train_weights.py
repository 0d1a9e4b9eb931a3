"""What training writes: untrained tensors saved bit for bit as loaded after any --mixed_precision, and
``regdpo export`` of a checkpoint-N; the real DiffuEraser classes with tiny random weights on CPU,
skipped without a DiffuEraser checkout::

    REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser pytest tests/test_train_weights.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import tree_files
from model_fixtures import run_flags, run_train, subprocess_env, tiny_case, training_marks

pytestmark = training_marks()
NFRAMES, SIZE = 2, 64


@pytest.fixture(scope="module")
def tiny(tiny_weights, tmp_path_factory):
    return tiny_case(tiny_weights, tmp_path_factory, "train_weights", videos=(("clip_a", 3), ("clip_b", 3)))


def run_script(tiny, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_train(tiny.paths, "--dpo_data_root", tiny.data, "--output_dir", out,
                     *run_flags(NFRAMES, SIZE, batch=1, seed=1), "--max_train_steps", "2", "--checkpointing_steps",
                     "2", *extra)


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def assert_only_trained_changed(start: Path, out: Path, trained) -> None:
    """Every untrained tensor equal to the loaded one bit for bit (same dtype), trained ones changed."""
    import torch

    for key in ("unet_main", "brushnet"):
        old, new = tensors(start / key), tensors(out / key)
        assert old.keys() == new.keys()
        frozen = [k for k in old if not trained(key, k)]
        assert all(new[k].dtype == old[k].dtype and torch.equal(new[k], old[k]) for k in frozen), key
        moved = [k for k in old if trained(key, k)]
        assert all(new[k].dtype == torch.float32 for k in moved)
        if moved:
            assert any(not torch.equal(new[k], old[k]) for k in moved), key


@pytest.fixture(scope="module")
def bf16_motion(tiny):
    out = tiny.root / "bf16"
    proc = run_script(tiny, out, "--mixed_precision", "bf16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_untrained_brushnet_is_written_back_bit_for_bit_after_bf16(tiny, bf16_motion):
    from regdpo.train.modules import is_motion_parameter

    start = Path(tiny.paths["diffueraser_path"])
    for name in tree_files(start / "brushnet"):  # the untouched BrushNet: the very files that were loaded
        assert (bf16_motion / "brushnet" / name).read_bytes() == (start / "brushnet" / name).read_bytes()
    assert_only_trained_changed(start, bf16_motion, lambda key, k: key == "unet_main" and is_motion_parameter(k))


def test_untrained_motion_modules_are_written_back_bit_for_bit_after_fp16(tiny):
    from regdpo.train.modules import is_motion_parameter

    out = tiny.root / "spatial"
    proc = run_script(tiny, out, "--mixed_precision", "fp16", "--train_modules", "spatial")
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = Path(tiny.paths["diffueraser_path"])
    assert_only_trained_changed(start, out, lambda key, k: key == "brushnet" or not is_motion_parameter(k))


def run_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regdpo", "export", *args], capture_output=True, text=True,
                          env=subprocess_env(), timeout=600)


def test_export_turns_a_checkpoint_into_diffueraser_weights(tiny, bf16_motion, tmp_path):
    import json

    import torch

    ckpt = bf16_motion / "checkpoint-2"
    assert json.loads((ckpt / "regdpo_checkpoint.json").read_text())["models"] == ["unet_main"]
    out = tmp_path / "exported"
    proc = run_export(str(ckpt), "--diffueraser_path", tiny.paths["diffueraser_path"], "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # step 2 is the run's last: the export equals the weights the script wrote at its end
    final, exported = tensors(bf16_motion / "unet_main"), tensors(out / "unet_main")
    assert final.keys() == exported.keys() and all(torch.equal(final[k], exported[k]) for k in final)
    start = Path(tiny.paths["diffueraser_path"])
    assert (out / "brushnet" / "diffusion_pytorch_model.safetensors").read_bytes() == \
        (start / "brushnet" / "diffusion_pytorch_model.safetensors").read_bytes()
    unet = tiny.source.unet_motion_cls.from_pretrained(str(out), subfolder="unet_main", local_files_only=True)
    brushnet = tiny.source.brushnet_cls.from_pretrained(str(out), subfolder="brushnet", local_files_only=True)
    assert type(unet).__name__ == "UNetMotionModel" and type(brushnet).__name__ == "BrushNetModel"


def test_export_bad_input_is_one_line(tiny, tmp_path, capsys):
    from regdpo.cli import main

    base = ["export", "--diffueraser_path", tiny.paths["diffueraser_path"], "--output", str(tmp_path / "o")]
    assert main([*base, str(tmp_path / "checkpoint-9")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint folder not found" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "checkpoint-3").mkdir()
    assert main([*base, str(tmp_path / "checkpoint-3")]) == 1
    err = capsys.readouterr().err
    assert "model.safetensors not found" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main([*base[:-1], tiny.paths["diffueraser_path"], str(tmp_path / "checkpoint-3")]) == 2
    assert "the same folder as --diffueraser_path" in capsys.readouterr().err
