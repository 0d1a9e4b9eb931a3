"""On-policy negatives of the models backend against the real DiffuEraser / ProPainter classes with tiny random
weights (``models_tiny``), on CPU: inpaint candidates, the renoise mechanics, and a round-2 generate from the
weights a tiny training run wrote. Skip without a DiffuEraser checkout (``REGDPO_DIFFUERASER_REPO``), the
``[models]`` extra and torchvision, as tests/test_models_contract.py::

    REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser pytest tests/test_onpolicy_models.py
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.backends.base import Clip
from regdpo.backends.models_config import ModelsConfig

from helpers import write_pair_dataset
from model_fixtures import DE_REPO, run_flags, run_train, training_marks

pytestmark = training_marks()
FRAMES, SIZE = 4, 128


def make_backend(paths, **override):
    from regdpo.backends.models import ModelsBackend

    config = ModelsConfig(**{**paths, **override}, diffueraser_repo=DE_REPO, device="cpu", diffueraser_nframes=4,
                          propainter_resize_ratio=1.0, propainter_raft_iter=1)
    return ModelsBackend(config)


@pytest.fixture(scope="module")
def backend(tiny_paths):
    be = make_backend(tiny_paths)
    yield be
    be.close()


def make_clip(seed: int = 5) -> Clip:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (SIZE, SIZE + 8 * FRAMES, 3), dtype=np.uint8)
    video = np.stack([base[:, 8 * t:8 * t + SIZE] for t in range(FRAMES)])
    hole = np.zeros(video.shape[:3], bool)
    for t in range(FRAMES):
        hole[t, 32 + 4 * t:80 + 4 * t, 40:96] = True
    return Clip(name="tiny", frames=video, hole=hole, seed=seed)


def test_candidates_share_propainter_and_renoise_one_is_inpaint(backend):
    clip = make_clip()
    both = backend.generate(clip, ["inpaint", "renoise"], {"renoise": [1.0, 0.5]}, candidates={"inpaint": 2})
    assert set(both.negatives) == {"inpaint", "inpaint_c1", "renoise", "renoise_s0.50"}
    single = backend.generate(clip, ["inpaint"])
    assert np.array_equal(both.negatives["inpaint"], single.negatives["inpaint"])  # candidate 0: the one-candidate run
    assert both.info["inpaint"] == single.info["inpaint"]
    assert not np.array_equal(both.negatives["inpaint_c1"][clip.hole], both.negatives["inpaint"][clip.hole])
    assert both.info["inpaint_c1"]["seed"] != both.info["inpaint"]["seed"]
    assert np.array_equal(both.negatives["renoise"], both.negatives["inpaint"])
    assert both.info["renoise"]["same_as"] == "inpaint"
    info = both.info["renoise_s0.50"]
    assert info["timesteps"] == [500, 250] and info["seed"] == both.info["inpaint"]["seed"]
    assert not np.array_equal(both.negatives["renoise_s0.50"][clip.hole], both.negatives["inpaint"][clip.hole])
    assert "propainter" in both.timings and "inpaint_c1" in both.timings


def test_renoise_denoises_the_noised_gt_latents_over_the_scaled_schedule(backend):
    """The pipeline gets the GT's latents noised to the first renoise timestep (the PCM scheduler's forward
    process, the seeded noise window) and exactly the scaled timesteps; a lower strength keeps more GT."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    from regdpo.backends.models import inpaint_seed, renoise_timesteps
    from regdpo.backends.models_diffueraser import tile_window

    runner = backend.diffueraser
    clip = make_clip()
    calls = []
    pipeline = runner.pipeline

    class Recorder:
        def __getattr__(self, name):
            return getattr(pipeline, name)

        def __call__(self, **kwargs):
            calls.append({"latents": kwargs["latents"].clone(), "timesteps": kwargs["timesteps"]})
            return pipeline(**kwargs)

    runner.pipeline = Recorder()
    try:
        results = {s: backend.generate(clip, ["renoise"], {"renoise": [s]}) for s in (0.3, 0.8)}
    finally:
        runner.pipeline = pipeline
    assert [c["timesteps"] for c in calls] == [renoise_timesteps([999, 499], s) for s in (0.3, 0.8)]
    seed = inpaint_seed(clip.seed)
    lat_shape = (runner.latent_channels, SIZE // runner.scale, SIZE // runner.scale)
    correlations = []
    for call, strength in zip(calls, (0.3, 0.8)):
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(), torch.inference_mode():
            torch.manual_seed(seed)
            window = randn_tensor((FRAMES, *lat_shape), generator=generator, dtype=runner.dtype)
            clean = runner._encode(clip.frames)
            level = torch.tensor([renoise_timesteps([999, 499], strength)[0]])
            expected = pipeline.scheduler.add_noise(clean, tile_window(window, FRAMES), level)
        assert torch.equal(call["latents"], expected)
        correlations.append(float(torch.corrcoef(torch.stack([call["latents"].flatten(), clean.flatten()]))[0, 1]))
    assert correlations[0] > correlations[1]  # strength 0.3 starts nearer the GT than 0.8
    again = backend.generate(clip, ["renoise"], {"renoise": [0.3]})
    assert np.array_equal(again.negatives["renoise_s0.30"], results[0.3].negatives["renoise_s0.30"])
    assert not np.array_equal(results[0.3].negatives["renoise_s0.30"], results[0.8].negatives["renoise_s0.80"])


@pytest.fixture(scope="module")
def trained(tiny_paths, tmp_path_factory):
    """Weights written by a tiny training run of train_region_reg_dpo.py (two steps, motion modules)."""
    root = tmp_path_factory.mktemp("round")
    data = write_pair_dataset(root / "dpo_data", neg_types=("blur",))
    out = root / "run"
    proc = run_train(tiny_paths, "--dpo_data_root", data, "--output_dir", out, *run_flags(lr="1e-2"),
                     "--max_train_steps", "2", "--checkpointing_steps", "100", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_trained_weights_load_and_give_other_negatives(tiny_paths, backend, trained):
    clip = make_clip()
    base = backend.generate(clip, ["renoise"], {"renoise": [0.5]})
    round2 = make_backend(tiny_paths, diffueraser_path=str(trained))
    try:
        new = round2.generate(clip, ["renoise"], {"renoise": [0.5]})
        settings = round2.settings()["diffueraser_weights"]
    finally:
        round2.close()
    assert not np.array_equal(new.negatives["renoise_s0.50"], base.negatives["renoise_s0.50"])
    assert settings["sha256"] != backend.settings()["diffueraser_weights"]["sha256"]
    assert settings["files"] == ["brushnet/config.json", "brushnet/diffusion_pytorch_model.safetensors",
                                 "unet_main/config.json", "unet_main/diffusion_pytorch_model.safetensors"]


def test_round_two_generate_records_the_weights_and_the_round(tiny_paths, trained, tmp_path):
    from regdpo.backends.models_diffueraser import weights_digest
    from regdpo.cli import main

    out = tmp_path / "r2"
    flags = ["generate", "--no_progress", "--output_dir", str(out), "--resolution", "128", "--nframes", "4",
             "--max_videos", "1", "--neg_types", "renoise", "--renoise_strength", "0.5", "--round", "2",
             "--device", "cpu", "--diffueraser_nframes", "4", "--diffueraser_repo", DE_REPO,
             "--propainter_resize_ratio", "1.0", "--propainter_raft_iter", "1",  # RAFT's 128 px at --resolution 128
             "--base_model_path", tiny_paths["base_model_path"], "--vae_path", tiny_paths["vae_path"],
             "--propainter_model_dir", tiny_paths["propainter_model_dir"],
             "--pcm_weights_path", tiny_paths["pcm_weights_path"], "--diffueraser_path", str(trained)]
    assert main(flags) == 0
    (name,) = fmt.complete_videos(out)
    meta = json.loads((out / name / fmt.META_FILE).read_text())
    assert meta["generator"]["round"] == 2
    assert meta["generator"]["backend_settings"]["diffueraser_weights"]["sha256"] == weights_digest(trained)[1]
    assert meta["negatives"][0]["stream"] == "renoise_s0.50"
