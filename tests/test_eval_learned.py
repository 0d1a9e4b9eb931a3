"""Learned metrics (regdpo.evaluation.learned): VFID equal to ProPainter's code on shared random
weights, the flow warping error on clips with a known motion, LPIPS from a user-given backbone,
and "not measured" (never 0) without weights.

The ProPainter comparison needs its checkout (``REGDPO_PROPAINTER_REPO=/path/to/ProPainter``) with
torchvision and scikit-image; the RAFT mechanics need the DiffuEraser checkout
(``REGDPO_DIFFUERASER_REPO``) as the models contract tests; LPIPS needs ``lpips`` + torchvision.
Each skips cleanly without them."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model_fixtures import diffueraser_skip_reason
from regdpo.audit import synthetic
from regdpo.evaluation import learned
from regdpo.evaluation.i3d import FEATURE_DIM, I3DFeatures, load_i3d, same_padding
from regdpo.evaluation.learned import LearnedMetrics, frechet_distance
from regdpo.evaluation.warp_error import visible_mask, warping_error

PROPAINTER = os.environ.get("REGDPO_PROPAINTER_REPO") or None
DIFFUERASER = os.environ.get("REGDPO_DIFFUERASER_REPO") or None


def _propainter_metrics():
    """ProPainter's own ``core.metrics`` module, or skip."""
    if PROPAINTER is None:
        pytest.skip("no ProPainter checkout: set REGDPO_PROPAINTER_REPO")
    if not (Path(PROPAINTER) / "core" / "metrics.py").is_file():
        pytest.skip(f"{PROPAINTER}: no core/metrics.py")
    for module in ("torchvision", "skimage", "scipy"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"ProPainter's core/metrics.py needs {module}")
    sys.path.insert(0, str(Path(PROPAINTER).resolve()))
    try:
        return importlib.import_module("core.metrics")
    except Exception as exc:  # noqa: BLE001 - their imports (cv2, torchvision ...) vary by version
        pytest.skip(f"cannot import ProPainter's core.metrics: {exc}")
    finally:
        sys.path.pop(0)


