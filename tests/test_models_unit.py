"""Unit tests of the models backend's adapter logic: no DiffuEraser source, no diffusers needed."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from regdpo.backends.base import plan_segments
from regdpo.backends.models import (
    ModelsBackend,
    flicker_plan,
    flicker_seeds,
    hallucination_seed,
    stitch_flicker,
)
from regdpo.backends.models_config import (
    PCM_CHECKPOINTS,
    PROPAINTER_FILES,
    SOURCE_FILES,
    WEIGHT_FLAGS,
    ModelsConfig,
    add_arguments,
)
from regdpo.errors import UsageError

# ---------------------------------------------------------------------- fixtures


def _touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_layout(root: Path) -> dict[str, str]:
    """Empty files in the folder layout the backend checks (no real weights)."""
    base, vae, der, pp, pcm = (root / n for n in ("sd15", "vae", "der", "pp", "pcm"))
    for rel in ("scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.safetensors",
                "tokenizer/vocab.json", "tokenizer/merges.txt"):
        _touch(base / rel)
    _touch(vae / "config.json")
    _touch(vae / "diffusion_pytorch_model.safetensors")
    for sub in ("brushnet", "unet_main"):
        _touch(der / sub / "config.json")
        _touch(der / sub / "diffusion_pytorch_model.safetensors")
    for name in PROPAINTER_FILES:
        _touch(pp / name)
    _touch(pcm / "sd15" / "pcm_sd15_smallcfg_2step_converted.safetensors")
    repo = root / "repo"
    for rel in SOURCE_FILES:
        _touch(repo / rel)
    return {"base_model_path": str(base), "vae_path": str(vae), "diffueraser_path": str(der),
            "propainter_model_dir": str(pp), "pcm_weights_path": str(pcm), "diffueraser_repo": str(repo)}


def path_problems(config: ModelsConfig) -> list[str]:
    """``missing()`` without the lines about Python modules (those depend on the environment)."""
    return [p for p in config.missing() if not p.startswith("Python module")]


# ---------------------------------------------------------------------- config and checks


def test_missing_lists_every_required_flag():
    problems = ModelsConfig(diffueraser_repo=None).missing()
    for flag in WEIGHT_FLAGS:
        assert f"--{flag} is required by --backend models" in problems


def test_complete_layout_has_no_path_problems(tmp_path):
    config = ModelsConfig(**make_layout(tmp_path))
    assert path_problems(config) == []
    assert config.any_weight_path_given()
    assert config.flag_problems() == []


@pytest.mark.parametrize(
    "relative, expected",
    [
        ("pp/raft-things.pth", "raft-things.pth not found"),
        ("sd15/tokenizer/merges.txt", "merges.txt not found"),
        ("der/unet_main/diffusion_pytorch_model.safetensors", "no weights in"),
        ("vae/config.json", "config.json not found"),
        ("pcm/sd15/pcm_sd15_smallcfg_2step_converted.safetensors", "needed by --pcm_ckpt '2-Step'"),
        ("repo/libs/brushnet_CA.py", "not a DiffuEraser checkout"),
    ],
)
def test_each_missing_file_is_named(tmp_path, relative, expected):
    config = ModelsConfig(**make_layout(tmp_path))
    (tmp_path / relative).unlink()
    problems = path_problems(config)
    assert len(problems) == 1, problems
    assert expected in problems[0]
    named = tmp_path / relative
    assert str(named) in problems[0] or str(named.parent) in problems[0]


def test_check_lists_all_problems_in_one_message(tmp_path):
    layout = make_layout(tmp_path)
    (tmp_path / "pp" / "ProPainter.pth").unlink()
    config = ModelsConfig(**{**layout, "vae_path": str(tmp_path / "nowhere")}, diffueraser_nframes=40)
    with pytest.raises(UsageError) as err:
        config.check()
    text = str(err.value)
    assert text.startswith("cannot use --backend models:")
    assert "ProPainter.pth not found" in text
    assert "--vae_path" in text and "folder not found" in text
    assert "--diffueraser_nframes 40" in text


def test_pcm_checkpoint_selects_file(tmp_path):
    layout = make_layout(tmp_path)
    config = ModelsConfig(**layout, pcm_ckpt="4-Step")
    assert config.pcm_file() == tmp_path / "pcm" / "sd15" / "pcm_sd15_smallcfg_4step_converted.safetensors"
    assert config.num_inference_steps == 4
    assert any("4step" in p for p in path_problems(config))
    assert set(PCM_CHECKPOINTS) >= {"2-Step", "4-Step", "8-Step", "LCM-Like LoRA"}


@pytest.mark.parametrize(
    "field, value, flag",
    [
        ("pcm_ckpt", "3-Step", "--pcm_ckpt"),
        ("diffueraser_nframes", 3, "--diffueraser_nframes"),
        ("model_precision", "bf16", "--model_precision"),
        ("flicker_scheme", "random", "--flicker_scheme"),
        ("flicker_segments", 1, "--flicker_segments"),
        ("propainter_resize_ratio", 0.0, "--propainter_resize_ratio"),
        ("propainter_mask_dilation", -1, "--propainter_mask_dilation"),
        ("propainter_raft_iter", 0, "--propainter_raft_iter"),
        ("propainter_neighbor_length", 1, "--propainter_neighbor_length"),
        ("device", "tpu", "--device"),
    ],
)
def test_bad_flag_values_are_named(field, value, flag):
    problems = ModelsConfig(**{field: value}).flag_problems()
    assert len(problems) == 1 and problems[0].startswith(flag), problems


def test_source_on_sys_path_is_found(tmp_path, monkeypatch):
    layout = make_layout(tmp_path)
    config = ModelsConfig(**{**layout, "diffueraser_repo": None})
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "DiffuEraser" not in p])
    if config.source_problems() == []:
        pytest.skip("a DiffuEraser checkout is already importable here")
    assert "DiffuEraser code was not found" in config.source_problems()[0]
    monkeypatch.syspath_prepend(layout["diffueraser_repo"])
    assert config.source_problems() == []


def test_arguments_round_trip_to_config(tmp_path, monkeypatch):
    monkeypatch.delenv("REGDPO_DIFFUERASER_REPO", raising=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = ModelsConfig.from_args(parser.parse_args([]))
    assert defaults == ModelsConfig()
    args = parser.parse_args(["--base_model_path", "sd", "--pcm_ckpt", "4-Step", "--diffueraser_nframes", "16",
                              "--flicker_scheme", "full_runs", "--propainter_resize_ratio", "1.0",
                              "--diffueraser_use_prompt", "--device", "cpu"])
    config = ModelsConfig.from_args(args)
    assert (config.base_model_path, config.pcm_ckpt, config.diffueraser_nframes) == ("sd", "4-Step", 16)
    assert (config.flicker_scheme, config.propainter_resize_ratio) == ("full_runs", 1.0)
    assert config.diffueraser_use_prompt is True and config.device == "cpu"


def test_arguments_keep_an_existing_device_flag(monkeypatch):
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda:1")
    add_arguments(parser)  # must not raise on the duplicate
    assert parser.parse_args([]).device == "cuda:1"


def test_repo_flag_defaults_to_environment(monkeypatch):
    monkeypatch.setenv("REGDPO_DIFFUERASER_REPO", "/somewhere/DiffuEraser")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert ModelsConfig.from_args(parser.parse_args([])).diffueraser_repo == "/somewhere/DiffuEraser"


def test_backend_fails_before_loading_anything(tmp_path):
    with pytest.raises(UsageError) as err:
        ModelsBackend(ModelsConfig(base_model_path=str(tmp_path / "missing")))
    assert "--vae_path is required" in str(err.value)
    assert "folder not found" in str(err.value)


def test_config_and_backend_modules_import_no_torch():
    code = ("import sys, regdpo.backends.models, regdpo.backends.models_config; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- seeds and flicker segments


def test_seeds_are_stable_distinct_and_video_dependent():
    assert hallucination_seed(7) == hallucination_seed(7)
    assert hallucination_seed(7) != hallucination_seed(8)
    seeds = flicker_seeds(7, 5)
    assert seeds == flicker_seeds(7, 5)
    assert len(set(seeds)) == 5 and hallucination_seed(7) not in seeds
    assert flicker_seeds(7, 3) == seeds[:3]  # adding segments keeps the earlier seeds
    assert all(0 <= s < 2**31 for s in seeds)


@pytest.mark.parametrize("scheme", ["segments", "full_runs"])
def test_flicker_plan_covers_clip(scheme):
    plan = flicker_plan(22, 3, scheme)
    assert [p["segment"] for p in plan] == plan_segments(22, 3) == [(0, 8), (8, 15), (15, 22)]
    for p in plan:
        (r0, r1), (t0, t1), (s0, s1) = p["run"], p["take"], p["segment"]
        assert t1 - t0 == s1 - s0 and r0 + t0 == s0 and r0 + t1 == s1 <= r1
    runs = [p["run"] for p in plan]
    assert runs == ([(0, 8), (8, 15), (15, 22)] if scheme == "segments" else [(0, 22)] * 3)


def test_flicker_plan_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="unknown flicker scheme"):
        flicker_plan(10, 2, "mixed")


def _fake_run(calls):
    """A stand-in for a DiffuEraser run: frame value = 1000 * (seed % 7 + 1) + clip frame index."""
    def run(start, stop, seed):
        calls.append((start, stop, seed))
        values = 1000 * (seed % 7 + 1) + np.arange(start, stop)
        return np.broadcast_to(values[:, None, None, None], (stop - start, 2, 2, 3)).astype(np.int64).copy()
    return run


@pytest.mark.parametrize("scheme", ["segments", "full_runs"])
def test_stitch_takes_segment_k_from_run_k(scheme):
    seeds = [1, 2, 3]
    calls: list = []
    out = stitch_flicker(_fake_run(calls), 10, flicker_plan(10, 3, scheme), seeds)
    assert out.shape == (10, 2, 2, 3)
    for k, (s0, s1) in enumerate(plan_segments(10, 3)):
        expected = 1000 * (seeds[k] % 7 + 1) + np.arange(s0, s1)
        assert np.array_equal(out[s0:s1, 0, 0, 0], expected)  # right seed, right clip frames, in order
    assert [c[2] for c in calls] == seeds
    work = sum(stop - start for start, stop, _ in calls)
    assert work == (10 if scheme == "segments" else 30)


def test_stitch_checks_run_lengths_and_seed_count():
    def short_run(start, stop, seed):
        return np.zeros((stop - start - 1, 2, 2, 3), np.uint8)
    with pytest.raises(RuntimeError, match="returned"):
        stitch_flicker(short_run, 6, flicker_plan(6, 2, "segments"), [1, 2])
    with pytest.raises(ValueError, match="2 segments but 1 seeds"):
        stitch_flicker(short_run, 6, flicker_plan(6, 2, "segments"), [1])


@settings(max_examples=60, deadline=None)
@given(num=st.integers(1, 80), segments=st.integers(1, 12))
def test_flicker_segments_partition_the_clip(num, segments):
    segments = min(segments, num)
    plan = flicker_plan(num, segments, "segments")
    covered = [i for p in plan for i in range(*p["segment"])]
    assert covered == list(range(num))


# ---------------------------------------------------------------------- ProPainter helpers (pure)

from regdpo.backends.models_propainter import (  # noqa: E402  (imports torch)
    MIN_SIDE,
    check_processing_size,
    chunk_bounds,
    dilate_holes,
    flow_chunk_length,
    local_windows,
    processing_size,
    reference_indices,
    resize_clip,
)


def test_processing_size_follows_propainter():
    assert processing_size(432, 240, 0.6) == (256, 144)  # int(259.2) -> 256, int(144.0) = 144
    assert processing_size(640, 360, 1.0) == (640, 360)
    assert processing_size(1920, 1080, 1.0) == (960, 536)  # capped at 960, rounded to 8
    assert processing_size(1920, 1080, 0.5) == (480, 264)
    assert all(v % 8 == 0 for v in processing_size(1000, 750, 0.37))


def test_processing_size_too_small_for_raft_is_explained():
    assert check_processing_size(432, 240, 0.6) == (256, 144)
    with pytest.raises(ValueError, match=r"128 px per side.*raise the ratio"):
        check_processing_size(160, 160, 0.6)
    assert min(check_processing_size(160, 160, 0.8)) >= MIN_SIDE


def test_flow_chunk_length_by_size():
    assert [flow_chunk_length(e) for e in (256, 640, 720, 1280, 1920)] == [12, 12, 8, 4, 2]


@settings(max_examples=80, deadline=None)
@given(length=st.integers(1, 300), chunk=st.integers(1, 120), pad=st.integers(0, 12))
def test_chunk_bounds_keep_every_item_once(length, chunk, pad):
    kept = []
    for start, stop, keep_from, keep_to in chunk_bounds(length, chunk, pad):
        assert 0 <= start <= start + keep_from < start + keep_to <= stop <= length
        assert keep_from <= pad and stop - (start + keep_to) <= pad
        kept.extend(range(start + keep_from, start + keep_to))
    assert kept == list(range(length))


def test_local_windows_and_references():
    assert local_windows(12, 10) == [list(range(0, 6)), list(range(0, 11)), list(range(5, 12))]
    assert reference_indices(0, list(range(6)), 30, 10, -1) == [10, 20]
    # limited references around the centre (long videos): at most ref_num + 1 of them
    refs = reference_indices(60, list(range(55, 66)), 200, 10, 5)
    assert refs == [40, 50, 70] and all(r not in range(55, 66) for r in refs)


def test_dilate_holes_uses_a_cross():
    hole = np.zeros((1, 7, 7), bool)
    hole[0, 3, 3] = True
    assert np.array_equal(dilate_holes(hole, 0), hole.astype(np.uint8))
    one = dilate_holes(hole, 1)[0]
    assert one.sum() == 5 and one[2, 3] and one[3, 2] and not one[2, 2]
    assert dilate_holes(hole, 2)[0].sum() == 13  # diamond of radius 2


def test_resize_clip_keeps_same_size_and_resizes_others():
    frames = np.arange(2 * 16 * 24 * 3, dtype=np.uint32).reshape(2, 16, 24, 3).astype(np.uint8)
    assert resize_clip(frames, (24, 16), 3) is frames
    assert resize_clip(frames, (12, 8), 3).shape == (2, 8, 12, 3)
    masks = np.zeros((2, 16, 24), np.uint8)
    assert resize_clip(masks, (48, 32), 0).shape == (2, 32, 48)


# ---------------------------------------------------------------------- DiffuEraser helpers (pure)

from regdpo.backends.models import resolve_device, resolve_dtype  # noqa: E402
from regdpo.backends.models_diffueraser import key_frame_indices, tile_window, to_uint8  # noqa: E402


def test_key_frames_only_for_long_clips():
    assert key_frame_indices(44, 22) == []
    assert key_frame_indices(45, 22) == [int(i * 45 / 22) for i in range(22)]
    keys = key_frame_indices(100, 22)
    assert len(keys) == 22 and keys == sorted(set(keys)) and keys[-1] < 100


def test_noise_window_is_tiled():
    window = torch.arange(3.0).view(3, 1)
    assert tile_window(window, 7).view(-1).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert tile_window(window, 2).view(-1).tolist() == [0, 1]


def test_to_uint8_rounds_like_numpy_to_pil():
    values = np.array([0.0, 0.5, 1.0, -0.1, 1.2, 0.0019, 0.002])
    assert to_uint8(values).tolist() == [0, 128, 255, 0, 255, 0, 1]


def test_device_and_dtype_resolution(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(UsageError, match="--device cuda: no CUDA device"):
        resolve_device("cuda")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("fp32", torch.device("cuda")) == torch.float32


def test_models_config_is_json_serialisable(tmp_path):
    config = ModelsConfig(**make_layout(tmp_path))
    assert json.loads(json.dumps(config.to_dict()))["pcm_ckpt"] == "2-Step"


def test_strength_mechanics_of_the_models_backend():
    from regdpo.backends.models import blur_ratio, flicker_shared_seed
    from regdpo.backends.models_diffueraser import mix_unit

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200_000, generator=g), torch.randn(200_000, generator=g)
    assert torch.equal(mix_unit(a, b, 0.0), a) and torch.equal(mix_unit(a, b, 1.0), b)
    for w in (0.1, 0.5, 0.9):  # unit variance, correlation sqrt(1 - w) with a; two mixes of a: 1 - w
        m = mix_unit(a, b, w)
        assert abs(float(m.std()) - 1.0) < 0.01
        assert abs(float(torch.corrcoef(torch.stack([m, a]))[0, 1]) - (1 - w) ** 0.5) < 0.01
        other = mix_unit(a, torch.randn(200_000, generator=g), w)
        assert abs(float(torch.corrcoef(torch.stack([m, other]))[0, 1]) - (1 - w)) < 0.01
    assert mix_unit(a.half(), b.half(), 0.5).dtype == torch.float16
    with pytest.raises(ValueError):
        mix_unit(a, b, 1.5)
    assert blur_ratio(0.6, 1.0) == 0.6 and blur_ratio(0.6, 0.0) == 1.0 and blur_ratio(0.6, 0.5) == 0.8
    assert blur_ratio(1.0, 0.3) == 1.0  # already at full size: nothing to relax
    ratios = [blur_ratio(0.6, s) for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert ratios == sorted(ratios, reverse=True)
    assert flicker_shared_seed(7) == flicker_shared_seed(7) != flicker_shared_seed(8)
