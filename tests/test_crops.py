"""Crop selection (regdpo.crops): every crop holds the hole; pure functions over many draws."""

import numpy as np
import pytest

from regdpo.crops import choose_crop, choose_window_start, crop_coverage


def brute_coverage(count, ch, cw):
    h, w = count.shape
    return np.array([[count[y : y + ch, x : x + cw].sum() for x in range(w - cw + 1)] for y in range(h - ch + 1)])


def test_crop_coverage_equals_brute_force():
    rng = np.random.default_rng(0)
    count = rng.integers(0, 5, (13, 29))
    for ch, cw in [(13, 13), (5, 7), (1, 1), (13, 29)]:
        assert np.array_equal(crop_coverage(count, (ch, cw)), brute_coverage(count, ch, cw))
    with pytest.raises(ValueError, match="does not fit"):
        crop_coverage(count, (14, 3))


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("center", [False, True])
def test_wide_frame_hole_at_one_side_is_always_held(side, center):
    count = np.zeros((64, 240), np.int64)  # a 64-px crop of a 240-px wide frame
    xs = slice(2, 30) if side == "left" else slice(200, 238)
    count[20:40, xs] = 3
    total = int(count.sum())
    coverage = crop_coverage(count, (64, 64))
    rng = np.random.default_rng(1)
    chosen = set()
    for _ in range(2000):
        y, x = choose_crop(coverage, total, 0.5, tuple(rng.random(2)), center)
        assert coverage[y, x] >= 0.5 * total
        chosen.add(x)
    held = {x for x in range(coverage.shape[1]) if coverage[0, x] >= 0.5 * total}
    assert chosen == ({min(held, key=lambda x: abs(x - 88))} if center else held)  # random: all of them


def test_hole_larger_than_the_crop_falls_back_to_best_covering():
    count = np.zeros((32, 200), np.int64)
    count[:, 10:150] = 1  # 140 px wide, crop 32: at most 23 % held
    coverage = crop_coverage(count, (32, 32))
    best = coverage.max()
    rng = np.random.default_rng(2)
    for _ in range(300):
        for center in (False, True):
            y, x = choose_crop(coverage, int(count.sum()), 0.5, tuple(rng.random(2)), center)
            assert coverage[y, x] == best
    assert choose_crop(coverage, int(count.sum()), 0.5, (0.3, 0.3), True) == (0, 84)  # the centre itself is best-covering


def test_no_hole_or_zero_share_is_the_plain_uniform_crop():
    rng = np.random.default_rng(3)
    count = np.zeros((40, 90), np.int64)
    coverage = crop_coverage(count, (24, 24))
    for _ in range(100):
        u = tuple(rng.random(2))
        assert choose_crop(coverage, 0, 0.5, u) == (int(u[0] * 17), int(u[1] * 67))
    count[0, 0] = 1
    coverage = crop_coverage(count, (24, 24))
    assert choose_crop(coverage, 1, 0.0, (0.99, 0.99)) == (16, 66)  # share 0: every position
    assert choose_crop(coverage, 0, 0.5, (0.0, 0.0), center=True) == (8, 33)  # plain centre crop


def test_choose_window_start_holds_a_hole_frame():
    has = [False] * 30
    has[27] = True
    rng = np.random.default_rng(4)
    starts = {choose_window_start(has, 5, rng.random()) for _ in range(500)}
    assert starts == set(range(23, 26))
    assert {choose_window_start([False] * 8, 5, u) for u in (0.0, 0.5, 0.99)} == {0, 2, 3}
    with pytest.raises(ValueError, match="fewer than nframes"):
        choose_window_start([True] * 3, 5, 0.1)