def _randomise(state: dict, seed: int) -> dict:
    """Every float tensor of ``state`` drawn anew (BatchNorm scales and running statistics included:
    an implementation that used the stored statistics, or ignored the scales, would differ)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if value.dtype.is_floating_point:
            drawn = torch.rand(value.shape, generator=gen)
            value = drawn + 0.5 if "running_var" in key else drawn * 0.2 - 0.1
        out[key] = value.clone()
    return out


def _clips(count: int, frames=8, height=64, width=80, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = synthetic.textured_clip(frames, height, width, seed=seed)
    return [np.clip(base.astype(np.int16) + rng.integers(-40, 41, base.shape), 0, 255).astype(np.uint8)
            for _ in range(count)]


# ---------------------------------------------------------------------- VFID against ProPainter's code


def test_i3d_activations_and_vfid_equal_propainters_code(tmp_path):
    metrics = _propainter_metrics()
    from PIL import Image

    theirs = metrics.InceptionI3d(400, in_channels=3, final_endpoint="Logits")  # as their init_i3d_model
    state = _randomise(theirs.state_dict(), seed=3)
    theirs.load_state_dict(state)
    torch.save(state, tmp_path / "i3d_rgb_imagenet.pt")
    ours = LearnedMetrics.from_paths(i3d_path=tmp_path / "i3d_rgb_imagenet.pt")
    assert ours.status()["vfid"] is None

    real, fake = _clips(3, height=48, seed=1), _clips(3, height=48, seed=2)
    real_theirs, fake_theirs, real_ours, fake_ours = [], [], [], []
    for gt, out in zip(real, fake):
        a, b = metrics.calculate_i3d_activations([Image.fromarray(f) for f in gt], [Image.fromarray(f) for f in out],
                                                 theirs, device="cpu")
        real_theirs.append(a)
        fake_theirs.append(b)
        real_ours.append(ours.i3d_activations(gt))
        fake_ours.append(ours.i3d_activations(out))
    assert real_ours[0].shape == (FEATURE_DIM,)
    np.testing.assert_allclose(np.stack(real_ours), np.stack(real_theirs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.stack(fake_ours), np.stack(fake_theirs), rtol=1e-5, atol=1e-6)
    assert np.abs(np.stack(real_ours) - np.stack(fake_ours)).max() > 1e-4  # the clips do differ

    # their Frechet distance on their activations = ours on ours (their sqrtm(disp=False) is deprecated: silence it)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = metrics.calculate_vfid(real_theirs, fake_theirs)
    got = frechet_distance(np.stack(real_ours), np.stack(fake_ours))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert got > 0


# ---------------------------------------------------------------------- I3D and Frechet distance, here


def test_same_padding_is_tensorflows():
    x = torch.zeros(1, 1, 5, 7, 8)
    # kernel 3 stride 2: T 5 -> total 2 (1, 1); H 7 -> 2 (1, 1); W 8 -> total 1 (0 before, 1 after)
    assert same_padding(x, (3, 3, 3), (2, 2, 2)).shape == (1, 1, 7, 9, 9)
    assert same_padding(x, (1, 1, 1), (1, 1, 1)).shape == x.shape
    padded = same_padding(torch.ones(1, 1, 1, 1, 8), (1, 1, 3), (1, 1, 2))
    assert padded[0, 0, 0, 0].tolist() == [1.0] * 8 + [0.0]  # total 1: none before, one after


def test_i3d_loads_a_checkpoint_strictly_and_uses_each_clips_statistics(tmp_path):
    net = I3DFeatures()
    state = _randomise(net.state_dict(), seed=5)
    state["logits.conv3d.weight"] = torch.zeros(400, 1024, 1, 1, 1)  # the classifier is dropped
    state["logits.conv3d.bias"] = torch.zeros(400)
    torch.save(state, tmp_path / "i3d.pt")
    loaded = load_i3d(tmp_path / "i3d.pt")
    clip = _clips(1, frames=8, height=48, width=48)[0]
    first = loaded.clip_features(clip)
    assert first.shape == (FEATURE_DIM,) and first.dtype == np.float32 and np.isfinite(first).all()
    # batch statistics: the stored running statistics neither matter nor change
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    loaded.load_state_dict({k: (v * 7 if "running" in k else v) for k, v in before.items()})
    np.testing.assert_array_equal(loaded.clip_features(clip), first)
    assert all(torch.equal(v, before[k] * (7 if "running" in k else 1)) for k, v in loaded.state_dict().items())

    del state["Mixed_5c.b0.conv3d.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="broken.pt"):
        load_i3d(tmp_path / "broken.pt")


def test_frechet_distance():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(40, 6))
    assert frechet_distance(acts, acts) == pytest.approx(0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0, 0, 0.5, 0])
    assert frechet_distance(acts, acts + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    # equal means, covariance scaled by 4: Tr(S + 4S - 2 * 2S) = Tr(S)
    cov = np.cov(acts, rowvar=False)
    assert frechet_distance(acts, 2 * acts - acts.mean(0)) == pytest.approx(np.trace(cov), rel=1e-6)
    # fewer clips than dimensions (every real VFID: 1024 values, tens of clips): finite
    few = rng.normal(size=(5, 30))
    assert np.isfinite(frechet_distance(few, few + 0.1))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(acts[:1], acts)


# ---------------------------------------------------------------------- E_warp, pure


def _moving_clip(frames=6, height=48, width=64, dx=2, dy=1):
    """A texture translated by (dx, dy) px per frame, and its exact flows."""
    big = synthetic.textured_clip(1, height + frames * abs(dy) + 2, width + frames * abs(dx) + 2, seed=4)[0]
    clip = np.stack([big[t * dy + 1: t * dy + 1 + height, t * dx + 1: t * dx + 1 + width][::1]
                     for t in range(frames)])  # frame t shows the scene shifted by -(t dx, t dy)
    forward = np.zeros((frames - 1, height, width, 2), np.float32)
    forward[..., 0], forward[..., 1] = -dx, -dy  # content at p in frame t is at p - (dx, dy) in t + 1
    return clip, forward, -forward


def test_warping_error_is_near_zero_along_the_true_motion_and_large_for_a_jump():
    clip, forward, backward = _moving_clip()
    steady = warping_error(clip, forward, backward)
    assert steady < 1e-5
    jumped = clip.copy()
    jumped[3] = np.roll(clip[3], 9, axis=1)  # one frame jumps 9 px sideways
    jump = warping_error(jumped, forward, backward)
    assert jump > 1e-3 and jump > 100 * max(steady, 1e-7)
    # the wrong motion (no flow) on the moving clip is large too: the flow matters
    still = np.zeros_like(forward)
    assert warping_error(clip, still, still) > 1e-3


def test_warping_error_of_the_hole_sees_only_the_hole():
    clip, forward, backward = _moving_clip()
    hole = np.zeros(clip.shape[:3], bool)
    hole[:, 10:30, 20:40] = True
    flicker = clip.copy()
    flicker[2, 40:, :] = 255 - flicker[2, 40:, :]  # a change outside the hole (rows 40+)
    assert warping_error(flicker, forward, backward) > 1e-3
    assert warping_error(flicker, forward, backward, region=hole) < 1e-5
    inside = clip.copy()
    inside[2, 12:28, 22:38] = 0  # a change inside the hole
    assert warping_error(inside, forward, backward, region=hole) > warping_error(inside, forward, backward)


def test_visible_mask_drops_occlusions_and_pixels_that_leave_the_frame():
    h, w = 20, 30
    forward = np.zeros((h, w, 2), np.float32)
    forward[..., 0] = 3  # everything moves 3 px right: the last 3 columns leave the frame
    backward = -forward
    mask = visible_mask(forward, backward)
    assert mask[:, : w - 4].all() and not mask[:, w - 2:].any()
    inconsistent = backward.copy()
    inconsistent[5:10, 5:15] = 5  # the way back does not return: occluded
    assert not visible_mask(forward, inconsistent)[6:9, 5:10].any()


# ---------------------------------------------------------------------- not measured, never 0


def test_without_weights_every_learned_metric_is_not_measured(tmp_path):
    metrics = LearnedMetrics.from_paths()
    status = metrics.status()
    assert set(status) == set(learned.METRICS)
    assert all(isinstance(reason, str) and "given" in reason for reason in status.values())
    clip = _clips(1, frames=3, height=32, width=32)[0]
    assert metrics.clip_metrics(clip, clip, np.zeros(clip.shape[:3], bool)) == {}
    with pytest.raises(RuntimeError, match="not measured"):
        metrics.i3d_activations(clip)

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    metrics = LearnedMetrics.from_paths(i3d_path=tmp_path / "absent.pt", raft_path=tmp_path / "junk.pt",
                                        lpips_path=tmp_path / "junk.pt")
    status = metrics.status()
    assert status["vfid"] == f"--i3d_path {tmp_path / 'absent.pt'}: file not found"
    assert status["ewarp"].startswith(f"--raft_path {tmp_path / 'junk.pt'}: cannot load")
    assert status["ewarp_hole"] == status["ewarp"]
    assert status["lpips"].startswith("--lpips_path")
    assert metrics.clip_metrics(clip, clip, np.zeros(clip.shape[:3], bool)) == {}


# ---------------------------------------------------------------------- RAFT mechanics (tiny random weights)


def test_raft_flows_of_the_gt_drive_the_warping_error(tmp_path):
    reason = diffueraser_skip_reason(DIFFUERASER)
    if reason:
        pytest.skip(reason)
    import argparse

    from regdpo.backends.models_source import import_source

    source = import_source(DIFFUERASER)
    torch.manual_seed(0)
    raft = source.raft_cls(argparse.Namespace(small=False, mixed_precision=False, alternate_corr=False))
    torch.save(torch.nn.DataParallel(raft).state_dict(), tmp_path / "raft-things.pth")
    metrics = LearnedMetrics.from_paths(raft_path=tmp_path / "raft-things.pth", diffueraser_repo=DIFFUERASER)
    assert metrics.status()["ewarp"] is None and metrics.status()["ewarp_hole"] is None
    metrics.raft_iters = 2
    gt = _clips(1, frames=3, height=40, width=56)[0]  # padded to 128 px for RAFT, flows cropped back
    hole = np.zeros(gt.shape[:3], bool)
    hole[:, 10:30, 10:40] = True
    forward, backward = metrics.gt_flows(gt)
    assert forward.shape == backward.shape == (2, 40, 56, 2) and np.isfinite(forward).all()
    out = metrics.clip_metrics(gt, gt[::-1].copy(), hole)
    assert set(out) == {"ewarp", "ewarp_hole"}
    assert out["ewarp"] == warping_error(gt[::-1].copy(), forward, backward)
    assert out["ewarp_hole"] == warping_error(gt[::-1].copy(), forward, backward, region=hole)
    calls = []
    metrics.raft = lambda *a, **k: calls.append(1)  # the GT's flows are cached: RAFT runs once per clip
    assert metrics.clip_metrics(gt, gt, hole).keys() == out.keys() and not calls


# ---------------------------------------------------------------------- LPIPS from a given backbone


def test_lpips_from_a_torchvision_alexnet_file(tmp_path):
    pytest.importorskip("lpips")
    tv = pytest.importorskip("torchvision")
    from regdpo.evaluation.lpips_net import load_lpips

    torch.manual_seed(0)
    alexnet = tv.models.alexnet(weights=None)
    torch.save(alexnet.state_dict(), tmp_path / "alexnet.pth")
    metrics = LearnedMetrics.from_paths(lpips_path=tmp_path / "alexnet.pth")
    assert metrics.status()["lpips"] is None
    model = metrics.lpips.model
    for index, part in ((0, 1), (3, 2), (6, 3), (8, 4), (10, 5)):
        assert torch.equal(getattr(model.net, f"slice{part}")._modules[str(index)].weight, alexnet.features[index].weight)
    gt = _clips(1, frames=3, height=64, width=64)[0]
    hole = np.zeros(gt.shape[:3], bool)
    assert metrics.clip_metrics(gt, gt, hole) == {"lpips": 0.0}
    noisy = np.clip(gt.astype(int) + np.random.default_rng(1).integers(-60, 61, gt.shape), 0, 255).astype(np.uint8)
    assert metrics.clip_metrics(gt, noisy, hole)["lpips"] > 0
    # a whole LPIPS state dict loads too, to the same distance
    torch.save(model.state_dict(), tmp_path / "lpips_alex.pth")
    again = load_lpips(tmp_path / "lpips_alex.pth")
    assert again.video_distance(gt, noisy) == pytest.approx(metrics.lpips.video_distance(gt, noisy), rel=1e-6)
