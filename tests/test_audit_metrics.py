"""Audit measurements on in-memory clips (no files): each defect moves its own metric."""

from __future__ import annotations


import numpy as np
import pytest

from regdpo.audit import metrics as M
from regdpo.audit import synthetic as S
from regdpo.audit.config import AuditConfig
from regdpo.errors import UsageError
from helpers import DATA, audit_clips

T, H, W = 12, 112, 192
CFG = AuditConfig()


CLIPS = audit_clips(T, H, W)


@pytest.fixture(params=sorted(CLIPS), scope="module")
def case(request):
    name = request.param
    gt = CLIPS[name]
    other = CLIPS["texture"] if name != "texture" else S.textured_clip(T, H, W, seed=9, speed=0.5)
    if name != "texture" and len(CLIPS) > 2:  # hallucinate from another real clip
        other = CLIPS[[n for n in sorted(CLIPS) if n not in (name, "texture")][0]]
    hole = S.moving_ellipse_hole(T, H, W, seed=3)
    negs, segments = S.good_negatives(gt, hole, other)
    negs = {k: np.where(hole[..., None], v, gt) for k, v in negs.items()}
    return name, gt, hole, negs, segments, M.reference(gt, hole, CFG)


def test_real_fixtures_present_or_reason():
    if not (DATA / "DAVIS").is_dir():
        pytest.skip(f"real-video fixtures not found at {DATA}: only the procedural clip was tested")
    assert len(CLIPS) >= 3


def test_each_negative_clearly_shows_its_own_defect(case):
    name, gt, hole, negs, segments, ref = case
    for neg_type, neg in negs.items():
        metrics = M.measure_negative(ref, neg, CFG, segments if neg_type == "flicker" else None)
        verdict, _ = M.verdict(neg_type, metrics, CFG)
        assert verdict == "clear", (name, neg_type, metrics[M.SCORE_OF[neg_type][0]])


def test_gt_copy_shows_no_defect(case):
    name, gt, hole, negs, segments, ref = case
    metrics = M.measure_negative(ref, gt.copy(), CFG, segments)
    assert metrics["sharpness_loss_db"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["lowpass_psnr_db"] == 100.0
    assert metrics["peak_excess"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["jump_frames"] == []
    for neg_type in M.SCORE_OF:
        assert M.verdict(neg_type, metrics, CFG)[0] == "none"


def test_blur_is_monotonic_in_sigma_and_does_not_read_as_other_defects(case):
    name, gt, hole, negs, segments, ref = case
    losses = []
    for sigma in (0.5, 1.0, 2.0, 4.0):
        neg = np.where(hole[..., None], S.blur_negative(gt, sigma), gt)
        m = M.measure_negative(ref, neg, CFG)
        losses.append(m["sharpness_loss_db"])
        if sigma <= 2.0:  # blur finer than the low-pass keeps the structure
            assert m["lowpass_psnr_db"] > CFG.hallucination_weak_psnr, (name, sigma)
        assert m["peak_excess"] < CFG.flicker_weak_excess, (name, sigma)  # blur does not flicker
    assert losses == sorted(losses) and losses[0] > 0


def test_flicker_jumps_fall_on_segment_boundaries(case):
    name, gt, hole, negs, segments, ref = case
    m = M.measure_negative(ref, negs["flicker"], CFG, segments)
    assert m["segment_boundaries"] == [s for s, _ in segments[1:]]
    assert m["peak_frame"] in m["segment_boundaries"], (name, m["excess_per_transition"])
    assert m["boundaries_with_jump"] == len(segments) - 1
    assert m["boundary_excess_mean"] > m["interior_excess_mean"] + 1.0
    assert m["instability_ratio"] > 1.0 and m["residual_change_ratio"] > 1.0


def test_single_jump_in_a_static_clip_is_located():
    gt = np.tile(S.textured_clip(1, 64, 64, seed=2), (8, 1, 1, 1))
    hole = np.zeros((8, 64, 64), bool)
    hole[:, 16:48, 16:48] = True
    neg = gt.copy()
    neg[5:, 16:48, 16:48] = np.clip(neg[5:, 16:48, 16:48].astype(int) + 30, 0, 255)
    neg[:5, 16:48, 16:48] = np.clip(neg[:5, 16:48, 16:48].astype(int) - 30, 0, 255)
    ref = M.reference(gt, hole, CFG)
    m = M.measure_negative(ref, neg, CFG, [[0, 5], [5, 8]])
    assert m["jump_frames"] == [5] and m["peak_frame"] == 5
    assert m["peak_excess"] > 20  # a 60-level jump on a still scene (floor 1 grey level)
    assert m["jumps_off_boundary"] == []


def test_invariant_helpers():
    gt = S.textured_clip(4, 32, 32, seed=5)
    hole = np.zeros((4, 32, 32), bool)
    hole[:, 8:24, 8:24] = True
    neg = gt.copy()
    neg[1:, 8:24, 8:24] ^= 1  # frame 0 untouched inside the hole
    assert M.frames_identical_in_hole(gt, neg, hole) == [0]
    assert M.outside_hole_difference(gt, neg, hole) == {"max_abs_diff": 0, "pixels": 0, "worst_frame": -1}
    neg[2, 0, 0] = gt[2, 0, 0] ^ 7
    out = M.outside_hole_difference(gt, neg, hole)
    assert out["pixels"] == 1 and out["worst_frame"] == 2 and 0 < out["max_abs_diff"] <= 7
    assert M.mask_values_binary(np.array([0, 255, 255], np.uint8)) == []
    assert M.mask_values_binary(np.array([0, 128, 255, 1], np.uint8)) == [1, 128]


def test_empty_hole_has_no_reference_and_segments_are_parsed():
    gt = S.textured_clip(3, 32, 32)
    assert M.reference(gt, np.zeros((3, 32, 32), bool), CFG) is None
    assert M.segment_boundaries([[0, 8], [8, 15], [15, 22]], 22) == [8, 15]
    assert M.segment_boundaries(None, 22) is None
    assert M.segment_boundaries([["x"]], 22) is None
    assert M.segment_boundaries([{"start": 0, "stop": 4, "mix": 0.5}, {"start": 4, "stop": 12}], 12) == [4]
    assert M.segment_boundaries([{"begin": 0}], 12) is None


def test_flat_hole_gives_texture_note():
    gt = np.full((4, 48, 48, 3), 120, np.uint8)
    hole = np.zeros((4, 48, 48), bool)
    hole[:, 10:30, 10:30] = True
    ref = M.reference(gt, hole, CFG)
    m = M.measure_negative(ref, gt.copy(), CFG)
    verdict, note = M.verdict("blur", m, CFG)
    assert verdict == "none" and "no texture" in note


def test_config_rejects_inconsistent_thresholds():
    with pytest.raises(UsageError, match="--blur-clear-db"):
        AuditConfig(blur_weak_db=5, blur_clear_db=3)
    with pytest.raises(UsageError, match="--hallucination-clear-psnr"):
        AuditConfig(hallucination_clear_psnr=30, hallucination_weak_psnr=25)
    with pytest.raises(UsageError, match="--flow-preset"):
        AuditConfig(flow_preset="slow")
