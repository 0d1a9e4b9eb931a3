"""Hole masks of the generator: random, hard and object modes (bool [T,H,W], True = hole)."""

import numpy as np
import pytest
from PIL import Image

from regdpo.errors import FrameReadError
from regdpo.generate.masks import (
    AnnotatedVideo,
    AnnotationPool,
    catmull_rom_closed,
    hard_masks,
    make_masks,
    pingpong_indices,
    polygon_area,
    random_masks,
    read_annotation,
)

SIZES = [(64, 112), (128, 128), (96, 64), (240, 432)]


def test_catmull_rom_passes_through_control_points_and_is_closed():
    square = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
    curve = catmull_rom_closed(square, samples_per_segment=8)
    assert curve.shape == (32, 2)
    np.testing.assert_allclose(curve[::8], square)  # t = 0 of every segment is its control point
    assert polygon_area(square) == pytest.approx(16.0)
    assert 14.0 < polygon_area(curve) < 24.0  # a smooth curve close to the square (bulges a little)


@pytest.mark.parametrize("mode", ["random", "hard"])
def test_masks_are_deterministic_bool_and_seed_dependent(mode):
    a, info_a = make_masks(mode, 10, 64, 96, np.random.default_rng(3))
    b, info_b = make_masks(mode, 10, 64, 96, np.random.default_rng(3))
    c, _ = make_masks(mode, 10, 64, 96, np.random.default_rng(4))
    assert a.dtype == np.bool_ and a.shape == (10, 64, 96)
    np.testing.assert_array_equal(a, b)
    assert info_a == info_b
    assert not np.array_equal(a, c)


def test_random_masks_cover_5_to_25_percent_and_move_smoothly_or_stay():
    fractions, saw_moving, saw_still = [], False, False
    for seed in range(80):
        h, w = SIZES[seed % len(SIZES)]
        holes, info = random_masks(12, h, w, np.random.default_rng(seed))
        per_frame = holes.reshape(12, -1).mean(1)
        fractions.append(per_frame.mean())
        assert per_frame.min() > 0.02 and per_frame.max() < 0.32, (seed, per_frame)
        assert info["hole_fraction"]["mean"] == pytest.approx(per_frame.mean(), abs=1e-4)
        if info["moving"]:
            saw_moving = True
            assert not all(np.array_equal(holes[0], f) for f in holes[1:])
            # smooth: the hole's centroid moves at most speed (+ rasterisation) per frame
            ys, xs = zip(*[np.argwhere(f).mean(0) for f in holes])
            step = np.hypot(np.diff(ys), np.diff(xs))
            max_speed = max(s["speed_px_per_frame"] for s in info["shapes"])
            assert step.max() <= max_speed + 1.5, (seed, step, max_speed)
        else:
            saw_still = True
            assert all(np.array_equal(holes[0], f) for f in holes[1:])
    fractions = np.array(fractions)
    assert saw_moving and saw_still
    assert 0.04 < np.percentile(fractions, 5) and np.percentile(fractions, 95) < 0.26
    assert fractions.std() > 0.03  # sizes vary


def test_random_shapes_are_smooth_curves_not_rectangles():
    holes, info = random_masks(1, 256, 256, np.random.default_rng(0))
    assert all(6 <= s["control_points"] <= 8 for s in info["shapes"])
    ys, xs = np.nonzero(holes[0])
    bbox_area = (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    assert holes[0].sum() < 0.95 * bbox_area  # curved outline


def test_hard_masks_are_large_central_and_keep_off_the_border():
    for seed in range(60):
        h, w = SIZES[seed % len(SIZES)]
        holes, info = hard_masks(12, h, w, np.random.default_rng(seed))
        per_frame = holes.reshape(12, -1).mean(1)
        assert 0.36 <= per_frame.min() and per_frame.max() <= 0.53, (seed, per_frame)
        union = holes.any(0)
        ys, xs = np.nonzero(union)
        my, mx = int(0.06 * h) - 1, int(0.06 * w) - 1
        assert ys.min() >= my and xs.min() >= mx and ys.max() <= h - 1 - my and xs.max() <= w - 1 - mx
        cy, cx = np.argwhere(holes[0]).mean(0)
        assert abs(cy - h / 2) < 0.12 * h and abs(cx - w / 2) < 0.12 * w
        if info["moving"]:
            ys, xs = zip(*[np.argwhere(f).mean(0) for f in holes])
            assert np.hypot(np.diff(ys), np.diff(xs)).max() < 1.5  # slow drift


def _write_palette(path, labels):
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * (253 * 3 - 9) + [255, 255, 255] * 3)
    img.save(path)


