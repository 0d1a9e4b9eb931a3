"""Quality score, band and purity on controlled degradations of real frames (in memory, no files):
the score orders negatives as a person would, GT scores 1, and impure negatives are flagged."""

from __future__ import annotations

import numpy as np
import pytest

from regdpo.audit import metrics as M
from regdpo.audit import quality as Q
from regdpo.audit import synthetic as S
from regdpo.audit.config import AuditConfig
from regdpo.errors import UsageError
from regdpo.seeding import rng
from helpers import audit_clips

T, H, W = 12, 112, 192
CFG = AuditConfig()


CLIPS = audit_clips(T, H, W)


@pytest.fixture(params=sorted(CLIPS), scope="module")
def case(request):
    gt = CLIPS[request.param]
    hole = S.moving_ellipse_hole(T, H, W, seed=3)
    ref = M.reference(gt, hole, CFG)

    def measure(neg, segments=None):
        return M.measure_negative(ref, np.where(hole[..., None], neg, gt), CFG, segments)

    return request.param, gt, hole, measure


def _score(metrics):
    return Q.quality_score(metrics, CFG)


def _noisy(gt, sigma, seed=0):
    return np.clip(gt + rng(seed, "noise").normal(0, sigma, gt.shape), 0, 255).astype(np.uint8)


def _segment_shift(gt, hole, shifts):
    """Brightness ``shifts[k]`` in the hole during segment k: plausible frames, jumps between segments."""
    segments = S.plan_segments(gt.shape[0], len(shifts))
    out = gt.astype(np.int16)
    for (start, stop), shift in zip(segments, shifts):
        out[start:stop] += shift
    return np.clip(out, 0, 255).astype(np.uint8), segments


def test_gt_scores_one_and_is_too_good(case):
    name, gt, hole, measure = case
    metrics = measure(gt.copy())
    assert _score(metrics) == pytest.approx(1.0)
    assert Q.band_of(_score(metrics)) == "too_good"
    assert Q.impurities("blur", metrics, CFG) == []


@pytest.mark.parametrize("kind,levels", [("blur", (0.5, 1.0, 2.0, 4.0)), ("noise", (4, 10, 20, 40)),
                                         ("shift", (1, 2, 4, 8, 16))])
def test_stronger_degradation_scores_lower(case, kind, levels):
    name, gt, hole, measure = case
    make = {"blur": S.blur_negative, "noise": _noisy, "shift": lambda g, d: np.roll(g, d, axis=2)}[kind]
    scores = [_score(measure(make(gt, level))) for level in levels]
    assert all(a > b for a, b in zip(scores, scores[1:])), (name, kind, scores)
    assert 0.0 <= scores[-1] < scores[0] < 1.0


def test_ordering_across_kinds_matches_a_viewer(case):
    """Slight blur > strong blur > unrelated content; a jump between plausible frames costs."""
    name, gt, hole, measure = case
    other = S.textured_clip(T, H, W, seed=9, speed=0.5)
    slight, strong = _score(measure(S.blur_negative(gt, 0.5))), _score(measure(S.blur_negative(gt, 4.0)))
    foreign = _score(measure(other))
    assert slight > strong > foreign, (name, slight, strong, foreign)
    assert Q.band_of(foreign) == "too_bad" and Q.band_of(slight) == "too_good"
    steady, _ = _segment_shift(gt, hole, (12, 12, 12))
    jumping, segments = _segment_shift(gt, hole, (12, -12, 12))
    m_steady, m_jump = measure(steady), measure(jumping, segments)
    t_jump, t_steady = Q.quality_terms(m_jump, CFG)["temporal"], Q.quality_terms(m_steady, CFG)["temporal"]
    assert t_jump < 0.6 < t_steady, (name, t_jump, t_steady)
    assert _score(m_jump) < _score(m_steady), (name, _score(m_jump), _score(m_steady))


def test_terms_and_bands():
    terms = Q.quality_terms({"hole_psnr_db": 25.0, "hole_ssim": 0.6, "peak_excess": 2.0}, CFG)
    assert terms["psnr_term"] == pytest.approx(0.5) and terms["fidelity"] == pytest.approx(0.55)
    assert terms["temporal"] == pytest.approx(0.5) and terms["quality_score"] == pytest.approx(0.275)
    no_transition = Q.quality_terms({"hole_psnr_db": 100.0, "hole_ssim": 1.0}, CFG)
    assert no_transition["quality_score"] == 1.0  # clamped PSNR, no temporal evidence
    assert Q.quality_terms({}, CFG) is None and Q.band_of(None) is None
    assert [Q.band_of(x) for x in (0.0, 0.2999, 0.30, 0.45, 0.65, 0.6501, 1.0)] == [
        "too_bad", "too_bad", "eligible", "eligible", "eligible", "too_good", "too_good"]
    assert Q.band_of(0.5, (0.6, 0.9)) == "too_bad"
    assert Q.check_band([0.2, 0.5]) == (0.2, 0.5)
    for bad in ([0.5, 0.5], [0.7, 0.2], [-0.1, 0.5], [0.2, 1.5], [float("nan"), 0.5]):
        with pytest.raises(ValueError, match="--band"):
            Q.check_band(bad)
    with pytest.raises(UsageError, match="--quality-psnr-ceil-db"):
        AuditConfig(quality_psnr_floor_db=30, quality_psnr_ceil_db=20)


def test_pure_negatives_are_not_flagged(case):
    name, gt, hole, measure = case
    assert Q.impurities("blur", measure(S.blur_negative(gt, 2.0)), CFG) == []
    flicker, segments = _segment_shift(gt, hole, (16, -16, 16))
    m = measure(flicker, segments)
    assert M.verdict("flicker", m, CFG)[0] in ("weak", "clear"), (name, m["peak_excess"])
    assert Q.impurities("flicker", m, CFG) == []


def test_impure_negatives_are_flagged(case):
    name, gt, hole, measure = case
    # a blur whose segments jump in brightness: it flickers too
    blurred = S.blur_negative(gt, 2.0)
    jumpy, segments = _segment_shift(blurred, hole, (20, -20, 20))
    m = measure(jumpy, segments)
    assert "flicker" in Q.impurities("blur", m, CFG), (name, m["peak_excess"])
    # a blur of content from elsewhere: it hallucinates too
    m = measure(S.blur_negative(S.textured_clip(T, H, W, seed=9, speed=0.5), 2.0))
    assert "hallucination" in Q.impurities("blur", m, CFG), (name, m["lowpass_psnr_db"])
    # a flicker that is also a heavy blur
    jumpy, segments = _segment_shift(S.blur_negative(gt, 4.0), hole, (16, -16, 16))
    m = measure(jumpy, segments)
    if m["gt_laplacian_energy"] >= CFG.texture_floor:
        assert "blur" in Q.impurities("flicker", m, CFG), (name, m["sharpness_loss_db"])
    # a type without a defect of its own (a model's own inpainting) is never impure
    assert Q.impurities("inpaint", m, CFG) == []
