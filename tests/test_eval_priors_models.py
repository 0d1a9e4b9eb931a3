"""The ProPainter prior cache with the real ProPainter / DiffuEraser classes and tiny random weights, on CPU:
a cached prior gives the same bytes as the one the models backend computes, `regdpo eval --backend models`
runs ProPainter once per clip (and loads it once) for all its models with results byte-identical to
``--no_prior_cache``, and a resumed run reads the priors from disk and loads no ProPainter.

Needs a DiffuEraser checkout (``REGDPO_DIFFUERASER_REPO``), the ``[models]`` extra and a working torchvision;
otherwise it skips and says why::

    REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser pytest tests/test_eval_priors_models.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_fixtures import DE_REPO, needs_diffueraser, textured_evalset

pytestmark = [needs_diffueraser(), pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")]
FRAMES, SIZE = 2, 128  # ProPainter's RAFT needs a 128 px short side at the working ratio; 2 frames: CPU time


@pytest.fixture(scope="module")
def weights(tiny_paths, tmp_path_factory):
    """The session's tiny weights (read-only) and a second DiffuEraser folder: a copy of theirs with the motion
    UNet's weights perturbed (other weights, the same ProPainter)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    other = tmp_path_factory.mktemp("prior_weights") / "other"
    shutil.copytree(tiny_paths["diffueraser_path"], other)
    path = other / "unet_main" / "diffusion_pytorch_model.safetensors"
    gen = torch.Generator().manual_seed(1)
    state = {k: v + 0.05 * torch.randn(v.shape, generator=gen, dtype=v.dtype) if v.is_floating_point() else v
             for k, v in load_file(path).items()}
    save_file(state, path)
    return tiny_paths, str(other)


def _config(paths):
    from regdpo.backends.models_config import ModelsConfig

    return ModelsConfig(**paths, diffueraser_repo=DE_REPO, device="cpu", diffueraser_nframes=4,
                        propainter_resize_ratio=1.0, propainter_raft_iter=1)


def _clip():
    from regdpo.audit.synthetic import textured_clip
    from regdpo.backends.base import Clip

    frames = np.stack(textured_clip(FRAMES, SIZE, SIZE + 16, seed=3))
    hole = np.zeros(frames.shape[:3], dtype=bool)
    hole[:, 40:90, 50:100] = True
    return Clip("c", frames, hole, 11)


def test_a_given_prior_gives_the_bytes_of_the_computed_one(weights):
    from regdpo.backends.models import ModelsBackend
    from regdpo.evaluation.priors import ProPainterPriors

    base, _ = weights
    config = _config(base)
    clip = _clip()
    backend = ModelsBackend(config)
    try:
        made = backend.generate(clip, ["inpaint", "blur"])
    finally:
        backend.close()
    priors = ProPainterPriors(config)
    prior = priors(clip.frames, clip.hole)
    priors.close()
    assert np.array_equal(prior, made.negatives["blur"])  # blur at strength 1 is the prior itself
    bare = ModelsBackend(config, propainter=False)
    try:
        assert bare.propainter is None
        given = bare.generate(clip, ["inpaint"], prior=prior)
        assert np.array_equal(given.negatives["inpaint"], made.negatives["inpaint"])
        assert given.info["inpaint"] == made.info["inpaint"] and "propainter" not in given.timings
        other = bare.generate(clip, ["inpaint"], prior=255 - prior)  # the output does depend on the prior given
        assert not np.array_equal(other.negatives["inpaint"], made.negatives["inpaint"])
        with pytest.raises(ValueError, match="built without ProPainter"):
            bare.generate(clip, ["inpaint"])
        with pytest.raises(ValueError, match="expected uint8"):
            bare.generate(clip, ["inpaint"], prior=prior[:, :64])
    finally:
        bare.close()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != "priors"}


def test_eval_runs_propainter_once_per_clip_for_all_models_byte_identical(weights, tmp_path, capsys, monkeypatch):
    import regdpo.backends.models as backend_module
    from regdpo.cli import main

    base, other = weights
    evalset = textured_evalset(tmp_path, FRAMES, SIZE)
    loads = []
    real_load = backend_module.load_propainter
    monkeypatch.setattr(backend_module, "load_propainter", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    shared = ["--base_model_path", base["base_model_path"], "--vae_path", base["vae_path"],
              "--propainter_model_dir", base["propainter_model_dir"], "--pcm_weights_path", base["pcm_weights_path"],
              "--device", "cpu", "--diffueraser_nframes", "4", "--propainter_resize_ratio", "1.0",
              "--propainter_raft_iter", "1", *(["--diffueraser_repo", DE_REPO] if DE_REPO else [])]

    def run(out: Path, *models: str, cache: bool = True) -> str:
        flags = [x for m in models for x in ("--model", m)]
        rc = main(["eval", str(evalset), "--backend", "models", *flags, "--output_dir", str(out), "--save_frames",
                   "--no_progress", *shared, *([] if cache else ["--no_prior_cache"])])
        err = capsys.readouterr().err
        assert rc == 0, err[-3000:]
        return err

    two = (f"base={base['diffueraser_path']}", f"other={other}")
    err = run(tmp_path / "cached", *two)
    assert "ProPainter priors: 2 computed (" in err and "2 reused (" in err and len(loads) == 1
    assert len(list((tmp_path / "cached" / "priors").glob("*.npz"))) == 2
    loads.clear()
    err = run(tmp_path / "plain", *two, cache=False)
    assert "ProPainter priors" not in err and len(loads) == 2 and not (tmp_path / "plain" / "priors").exists()
    cached, plain = _tree(tmp_path / "cached"), _tree(tmp_path / "plain")
    assert cached == plain and sum(k.startswith("frames/") for k in plain) == 2 * 2 * FRAMES
    # the two models differ (other DiffuEraser weights), so the shared prior did not make them equal
    first = sorted(k.split("/")[2] for k in plain if k.startswith("frames/base/"))[0]
    assert plain[f"frames/base/{first}/00000.png"] != plain[f"frames/other/{first}/00000.png"]
    # resumed with one result removed: its prior comes from disk, ProPainter never loads, the bytes are the same
    loads.clear()
    unit = sorted((tmp_path / "cached" / "units" / "other").glob("*.json"))[0]
    unit.unlink()
    err = run(tmp_path / "cached", *two)
    assert "ProPainter priors: 0 computed (0.0 s), 1 reused (" in err and not loads
    assert _tree(tmp_path / "cached") == plain