def _annotated(tmp_path, name, count, box, obj=1, size=(40, 60)):
    folder = tmp_path / name
    folder.mkdir()
    files = []
    for i in range(count):
        labels = np.zeros(size, np.uint8)
        y0, y1, x0, x1 = box
        labels[y0:y1, x0 + i:x1 + i] = obj
        labels[0, :] = 255  # void border: never part of a hole
        p = folder / f"{i * 5:05d}.png"
        _write_palette(p, labels)
        files.append(p)
    return AnnotatedVideo(name, tuple(files))


def test_read_annotation_returns_palette_indices(tmp_path):
    labels = np.zeros((8, 8), np.uint8)
    labels[2:4, 2:4] = 2
    labels[0] = 255
    _write_palette(tmp_path / "a.png", labels)
    np.testing.assert_array_equal(read_annotation(tmp_path / "a.png"), labels)


def test_object_masks_come_from_another_video_resized_nearest(tmp_path):
    a = _annotated(tmp_path, "davis_a", 12, (10, 20, 10, 30))
    b = _annotated(tmp_path, "davis_b", 12, (5, 35, 5, 40), obj=2)
    pool = AnnotationPool([a, b])
    holes, info = pool.masks_for("davis_a", 8, 80, 120, np.random.default_rng(0))
    assert info["donor_video"] == "davis_b" and info["object_id"] == 2
    assert holes.shape == (8, 80, 120) and holes.dtype == np.bool_
    # donor object 30x35 px of a 40x60 frame, scaled by 2: rows 10..69, moving right 2 px per frame
    first = int(info["donor_frames"][0]) // 5
    ys, xs = np.nonzero(holes[0])
    assert (ys.min(), ys.max()) == (10, 69)
    assert (xs.min(), xs.max()) == (2 * (5 + first), 2 * (40 + first) - 1)
    assert not holes[:, 0].any()  # void row is not a hole


def test_object_masks_pingpong_short_annotations(tmp_path):
    a = _annotated(tmp_path, "ytvos_a", 3, (10, 20, 10, 30))
    b = _annotated(tmp_path, "ytvos_b", 3, (10, 20, 10, 30))
    holes, info = AnnotationPool([a, b]).masks_for("ytvos_b", 7, 40, 60, np.random.default_rng(1))
    assert info["donor_video"] == "ytvos_a"
    assert info["donor_frames"] == ["00000", "00005", "00010", "00005", "00000", "00005", "00010"]
    assert pingpong_indices(1, 3) == [0, 0, 0]
    assert pingpong_indices(10, 4, start=5) == [5, 6, 7, 8]


def test_object_masks_need_another_annotated_video(tmp_path):
    a = _annotated(tmp_path, "davis_a", 4, (10, 20, 10, 30))
    with pytest.raises(ValueError, match="no other video"):
        AnnotationPool([a]).masks_for("davis_a", 4, 40, 60, np.random.default_rng(0))


def test_unreadable_annotation_names_the_file(tmp_path):
    a = _annotated(tmp_path, "davis_a", 4, (10, 20, 10, 30))
    b = _annotated(tmp_path, "davis_b", 4, (10, 20, 10, 30))
    b.files[0].write_bytes(b"not a png")
    b.files[1].write_bytes(b"not a png")
    b.files[2].write_bytes(b"not a png")
    b.files[3].write_bytes(b"not a png")
    with pytest.raises(FrameReadError, match="davis_b/0000"):
        AnnotationPool([a, b]).masks_for("davis_a", 4, 40, 60, np.random.default_rng(0))


def test_unknown_mask_mode():
    with pytest.raises(ValueError, match="unknown mask mode"):
        make_masks("boxes", 4, 16, 16, np.random.default_rng(0))


def test_a_wrong_size_annotation_is_named(tmp_path):
    donor = _annotated(tmp_path, "davis_b", 6, (5, 35, 5, 40), obj=2)
    odd = donor.files[3]
    _write_palette(odd, np.zeros((30, 50), np.uint8))  # one frame of another size
    pool = AnnotationPool([_annotated(tmp_path, "davis_a", 6, (10, 20, 10, 30)), donor])
    with pytest.raises(FrameReadError, match=f"{odd}: annotation is 50x30, 00000.png of the same video is 60x40"):
        pool.masks_for("davis_a", 6, 80, 120, np.random.default_rng(0))
