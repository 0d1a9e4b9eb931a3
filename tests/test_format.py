"""On-disk format: atomic writer, manifest rebuild, validation errors that name the file."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from regdpo import format as fmt
from regdpo.errors import FormatError, FrameReadError
from regdpo.frames import read_mask, read_rgb, read_rgb_clip
from regdpo.writer import (
    VideoEntryWriter,
    clear_staging,
    rebuild_manifest,
    record_failure,
    write_video_entry,
)


def make_clip(t=4, h=16, w=24, seed=0):
    r = np.random.default_rng(seed)
    gt = r.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    hole = np.zeros((t, h, w), bool)
    hole[:, 4:10, 6:14] = True
    return gt, hole


def meta_for(name, gt, neg_types):
    t, h, w, _ = gt.shape
    return fmt.VideoMeta(name=name, num_frames=t, height=h, width=w, neg_types=list(neg_types), prompt="a street")


def test_write_entry_roundtrip_and_composite(tmp_path):
    gt, hole = make_clip()
    neg = 255 - gt  # differs everywhere: the writer must composite it onto the GT
    write_video_entry(tmp_path, meta_for("davis_a", gt, ["blur"]), gt, hole, {"blur": neg})
    video = tmp_path / "davis_a"
    assert sorted(p.name for p in video.iterdir()) == ["blur", "checksums.sha256", "gt_frames", "masks", "meta.json"]
    for i in range(4):
        assert np.array_equal(read_rgb(video / "gt_frames" / fmt.frame_name(i)), gt[i])
        stored_neg = read_rgb(video / "blur" / fmt.frame_name(i))
        assert np.array_equal(stored_neg[~hole[i]], gt[i][~hole[i]])
        assert np.array_equal(stored_neg[hole[i]], neg[i][hole[i]])
        with Image.open(video / "masks" / fmt.frame_name(i)) as m:
            assert m.mode == "L" and set(np.unique(np.asarray(m))) == {0, 255}
        assert np.array_equal(read_mask(video / "masks" / fmt.frame_name(i)), hole[i])
    assert not (tmp_path / fmt.STAGING_DIR).exists()


def test_failed_write_leaves_no_video_folder(tmp_path):
    gt, hole = make_clip()
    with pytest.raises(RuntimeError, match="backend exploded"):
        with VideoEntryWriter(tmp_path, "davis_b") as w:
            w.write_gt(gt)
            w.write_masks(hole)
            raise RuntimeError("backend exploded")
    assert not (tmp_path / "davis_b").exists()
    assert not (tmp_path / fmt.STAGING_DIR).exists()


def test_uncommitted_staging_is_invisible_and_cleared(tmp_path):
    gt, hole = make_clip()
    w = VideoEntryWriter(tmp_path, "davis_c")  # simulates a process killed before commit
    w.write_gt(gt)
    assert fmt.complete_videos(tmp_path) == []
    clear_staging(tmp_path)
    assert not (tmp_path / fmt.STAGING_DIR).exists()


def test_commit_checks_meta_against_streams(tmp_path):
    gt, hole = make_clip()
    with VideoEntryWriter(tmp_path, "davis_d") as w:
        w.write_gt(gt)
        w.write_masks(hole)
        w.write_negative("blur", gt)
        with pytest.raises(ValueError, match="meta lists"):
            w.commit(meta_for("davis_d", gt, ["blur", "flicker"]))
    with VideoEntryWriter(tmp_path, "davis_d") as w:
        w.write_gt(gt)
        with pytest.raises(ValueError, match="do not match GT"):
            w.write_masks(hole[:, :8])


def test_overwrite_replaces_entry(tmp_path):
    gt, hole = make_clip()
    write_video_entry(tmp_path, meta_for("v1", gt, ["blur"]), gt, hole, {"blur": gt})
    gt2, _ = make_clip(seed=1)
    write_video_entry(tmp_path, meta_for("v1", gt2, ["flicker"]), gt2, hole, {"flicker": gt2})
    assert not (tmp_path / "v1" / "blur").exists()
    assert np.array_equal(read_rgb_clip([tmp_path / "v1" / "gt_frames" / fmt.frame_name(0)])[0], gt2[0])


def test_rebuild_manifest_and_load(tmp_path):
    gt, hole = make_clip()
    write_video_entry(tmp_path, meta_for("b_video", gt, ["blur", "flicker"]), gt, hole, {"blur": gt, "flicker": gt})
    write_video_entry(tmp_path, meta_for("a_video", gt, ["hallucination"]), gt, hole, {"hallucination": gt})
    record_failure(tmp_path, "c_video", "failed", "backend crashed", attempts=1)
    record_failure(tmp_path, "d_video", "skipped", "too short: 15 frames < 22")
    manifest = rebuild_manifest(tmp_path)
    assert [v.name for v in manifest.videos] == ["a_video", "b_video"]
    data = json.loads((tmp_path / fmt.MANIFEST_FILE).read_text())
    assert data["format_version"] == fmt.FORMAT_VERSION
    assert data["num_pairs"] == 3 and data["pairs_per_type"] == {"hallucination": 1, "blur": 1, "flicker": 1}
    assert [r["name"] for r in data["failed"]] == ["c_video"]
    assert [r["name"] for r in data["skipped"]] == ["d_video"]
    loaded = fmt.load_manifest(tmp_path)
    assert loaded.videos == manifest.videos
    for entry in loaded.videos:
        fmt.validate_video_streams(tmp_path, entry)


def test_unknown_manifest_version_is_refused(tmp_path):
    (tmp_path / fmt.MANIFEST_FILE).write_text(json.dumps({"format_version": 99, "videos": []}))
    with pytest.raises(FormatError, match="format_version 99 is not supported"):
        fmt.load_manifest(tmp_path)
    with pytest.raises(FormatError, match="no manifest"):
        fmt.load_manifest(tmp_path, tmp_path / "other.json")
    with pytest.raises(FormatError, match="does not exist"):
        fmt.load_manifest(tmp_path / "missing")


@pytest.mark.parametrize("damage", ["missing", "size", "corrupt", "extra"])
def test_validation_names_video_and_file(tmp_path, damage):
    gt, hole = make_clip()
    write_video_entry(tmp_path, meta_for("v", gt, ["blur"]), gt, hole, {"blur": gt})
    entry = rebuild_manifest(tmp_path).videos[0]
    target = tmp_path / "v" / "blur" / fmt.frame_name(2)
    if damage == "missing":
        target.unlink()
        expect = "00002.png"
    elif damage == "size":
        Image.new("RGB", (8, 8)).save(target)
        expect = "00002.png is 8x8, expected 24x16"
    elif damage == "corrupt":
        target.write_bytes(b"not a png")
        expect = "cannot read .*00002.png"
    else:
        Image.new("RGB", (24, 16)).save(target.with_name("00009.png"))
        expect = "unexpected .*00009.png"
    with pytest.raises(FormatError, match=f"video v: .*{expect}"):
        fmt.validate_video_streams(tmp_path, entry)


def test_frame_read_errors_name_the_file(tmp_path):
    bad = tmp_path / "00000.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    with pytest.raises(FrameReadError, match="00000.jpg: corrupt"):
        read_rgb(bad)
    with pytest.raises(FrameReadError, match="nope.png: file not found"):
        read_mask(tmp_path / "nope.png")


def test_names_and_types_are_checked(tmp_path):
    for bad in ["", ".hidden", "_failed", "a/b", "x y"]:
        with pytest.raises(ValueError, match="invalid video name"):
            fmt.check_video_name(bad)
    with pytest.raises(ValueError, match="unknown negative type 'noise'"):
        fmt.check_neg_type("noise")
    meta = fmt.VideoMeta("v", 1, 8, 8, ["blur"]).to_dict()
    meta["neg_types"] = ["noise"]
    with pytest.raises(FormatError, match="unknown negative type"):
        fmt.VideoMeta.from_dict(meta)


def test_writes_are_deterministic(tmp_path):
    gt, hole = make_clip()
    for name in ("x1", "x2"):
        write_video_entry(tmp_path / name, meta_for("v", gt, ["blur"]), gt, hole, {"blur": 255 - gt})
    for stream in ("gt_frames", "masks", "blur"):
        for f in sorted(os.listdir(tmp_path / "x1" / "v" / stream)):
            a = (tmp_path / "x1" / "v" / stream / f).read_bytes()
            assert a == (tmp_path / "x2" / "v" / stream / f).read_bytes()


def test_commit_never_replaces_a_folder_that_is_not_a_video(tmp_path):
    gt, hole = make_clip()
    (tmp_path / "v" / "my_notes").mkdir(parents=True)
    with pytest.raises(FormatError, match="exists and is not a regdpo video"):
        write_video_entry(tmp_path, meta_for("v", gt, ["blur"]), gt, hole, {"blur": gt})
    assert (tmp_path / "v" / "my_notes").is_dir()
    assert not (tmp_path / fmt.STAGING_DIR).exists()


def test_failed_frame_write_leaves_nothing_behind(tmp_path, monkeypatch):
    import regdpo.writer as writer_module

    calls = []

    def flaky(path, frame):
        calls.append(path)
        if path.name == fmt.frame_name(1):
            raise OSError("disk full")
        writer_module.write_rgb(path, frame)

    gt, hole = make_clip(t=6)
    with pytest.raises(OSError, match="disk full"):
        with VideoEntryWriter(tmp_path, "v") as w:
            w._write_stream(fmt.GT_DIR, gt, flaky)
    assert len(calls) == 6  # every job finished before the abort removed the staging folder
    assert not (tmp_path / fmt.STAGING_DIR).exists() and not (tmp_path / "v").exists()


# --------------------------------------------------------------------------- version 2: strength variants


def test_stream_names_round_trip():
    assert fmt.stream_name("blur") == "blur" and fmt.stream_name("blur", 1.0) == "blur"
    assert fmt.stream_name("blur", 0.5) == "blur_s0.50" and fmt.stream_name("inpaint", 0.0) == "inpaint_s0.00"
    for t in fmt.NEG_TYPES:
        for s in (0.0, 0.25, 0.3, 0.5, 0.99, 1.0):
            assert fmt.parse_stream(fmt.stream_name(t, s)) == (t, s)
    for bad in ("blur_s1.00", "blur_s0.5", "blurs", "gt_frames", "blur_s2.00", "Blur", "blur_s0.50x"):
        with pytest.raises(ValueError):
            fmt.parse_stream(bad)
    for bad in (-0.01, 1.01, "x", float("nan")):
        with pytest.raises(ValueError):
            fmt.check_strength(bad)
    assert fmt.check_strength(0.333) == 0.33
    assert "inpaint" in fmt.NEG_TYPES and "inpaint" not in fmt.DEFAULT_NEG_TYPES


def test_variants_are_streams_of_one_entry(tmp_path):
    gt, hole = make_clip()
    meta = fmt.VideoMeta("v", 4, 16, 24, ["blur"], negatives={"blur": {"method": "m"}, "blur_s0.50": {}, "flicker_s0.25": {}})
    assert meta.neg_types == ["blur", "flicker"]
    write_video_entry(tmp_path, meta, gt, hole, {"blur": gt // 2, "blur_s0.50": gt // 3, "flicker_s0.25": gt // 4})
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == [
        "blur", "blur_s0.50", "checksums.sha256", "flicker_s0.25", "gt_frames", "masks", "meta.json"]
    stored = json.loads((tmp_path / "v" / fmt.META_FILE).read_text())
    assert stored["format_version"] == 2
    assert [(n["type"], n["strength"], n["stream"]) for n in stored["negatives"]] == [
        ("blur", 1.0, "blur"), ("blur", 0.5, "blur_s0.50"), ("flicker", 0.25, "flicker_s0.25")]
    assert stored["negatives"][0]["method"] == "m" and stored["source_clip"] == "v" and stored["mask_index"] == 0
    manifest = rebuild_manifest(tmp_path)
    data = json.loads((tmp_path / fmt.MANIFEST_FILE).read_text())
    assert data["num_pairs"] == 3 and data["pairs_per_type"] == {"hallucination": 0, "blur": 2, "flicker": 1}
    assert data["videos"][0]["negatives"] == [{"type": "blur", "strength": 1.0, "stream": "blur"},
                                              {"type": "blur", "strength": 0.5, "stream": "blur_s0.50"},
                                              {"type": "flicker", "strength": 0.25, "stream": "flicker_s0.25"}]
    assert data["videos"][0]["source_clip"] == "v"
    assert manifest.videos[0].stream_names == ["blur", "blur_s0.50", "flicker_s0.25"]
    fmt.validate_video_streams(tmp_path, manifest.videos[0])
    (tmp_path / "v" / "blur_s0.50" / fmt.frame_name(3)).unlink()
    with pytest.raises(FormatError, match="blur_s0.50"):
        fmt.validate_video_streams(tmp_path, manifest.videos[0])


def test_version_1_records_stay_readable(tmp_path):
    v1_meta = {"format_version": 1, "name": "old", "num_frames": 4, "height": 16, "width": 24,
               "neg_types": ["hallucination", "flicker"],
               "negatives": {"hallucination": {"seed": 3}, "flicker": {"segments": [[0, 2], [2, 4]]}}}
    meta = fmt.VideoMeta.from_dict(v1_meta)
    assert [s.stream for s in meta.streams] == ["hallucination", "flicker"]
    assert meta.info("flicker")["segments"] == [[0, 2], [2, 4]] and meta.info("flicker")["strength"] == 1.0
    assert meta.source_clip == "old" and meta.mask_index == 0
    v1_manifest = {"format_version": 1, "videos": [{"name": "old", "num_frames": 4, "height": 16, "width": 24,
                                                    "neg_types": ["blur"], "prompt": ""}]}
    entry = fmt.Manifest.from_dict(v1_manifest).videos[0]
    assert entry.negatives == [{"type": "blur", "strength": 1.0, "stream": "blur"}] and entry.source_clip == "old"


def test_version_2_records_are_checked(tmp_path):
    base = {"format_version": 2, "name": "v", "num_frames": 4, "height": 16, "width": 24}
    cases = [
        ({"neg_types": ["blur"], "negatives": [{"type": "blur", "strength": 0.5, "stream": "blur"}]}, "stream should be"),
        ({"neg_types": ["flicker"], "negatives": [{"type": "blur", "strength": 1.0, "stream": "blur"}]}, "differ"),
        ({"neg_types": ["blur"], "negatives": [{"type": "blur", "strength": 1.5}]}, r"\[0, 1\]"),
        ({"neg_types": ["blur"], "negatives": [{"type": "blur"}, {"type": "blur", "strength": 1.0}]}, "twice"),
        ({"neg_types": ["smear"], "negatives": []}, "unknown negative type"),
    ]
    for extra, message in cases:
        with pytest.raises(FormatError, match=message):
            fmt.VideoMeta.from_dict({**base, **extra}, path="x/meta.json")
        with pytest.raises(FormatError, match=message):
            fmt.Manifest.from_dict({"format_version": 2, "videos": [{**base, **extra}]})
