"""`regdpo eval` with the learned metrics: --i3d_path (VFID per model over the split), --raft_path (per-clip
E_warp in the paired comparison), --lpips_path, the defaults from --propainter_model_dir, and refusals.

VFID runs here (our own I3D, random weights); E_warp and LPIPS need the DiffuEraser checkout
(``REGDPO_DIFFUERASER_REPO``) / the ``lpips`` package and skip without them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tree_files
from model_fixtures import diffueraser_skip_reason
from regdpo.cli import main
from regdpo.evaluation import evalset as es
from regdpo.evaluation.i3d import I3DFeatures
from regdpo.evaluation.learned import LearnedMetrics, frechet_distance
from regdpo.frames import read_rgb, write_rgb

DIFFUERASER = os.environ.get("REGDPO_DIFFUERASER_REPO") or None


@pytest.fixture(scope="module")
def evalset_dir(tmp_path_factory) -> Path:
    from regdpo.audit.synthetic import textured_clip

    root = tmp_path_factory.mktemp("videos")
    for k in range(3):
        folder = root / f"src{k}"
        folder.mkdir()
        for i, frame in enumerate(textured_clip(10, 56, 72, seed=k + 1)):
            write_rgb(folder / f"{i:05d}.png", frame)
    out = tmp_path_factory.mktemp("es") / "set"
    assert main(["evalset", str(out), "--video_root", str(root), "--nframes", "4", "--height", "32", "--width",
                 "48", "--split", "test:3", "--no_progress"]) == 0
    return out


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = I3DFeatures()
    gen = torch.Generator().manual_seed(2)
    state = {k: (torch.rand(v.shape, generator=gen) * 0.2 - 0.1 if v.dtype.is_floating_point else v)
             for k, v in net.state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "i3d_rgb_imagenet.pt"
    torch.save(state, path)
    return path


def _eval(evalset_dir: Path, out: Path, *extra: str) -> int:
    return main(["eval", str(evalset_dir), "--model", "base=inpaint", "--model", "blurry=blur", "--output_dir",
                 str(out), "--backend", "classical", "--no_progress", "--no_html", *extra])


def test_vfid_per_model_over_the_split_from_the_saved_frames(evalset_dir, i3d_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert _eval(evalset_dir, out, "--i3d_path", str(i3d_file), "--save_frames") == 0
    doc = json.loads((out / "eval.json").read_text())
    spec = next(s for s in doc["metrics"] if s["name"] == "vfid")
    assert spec["level"] == "set" and spec["higher_is_better"] is False
    # recomputed from the eval set's GT and the lossless saved outputs with the same weights
    evalset = es.load_evalset(evalset_dir)
    metrics = LearnedMetrics.from_paths(i3d_path=i3d_file)
    real = [metrics.i3d_activations(evalset.read_clip(c)[0]) for c in evalset.split("test")]
    assert doc["summary"]["base"]["vfid"]["n"] == doc["summary"]["blurry"]["vfid"]["n"] == 3
    fake = [metrics.i3d_activations(np.stack([read_rgb(p) for p in sorted((out / "frames" / "blurry" / c.name)
                                                                             .glob("*.png"))]))
            for c in evalset.split("test")]
    expected = frechet_distance(np.stack(real), np.stack(fake))
    assert doc["summary"]["blurry"]["vfid"]["value"] == pytest.approx(expected, rel=1e-6)
    (comparison,) = doc["comparisons"]
    vfid = comparison["metrics"]["vfid"]
    assert vfid["delta"] == pytest.approx(doc["summary"]["blurry"]["vfid"]["value"] - doc["summary"]["base"]["vfid"]
                                          ["value"])
    assert doc["summary"]["base"]["vfid"]["value"] != doc["summary"]["blurry"]["vfid"]["value"]
    assert "ewarp, ewarp_hole not measured" in capsys.readouterr().err
    # resumed: the stored activations give the same figure without rerunning anything
    before = doc["summary"]
    assert _eval(evalset_dir, out, "--i3d_path", str(i3d_file), "--save_frames") == 0
    assert "reusing 6 finished" in capsys.readouterr().err
    assert json.loads((out / "eval.json").read_text())["summary"] == before


def test_i3d_default_from_the_propainter_model_dir(evalset_dir, i3d_file, tmp_path):
    model_dir = tmp_path / "propainter"
    model_dir.mkdir()
    (model_dir / "i3d_rgb_imagenet.pt").symlink_to(i3d_file)
    out = tmp_path / "out"
    assert _eval(evalset_dir, out, "--propainter_model_dir", str(model_dir)) == 0
    summary = json.loads((out / "eval.json").read_text())["summary"]
    assert isinstance(summary["base"]["vfid"]["value"], float)
    # raft-things.pth is not there: E_warp not measured, with the reason
    doc = json.loads((out / "eval.json").read_text())
    reason = doc["clips"][0]["not_measured"]["base"]["ewarp"]
    assert reason == f"no --raft_path given and {model_dir / 'raft-things.pth'} not found"


@pytest.mark.parametrize("flag", ["--i3d_path", "--raft_path", "--lpips_path"])
def test_a_named_weights_file_that_is_absent_or_broken_is_one_line_exit_2(flag, evalset_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _eval(evalset_dir, out, flag, str(tmp_path / "absent.pt")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{flag} {tmp_path / 'absent.pt'}: file not found" in err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert _eval(evalset_dir, out, flag, str(tmp_path / "junk.pt")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{flag} {tmp_path / 'junk.pt'}: cannot load" in err
    assert not out.exists()


def test_ewarp_and_lpips_per_clip_in_the_paired_comparison(evalset_dir, tmp_path):
    reason = diffueraser_skip_reason(DIFFUERASER, ("lpips",))
    if reason:
        pytest.skip(reason)
    import argparse

    import torchvision

    from regdpo.backends.models_source import import_source

    torch.manual_seed(0)
    raft = import_source(DIFFUERASER).raft_cls(argparse.Namespace(small=False, mixed_precision=False,
                                                                  alternate_corr=False))
    torch.save(torch.nn.DataParallel(raft).state_dict(), tmp_path / "raft-things.pth")
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "alexnet.pth")
    out = tmp_path / "out"
    args = ["--raft_path", str(tmp_path / "raft-things.pth"), "--lpips_path", str(tmp_path / "alexnet.pth")]
    if DIFFUERASER:
        args += ["--diffueraser_repo", DIFFUERASER]
    assert _eval(evalset_dir, out, *args) == 0
    doc = json.loads((out / "eval.json").read_text())
    for clip in doc["clips"]:
        for model in ("base", "blurry"):
            assert all(isinstance(clip[model][m], float) and clip[model][m] >= 0 for m in ("ewarp", "ewarp_hole",
                                                                                          "lpips"))
    (comparison,) = doc["comparisons"]
    for metric in ("ewarp", "ewarp_hole", "lpips"):
        stats = comparison["metrics"][metric]
        assert stats["n"] == 3 and stats["wins"] + stats["ties"] + stats["losses"] == 3
    assert not any(p.startswith("frames/") for p in tree_files(out))
