"""End to end: the generator on the real DAVIS / YouTube-VOS fixtures and on the embedded samples,
with the classical backend, then loaded by DPODataset."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from regdpo.frames import read_mask_clip, read_rgb_clip
from helpers import DATA, FakeTokenizer, needs_data, tree_files



def generate(*flags):
    return regdpo_main(["generate", "--no_progress", *map(str, flags)])


def fixture_flags(out, *extra):
    return ["--davis_root", DATA / "DAVIS", "--ytvos_root", DATA / "YTBV", "--output_dir", out, *extra]


def assert_same_output(a, b):
    """Byte-identical PNGs and manifest; meta.json identical except the ``timings`` field."""
    files = tree_files(a)
    assert files == tree_files(b)
    for rel in files:
        pa, pb = Path(a) / rel, Path(b) / rel
        if pa.name == fmt.META_FILE:
            ma, mb = json.loads(pa.read_text()), json.loads(pb.read_text())
            assert set(ma["timings"]) == set(mb["timings"])
            ma.pop("timings"), mb.pop("timings")
            assert ma == mb, rel
        else:
            assert pa.read_bytes() == pb.read_bytes(), rel


def load_with_dpodataset(root, nframes, resolution):
    from regdpo.dataset import DPODataset

    ds = DPODataset(SimpleNamespace(dpo_data_root=str(root), nframes=nframes, resolution=resolution, dataset_seed=0),
                    FakeTokenizer())
    item = ds[len(ds) - 1]
    assert item["pixel_values_pos"].shape == (nframes, 3, resolution, resolution)
    assert item["masks"].shape == (nframes, 1, resolution, resolution)
    hole = item["mask_hole"] > 0.5
    same = (item["pixel_values_pos"] == item["pixel_values_neg"]).all(dim=1, keepdim=True)
    assert bool(same[~hole].all())  # winner and loser identical outside the hole
    return ds


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    if not DATA.is_dir():
        pytest.skip(f"real-video fixtures not found at {DATA}")
    out = tmp_path_factory.mktemp("gen") / "dpo_data"
    rc = generate(*fixture_flags(out, "--nframes", 22, "--resolution", 128, "--seed", 0))
    return rc, out


@needs_data
def test_fixture_run_writes_complete_videos_and_skips_the_short_ones(fixture_run, capsys):
    rc, out = fixture_run
    assert rc == 0
    assert fmt.complete_videos(out) == ["davis_bmx-trees", "davis_tennis", "ytvos_0a1b2c3d4e"]
    manifest = fmt.load_manifest(out)
    assert [v.name for v in manifest.videos] == fmt.complete_videos(out)
    assert manifest.to_dict()["num_pairs"] == 9
    skipped = {r["name"]: r["reason"] for r in manifest.skipped}
    assert set(skipped) == {"ytvos_003234408d", "ytvos_038c15a5dd"}
    assert all("too short: 15 frames" in r and "needs 22" in r for r in skipped.values())
    assert not manifest.failed
    assert not (out / fmt.STAGING_DIR).exists() or not any((out / fmt.STAGING_DIR).iterdir())


@needs_data
def test_fixture_run_pairs_are_identical_outside_the_hole(fixture_run):
    _, out = fixture_run
    for name in fmt.complete_videos(out):
        meta = fmt.read_video_meta(out, name)
        fmt.validate_video_streams(out, meta)
        names = fmt.frame_names(meta.num_frames)
        gt = read_rgb_clip([out / name / fmt.GT_DIR / n for n in names])
        hole = read_mask_clip([out / name / fmt.MASK_DIR / n for n in names])
        assert gt.shape == (22, meta.height, meta.width, 3) and min(meta.height, meta.width) == 128
        assert meta.height % 8 == 0 and meta.width % 8 == 0
        assert 0.02 < hole.mean() < 0.32
        for t in meta.neg_types:
            neg = read_rgb_clip([out / name / t / n for n in names])
            np.testing.assert_array_equal(neg[~hole], gt[~hole])
            assert np.abs(neg[hole].astype(int) - gt[hole]).mean() > 3, (name, t)


@needs_data
def test_fixture_run_meta_records_source_generator_and_timings(fixture_run):
    _, out = fixture_run
    dense = fmt.read_video_meta(out, "ytvos_0a1b2c3d4e")
    src = dense.source
    assert (src["native_fps"], src["frame_stride"], src["clip_fps"]) == (30.0, 2, 15.0)
    frames = [int(f) for f in src["source_frames"]]
    assert np.all(np.diff(frames) == 2) and frames[0] == src["start_frame"] * 1
    assert src["original_size"] == [640, 360] and src["layout"] == "ytvos_all_frames"
    davis = fmt.read_video_meta(out, "davis_tennis")
    assert (davis.source["native_fps"], davis.source["frame_stride"], davis.source["clip_fps"]) == (24.0, 1, 24.0)
    gen = davis.generator
    assert gen["backend"] == "classical" and gen["classical_approximation"] is True
    assert gen["mask_mode"] == "random" and gen["resolution"] == 128 and gen["nframes"] == 22
    assert "backend models" in gen["note"]
    assert davis.info("flicker")["num_segments"] == 3
    assert [s["start"] for s in davis.info("flicker")["segments"]] == [0, 8, 15]
    assert all(n["classical_approximation"] for n in davis.negatives)
    for stage in ("decode", "resize", "mask", "negatives", "write", "total"):
        assert davis.timings[stage] >= 0
    assert davis.prompt == ""


@needs_data
def test_fixture_run_loads_in_dpodataset(fixture_run):
    _, out = fixture_run
    ds = load_with_dpodataset(out, 8, 64)
    assert len(ds) == 9


@needs_data
def test_same_seed_gives_byte_identical_output_independent_of_max_videos(fixture_run, tmp_path):
    _, out = fixture_run
    again = tmp_path / "again"
    assert generate(*fixture_flags(again, "--nframes", 22, "--resolution", 128, "--seed", 0)) == 0
    assert_same_output(out, again)
    first = tmp_path / "first"
    assert generate(*fixture_flags(first, "--nframes", 22, "--resolution", 128, "--max_videos", 1)) == 0
    assert fmt.complete_videos(first) == ["davis_bmx-trees"]
    for rel in tree_files(first / "davis_bmx-trees"):
        if not rel.endswith(".json"):
            assert (first / "davis_bmx-trees" / rel).read_bytes() == (out / "davis_bmx-trees" / rel).read_bytes()
    other = tmp_path / "other"
    assert generate(*fixture_flags(other, "--nframes", 22, "--resolution", 128, "--max_videos", 1,
                                   "--seed", 1)) == 0
    assert (other / "davis_bmx-trees/masks/00000.png").read_bytes() != \
        (out / "davis_bmx-trees/masks/00000.png").read_bytes()


@needs_data
def test_object_and_hard_masks_and_captions(tmp_path):
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"davis_tennis": "a tennis court", "0a1b2c3d4e": "a street"}))
    out = tmp_path / "obj"
    assert generate(*fixture_flags(out, "--nframes", 12, "--resolution", 64, "--mask_mode", "object",
                                   "--captions", caps, "--neg_types", "blur", "flicker")) == 0
    names = fmt.complete_videos(out)
    assert len(names) == 5  # the 15-frame sparse videos fit 12 frames
    annotated = {"davis_bmx-trees", "davis_tennis", "ytvos_003234408d"}
    for name in names:
        meta = fmt.read_video_meta(out, name)
        mask = meta.generator["mask"]
        assert mask["mode"] == "object" and mask["donor_video"] in annotated and mask["donor_video"] != name
        assert meta.neg_types == ["blur", "flicker"]
    assert fmt.read_video_meta(out, "davis_tennis").prompt == "a tennis court"
    assert fmt.read_video_meta(out, "ytvos_0a1b2c3d4e").prompt == "a street"
    assert {v.name: v.prompt for v in fmt.load_manifest(out).videos}["davis_tennis"] == "a tennis court"

    hard = tmp_path / "hard"
    assert generate(*fixture_flags(hard, "--nframes", 8, "--resolution", 64, "--mask_mode", "hard",
                                   "--center_crop", "--max_videos", 2, "--neg_types", "hallucination")) == 0
    for name in fmt.complete_videos(hard):
        meta = fmt.read_video_meta(hard, name)
        assert (meta.width, meta.height) == (64, 64)
        assert 0.36 < meta.generator["mask"]["hole_fraction"]["mean"] < 0.53


def test_default_run_uses_the_embedded_samples(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert generate("--nframes", 8, "--resolution", 64) == 0
    out = tmp_path / "dpo_data"  # the default --output_dir
    assert fmt.complete_videos(out) == ["sample_bigbuckbunny", "sample_bikes", "sample_carphone_pristine"]
    meta = fmt.read_video_meta(out, "sample_bikes")
    assert meta.source["dataset"] == "sample" and meta.source["native_fps"] == 25.0
    assert meta.source["original_size"] == [640, 272] and (meta.width, meta.height) == (152, 64)
    assert meta.generator["backend"] == "classical"
    load_with_dpodataset(out, 8, 64)
    printed = capsys.readouterr().out
    assert "3 written" in printed and "manifest:" in printed


@needs_data
def test_mask_dilation_grows_the_stored_mask_and_the_composite_follows(tmp_path):
    import cv2

    plain, grown = tmp_path / "plain", tmp_path / "grown"
    common = ["--davis_root", DATA / "DAVIS", "--max_videos", "1", "--nframes", "6", "--resolution", "64",
              "--neg_types", "blur"]
    assert generate(*common, "--output_dir", plain) == 0
    assert generate(*common, "--output_dir", grown, "--mask_dilation", "2") == 0
    video = fmt.complete_videos(plain)[0]
    frames = [fmt.frame_name(i) for i in range(6)]
    hole = read_mask_clip([plain / video / "masks" / f for f in frames])
    hole_grown = read_mask_clip([grown / video / "masks" / f for f in frames])
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    expected = np.stack([cv2.dilate(h.astype(np.uint8), cross, iterations=2) for h in hole]).astype(bool)
    assert np.array_equal(hole_grown, expected) and hole_grown.sum() > hole.sum()
    gt = read_rgb_clip([grown / video / "gt_frames" / f for f in frames])
    blur = read_rgb_clip([grown / video / "blur" / f for f in frames])
    assert np.array_equal(blur[~hole_grown], gt[~hole_grown])
    assert not np.array_equal(blur[hole_grown & ~hole], gt[hole_grown & ~hole])  # the ring is filled too
    assert json.loads((grown / video / "meta.json").read_text())["generator"]["mask_dilation"] == 2
    assert generate(*common, "--output_dir", grown, "--resume") == 2  # resume with another dilation is refused


@needs_data
def test_inpaint_is_accepted_by_generate_dataset_and_preview(tmp_path):
    out = tmp_path / "dpo_data"
    assert generate("--davis_root", DATA / "DAVIS", "--max_videos", 1, "--nframes", 6, "--resolution", 64,
                    "--neg_types", "inpaint", "blur", "--output_dir", out) == 0
    video = fmt.complete_videos(out)[0]
    meta = fmt.read_video_meta(out, video)
    assert meta.neg_types == ["blur", "inpaint"] and "temporal propagation" in meta.info("inpaint")["method"]
    ds = load_with_dpodataset(out, 6, 64)
    assert sorted(p.neg_type for p in ds.pairs) == ["blur", "inpaint"]
    assert regdpo_main(["preview", str(out)]) == 0
    assert any((out / fmt.PREVIEW_DIR).iterdir())
