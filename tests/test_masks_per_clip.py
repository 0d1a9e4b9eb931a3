"""--masks_per_clip, --mask_area and --mask_margin: entry names, shared clips, measured area, resume, bad values."""

import json
from pathlib import Path

import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from regdpo.errors import UsageError
from regdpo.generate.masks import hard_masks, make_masks, mask_motion, random_masks
from regdpo.generate.sources import VideoSource, expand_masks
from regdpo.seeding import rng
from helpers import DATA, needs_data


def generate(out, *extra):
    return regdpo_main(["generate", "--davis_root", str(DATA / "DAVIS"), "--output_dir", str(out), "--nframes", "8",
                        "--resolution", "64", "--seed", "3", "--neg_types", "blur", "--no_progress", *map(str, extra)])


def entry_files(root, name):
    """Every file of one entry: PNG bytes, and meta.json without its timings."""
    out = {}
    for p in sorted((Path(root) / name).rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            out[rel] = p.read_bytes() if p.name != fmt.META_FILE else {
                k: v for k, v in json.loads(p.read_text()).items() if k != "timings"}
    return out


def pngs(root, name, stream):
    return [p.read_bytes() for p in sorted((Path(root) / name / stream).glob("*.png"))]


def source(name):
    return VideoSource(name, "video", name, Path(name), "frames", "frame_folder", 30.0)


# --------------------------------------------------------------------------- pure parts


def test_expand_masks_names_entries_from_the_source_name_only():
    a, b = source("video_a"), source("video_b")
    entries = expand_masks([a, b], 3)
    assert [e.name for e in entries] == ["video_a", "video_a__m1", "video_a__m2", "video_b", "video_b__m1",
                                         "video_b__m2"]
    assert entries[0] is a and [e.mask_index for e in entries] == [0, 1, 2, 0, 1, 2]
    assert {e.clip_name for e in entries[:3]} == {"video_a"}
    assert [e.name for e in expand_masks([b], 3)] == ["video_b", "video_b__m1", "video_b__m2"]
    assert expand_masks([a, b], 1) == [a, b]
    for e in entries:
        fmt.check_video_name(e.name)  # the format's name rule accepts the suffix


def test_expand_masks_refuses_a_source_named_like_another_clips_mask_entry():
    with pytest.raises(UsageError, match="--masks_per_clip 2: entry video_a__m1"):
        expand_masks([source("video_a"), source("video_a__m1")], 2)


@pytest.mark.parametrize("make, area", [(random_masks, (0.10, 0.15)), (random_masks, (0.30, 0.35)),
                                        (hard_masks, (0.15, 0.20)), (hard_masks, (0.25, 0.30))])
def test_mask_area_is_respected_by_the_measured_area(make, area):
    for seed in range(12):
        holes, info = make(10, 96, 128, np.random.default_rng(seed), area_range=area)
        mean = holes.mean(axis=(1, 2))
        assert area[0] <= info["target_fraction"] <= area[1]
        # within 15 % of the range's ends: rasterisation and the overlap of two shapes
        assert area[0] * 0.85 <= mean.min() and mean.max() <= area[1] * 1.15, (seed, mean)
        assert info["hole_fraction"]["mean"] == pytest.approx(mean.mean(), abs=1e-4)


@pytest.mark.parametrize("mode", ["random", "hard"])
def test_mask_margin_keeps_the_border_free(mode):
    for seed in range(12):
        holes, _ = make_masks(mode, 10, 96, 128, np.random.default_rng(seed), area_range=(0.05, 0.15),
                              margin_fraction=0.2)
        ys, xs = np.nonzero(holes.any(axis=0))  # 1 px of rasterisation (edge pixels are filled)
        assert ys.min() >= 0.2 * 96 - 1 and ys.max() <= 0.8 * 96 + 1 and xs.min() >= 0.2 * 128 - 1 \
            and xs.max() <= 0.8 * 128 + 1, seed


def test_default_mask_arguments_keep_todays_masks():
    for mode in ("random", "hard"):
        today, info = make_masks(mode, 8, 64, 96, rng(0, "clip", "mask"))
        explicit, _ = make_masks(mode, 8, 64, 96, rng(0, "clip", "mask"), area_range=None, margin_fraction=None)
        assert np.array_equal(today, explicit) and "motion_px_per_frame" not in info


def test_mask_motion_measures_the_centroid_displacement():
    holes = np.zeros((4, 20, 30), bool)
    for t in range(4):
        holes[t, 5:9, 2 + 3 * t:6 + 3 * t] = True  # 3 px to the right per frame
    assert mask_motion(holes) == pytest.approx(3.0)
    assert mask_motion(np.repeat(holes[:1], 4, axis=0)) == 0.0
    _, info = make_masks("random", 8, 64, 96, rng(0, "clip", "mask"), measure_motion=True)
    assert info["motion_px_per_frame"] >= 0.0


# --------------------------------------------------------------------------- the generator


@needs_data
def test_two_masks_per_clip_share_the_gt_and_entry_0_equals_a_one_mask_run(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert generate(one, "--max_videos", 2) == 0
    assert generate(two, "--max_videos", 2, "--masks_per_clip", 2) == 0
    clips = fmt.complete_videos(one)
    assert len(clips) == 2
    assert fmt.complete_videos(two) == sorted(clips + [f"{c}__m1" for c in clips])
    for clip in clips:
        for stream in (fmt.GT_DIR, fmt.MASK_DIR, "blur"):  # k = 0: byte for byte today's entry
            assert pngs(two, clip, stream) == pngs(one, clip, stream)
        assert pngs(two, f"{clip}__m1", fmt.GT_DIR) == pngs(one, clip, fmt.GT_DIR)  # same clip, same GT
        assert pngs(two, f"{clip}__m1", fmt.MASK_DIR) != pngs(one, clip, fmt.MASK_DIR)  # its own mask
        m0, m1 = fmt.read_video_meta(two, clip), fmt.read_video_meta(two, f"{clip}__m1")
        assert (m0.source_clip, m0.mask_index, m1.source_clip, m1.mask_index) == (clip, 0, clip, 1)
        assert m0.source == m1.source == fmt.read_video_meta(one, clip).source
        for m in (m0, m1):
            info = m.generator["mask"]
            assert set(info["hole_fraction"]) == {"mean", "min", "max"} and info["motion_px_per_frame"] >= 0
            assert m.generator["masks_per_clip"] == 2
        today = fmt.read_video_meta(one, clip).generator
        assert "masks_per_clip" not in today and "motion_px_per_frame" not in today["mask"]
        assert today["mask"] == {k: v for k, v in m0.generator["mask"].items() if k != "motion_px_per_frame"}
    manifest = json.loads((two / fmt.MANIFEST_FILE).read_text())
    assert {v["name"]: v["source_clip"] for v in manifest["videos"]} == {
        **{c: c for c in clips}, **{f"{c}__m1": c for c in clips}}


@needs_data
def test_names_and_bytes_are_stable_under_max_videos_shards_and_resume(tmp_path, capsys):
    whole, first, sharded = tmp_path / "whole", tmp_path / "first", tmp_path / "sharded"
    assert generate(whole, "--max_videos", 2, "--masks_per_clip", 3) == 0
    assert generate(first, "--max_videos", 1, "--masks_per_clip", 3) == 0
    names = fmt.complete_videos(whole)
    assert len(names) == 6 and len(fmt.complete_videos(first)) == 3
    for name in fmt.complete_videos(first):
        assert entry_files(first, name) == entry_files(whole, name)
    for k in (0, 1):
        assert generate(sharded, "--max_videos", 2, "--masks_per_clip", 3, "--num_shards", 2, "--shard_index", k) == 0
    assert fmt.complete_videos(sharded) == names
    for name in names:
        assert entry_files(sharded, name) == entry_files(whole, name)
    # resume: the same settings find everything done; another K or area is refused, naming the flag
    assert generate(whole, "--max_videos", 2, "--masks_per_clip", 3, "--resume") == 0
    assert "0 written, 6 already done" in capsys.readouterr().out
    assert generate(whole, "--max_videos", 2, "--masks_per_clip", 2, "--resume") == 2
    assert "made with --masks_per_clip 3, this run asks for --masks_per_clip 2" in capsys.readouterr().err
    assert generate(whole, "--max_videos", 2, "--masks_per_clip", 3, "--mask_area", 0.1, 0.2, "--resume") == 2
    assert "made with --mask_area not given (the mode's range), this run asks for --mask_area 0.1 0.2" in \
        capsys.readouterr().err


@needs_data
@pytest.mark.parametrize("mode, area", [("random", (0.30, 0.40)), ("hard", (0.10, 0.15))])
def test_mask_area_flag_in_the_generator(tmp_path, mode, area):
    out = tmp_path / mode
    assert generate(out, "--max_videos", 2, "--mask_mode", mode, "--mask_area", *area, "--mask_margin", 0.1) == 0
    for name in fmt.complete_videos(out):
        meta = fmt.read_video_meta(out, name)
        fraction = meta.generator["mask"]["hole_fraction"]
        assert area[0] * 0.85 <= fraction["min"] and fraction["max"] <= area[1] * 1.15, fraction
        assert meta.generator["mask_area"] == list(area) and meta.generator["mask_margin"] == 0.1
        assert "motion_px_per_frame" in meta.generator["mask"]


@pytest.mark.parametrize("extra, message", [
    (["--mask_area", "0", "0.2"], "--mask_area MIN MAX must be fractions of the frame with 0 < MIN <= MAX < 1"),
    (["--mask_area", "0.3", "0.2"], "--mask_area MIN MAX"),
    (["--mask_area", "0.2", "1"], "--mask_area MIN MAX"),
    (["--mask_area", "nan", "0.2"], "argument --mask_area: 'nan': must be a finite number"),  # refused by its type
    (["--masks_per_clip", "0"], "--masks_per_clip must be >= 1"),
    (["--mask_margin", "0.5"], "--mask_margin must be a fraction"),
    (["--mask_margin", "-0.1"], "--mask_margin must be a fraction"),
    (["--mask_mode", "object", "--mask_area", "0.1", "0.2"], "--mask_area applies to --mask_mode random and hard"),
    (["--mask_mode", "object", "--mask_margin", "0.1"], "--mask_margin applies to --mask_mode random and hard"),
])
def test_bad_mask_flags_are_refused(tmp_path, capsys, extra, message):
    try:
        status = regdpo_main(["generate", "--output_dir", str(tmp_path / "out"), "--no_progress", *extra])
    except SystemExit as exc:  # nan / inf: refused while the flags are parsed (argparse exits 2)
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
