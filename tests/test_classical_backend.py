"""The classical CPU backend: each negative shows its intended defect, deterministically."""


import cv2
import numpy as np
import pytest

import regdpo.backends.classical as classical
from regdpo.backends.base import Clip
from regdpo.backends.classical import ClassicalBackend, choose_offsets, reflect_index
from regdpo.frames import composite
from regdpo.generate.masks import hard_masks, random_masks
from regdpo.audit import metrics as M
from regdpo.audit.config import AuditConfig
from helpers import DATA



def textured_clip(t=12, h=96, w=128, seed=0):
    """A panning textured scene: blurred noise + gradients, shifting 1 px per frame (coherent motion)."""
    r = np.random.default_rng(seed)
    big = r.integers(0, 256, (h, w + t, 3)).astype(np.float32)
    big = cv2.GaussianBlur(big, (3, 3), 0.8)
    big += np.linspace(0, 60, w + t)[None, :, None]
    big = np.clip(big, 0, 255).astype(np.uint8)
    return np.stack([big[:, i:i + w] for i in range(t)])


def real_clip(t=12):
    folder = DATA / "DAVIS" / "JPEGImages" / "480p" / "tennis"
    if not folder.is_dir():
        pytest.skip(f"real-video fixtures not found at {DATA}")
    frames = [cv2.imread(str(folder / f"{i:05d}.jpg"))[:, :, ::-1] for i in range(t)]
    return np.stack([cv2.resize(f, (232, 128), interpolation=cv2.INTER_AREA) for f in frames])


def laplacian_energy(frames, hole):
    """Mean squared Laplacian inside the (eroded) hole: high-frequency texture."""
    vals = []
    for f, h in zip(frames, hole):
        lap = cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)
        inner = cv2.erode(h.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        vals.append((lap[inner] ** 2).mean())
    return float(np.mean(vals))


def hole_step(frames, hole):
    """Mean |frame t+1 - frame t| inside the holes of both frames, per transition."""
    f = frames.astype(np.float32)
    both = hole[1:] & hole[:-1]
    return np.array([np.abs(f[i + 1] - f[i])[both[i]].mean() for i in range(len(both))])


@pytest.fixture(params=["synthetic", "davis"])
def clip(request):
    frames = textured_clip() if request.param == "synthetic" else real_clip()
    t, h, w, _ = frames.shape
    hole, _ = random_masks(t, h, w, np.random.default_rng(5), area_range=(0.15, 0.2))
    return Clip("test_clip", frames, hole, seed=1234)


def test_every_type_has_the_clip_shape_and_equals_gt_outside_the_hole(clip):
    res = ClassicalBackend().generate(clip, ["hallucination", "blur", "flicker"])
    assert set(res.negatives) == {"hallucination", "blur", "flicker"}
    for t, neg in res.negatives.items():
        assert neg.shape == clip.frames.shape and neg.dtype == np.uint8
        np.testing.assert_array_equal(neg[~clip.hole], clip.frames[~clip.hole])
        assert np.abs(neg[clip.hole].astype(int) - clip.frames[clip.hole]).mean() > 5, t
        assert res.info[t]["classical_approximation"] is True


def test_blur_lacks_high_frequency_texture(clip):
    blur = ClassicalBackend().generate(clip, ["blur"]).negatives["blur"]
    assert laplacian_energy(blur, clip.hole) < 0.2 * laplacian_energy(clip.frames, clip.hole)


def test_hallucination_is_textured_wrong_and_temporally_coherent(clip):
    res = ClassicalBackend().generate(clip, ["hallucination", "blur"])
    hal = res.negatives["hallucination"]
    # keeps real texture (unlike blur), but not the GT's
    assert laplacian_energy(hal, clip.hole) > 0.3 * laplacian_energy(clip.frames, clip.hole)
    assert np.abs(hal[clip.hole].astype(int) - clip.frames[clip.hole]).mean() > 10
    # coherent: no frame-to-frame jump larger than the scene's own changes
    gt_step = hole_step(clip.frames, clip.hole)
    assert hole_step(hal, clip.hole).max() < 2.0 * gt_step.max() + 8.0
    dy, dx = res.info["hallucination"]["offset_yx"]
    assert abs(dy) + abs(dx) > 0


def test_flicker_jumps_at_segment_boundaries_only(clip):
    res = ClassicalBackend(flicker_segments=3).generate(clip, ["flicker"])
    segments = res.info["flicker"]["segments"]
    assert [(s["start"], s["stop"]) for s in segments] == [(0, 4), (4, 8), (8, 12)]
    # measured as the audit does (flow-compensated, beyond the GT's own change): the hole follows the
    # scene inside a segment and jumps at each boundary
    cfg = AuditConfig()
    ref = M.reference(clip.frames, clip.hole, cfg)
    m = M.measure_negative(ref, res.negatives["flicker"], cfg, segments)
    assert m["segment_boundaries"] == [4, 8]
    assert m["boundary_excess_mean"] > max(2.0, 2.0 * m["interior_excess_mean"]), m


def test_deterministic_and_seed_dependent(clip):
    a = ClassicalBackend().generate(clip, ["hallucination", "blur", "flicker"])
    b = ClassicalBackend().generate(clip, ["hallucination", "blur", "flicker"])
    c = ClassicalBackend().generate(Clip(clip.name, clip.frames, clip.hole, seed=99), ["hallucination", "flicker"])
    for t in a.negatives:
        np.testing.assert_array_equal(a.negatives[t], b.negatives[t])
    assert a.info == b.info
    assert not np.array_equal(a.negatives["hallucination"], c.negatives["hallucination"])


def test_shared_blur_fill_is_computed_once_per_video(monkeypatch):
    frames = textured_clip()
    hole, _ = hard_masks(12, 96, 128, np.random.default_rng(0))
    calls = []
    real = classical.hole_lowpass
    monkeypatch.setattr(classical, "hole_lowpass", lambda *a, **k: calls.append(1) or real(*a, **k))
    ClassicalBackend().generate(Clip("c", frames, hole, 1), ["hallucination", "blur", "flicker"])
    assert len(calls) == 1


def test_hard_holes_and_empty_frames_are_handled():
    frames = textured_clip(t=6, h=64, w=64)
    hole, _ = hard_masks(6, 64, 64, np.random.default_rng(2))
    hole[2] = False  # a frame without hole
    res = ClassicalBackend(flicker_segments=2).generate(Clip("c", frames, hole, 7), ["hallucination", "blur", "flicker"])
    for neg in res.negatives.values():
        np.testing.assert_array_equal(composite(neg, frames, hole), neg)
        np.testing.assert_array_equal(neg[2], frames[2])


def test_offsets_point_away_from_the_hole():
    hole = np.zeros((4, 64, 96), bool)
    hole[:, 20:40, 30:50] = True
    offs = choose_offsets(hole, np.random.default_rng(0), 4)
    assert len(set(offs)) == 4
    for dy, dx in offs:
        ys = reflect_index(np.arange(20, 40) - dy, 64)
        xs = reflect_index(np.arange(30, 50) - dx, 96)
        assert not hole[0][np.ix_(ys, xs)].any()  # donor region lies outside the hole


def test_reflect_index_mirrors_like_opencv():
    idx = np.arange(-12, 20)
    row = np.arange(8, dtype=np.float32)[None, :]
    expected = cv2.remap(row, idx.astype(np.float32)[None, :], np.zeros((1, idx.size), np.float32),
                         cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)[0]
    np.testing.assert_array_equal(reflect_index(idx, 8), expected.astype(int))


def test_unknown_type_is_refused():
    frames = textured_clip(t=2, h=16, w=16)
    with pytest.raises(ValueError, match="unknown negative type"):
        ClassicalBackend().generate(Clip("c", frames, np.zeros((2, 16, 16), bool), 0), ["smear"])


def test_inpaint_is_the_best_classical_fill(clip):
    """inpaint: temporal propagation + Telea; closer to the GT in the hole than hallucination (blur and
    flicker keep the GT's structure in the hole by design, see the purity tests, so they can be closer)."""
    res = ClassicalBackend().generate(clip, list(classical.NEG_TYPES))
    inpaint = res.negatives["inpaint"]
    np.testing.assert_array_equal(inpaint[~clip.hole], clip.frames[~clip.hole])
    assert not np.array_equal(inpaint[clip.hole], clip.frames[clip.hole])
    err = {t: np.abs(n[clip.hole].astype(int) - clip.frames[clip.hole]).mean() for t, n in res.negatives.items()}
    assert err["inpaint"] < err["hallucination"], err
    again = ClassicalBackend().generate(clip, ["inpaint"]).negatives["inpaint"]
    np.testing.assert_array_equal(again, inpaint)


def test_propagate_fill_takes_the_nearest_visible_frame():
    frames = np.stack([np.full((4, 4, 3), 10 * (t + 1), np.uint8) for t in range(4)])
    hole = np.zeros((4, 4, 4), bool)
    hole[1, 1, 1] = hole[2, 1, 1] = True  # visible in frames 0 and 3
    hole[:, 3, 3] = True  # never visible: Telea from its neighbours
    out = classical.propagate_fill(frames, hole)
    assert out[1, 1, 1, 0] == 10 and out[2, 1, 1, 0] == 40  # frame 1 <- frame 0, frame 2 <- frame 3
    assert out[0, 3, 3, 0] == 10 and out[3, 3, 3, 0] == 40  # flat neighbours: Telea gives their value
