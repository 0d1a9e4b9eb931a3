"""Sources of the generator: discovery, order, frame rates, decoding, captions, clip geometry."""

import json
import shutil

import cv2
import numpy as np
import pytest

from regdpo.errors import FormatError, FrameReadError, UsageError
from regdpo.generate.clips import clip_indices, frame_stride, resize_frames, working_size
from regdpo.generate.samples import sample_videos
from regdpo.generate.sources import (
    SourceReader,
    caption_for,
    discover_davis,
    discover_sources,
    discover_video_root,
    discover_ytvos,
    load_captions,
)
from helpers import DATA

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real-video fixtures not found at {DATA}")


@needs_data
def test_davis_discovery_order_split_and_annotations():
    all_seqs = discover_davis(DATA / "DAVIS")
    assert [s.name for s in all_seqs] == ["davis_bmx-trees", "davis_tennis"]
    assert all(s.native_fps == 24 and s.annotations is not None for s in all_seqs)
    assert [s.name for s in discover_davis(DATA / "DAVIS", "val")] == ["davis_tennis"]
    with pytest.raises(UsageError, match="--davis_split nope.*nope.txt"):
        discover_davis(DATA / "DAVIS", "nope")


@needs_data
def test_ytvos_prefers_all_frames_and_falls_back_to_sparse():
    videos = {s.source_id: s for s in discover_ytvos(DATA / "YTBV")}
    assert list(videos) == ["003234408d", "038c15a5dd", "0a1b2c3d4e"]
    dense = videos["0a1b2c3d4e"]
    assert dense.layout == "ytvos_all_frames" and dense.native_fps == 30 and dense.file_step == 1
    sparse = videos["003234408d"]
    assert sparse.layout == "ytvos_sparse" and sparse.native_fps == 6 and sparse.file_step == 5
    assert sparse.annotations is not None and videos["038c15a5dd"].annotations is None
    reader = SourceReader(sparse)
    assert reader.num_frames == 15 and reader.frame_labels([0, 1]) == ["00000", "00005"]


@needs_data
def test_sources_are_unique_and_ordered_davis_ytvos_video(tmp_path):
    (tmp_path / "clip").mkdir()
    shutil.copy(DATA / "DAVIS/JPEGImages/480p/tennis/00000.jpg", tmp_path / "clip" / "00000.jpg")
    _write_mp4(tmp_path / "clip.mp4", 5, 25.0)
    names = [s.name for s in discover_sources(DATA / "DAVIS", None, DATA / "YTBV", "train", tmp_path)]
    assert names == ["davis_bmx-trees", "davis_tennis", "ytvos_003234408d", "ytvos_038c15a5dd",
                     "ytvos_0a1b2c3d4e", "video_clip", "video_clip-2"]


def _write_mp4(path, frames, fps, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[:, : 4 + 3 * i] = (20 * i) % 256
        writer.write(img)
    writer.release()


def test_video_root_reads_mp4_fps_and_frames(tmp_path):
    _write_mp4(tmp_path / "walk.mp4", 12, 50.0)
    (tmp_path / "notes.txt").write_text("ignored")
    [src] = discover_video_root(tmp_path, assumed_fps=30)
    assert src.name == "video_walk" and src.kind == "video_file"
    reader = SourceReader(src)
    assert reader.num_frames == 12 and reader.native_fps == pytest.approx(50.0)
    assert frame_stride(reader.native_fps, 15) == 3
    clip = reader.read([2, 5, 8])
    assert clip.shape == (3, 48, 64, 3) and clip.dtype == np.uint8
    assert clip[0, 0, 4 + 3 * 2 - 1].mean() > clip[0, 0, 4 + 3 * 2 + 1].mean()  # frame 2, not 0


def test_unreadable_video_file_names_it(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    [src] = discover_video_root(tmp_path, 30)
    with pytest.raises(FrameReadError, match="broken.mp4"):
        SourceReader(src).read([0])


def test_frame_folder_uses_assumed_fps_and_natural_order(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    for i in (1, 2, 10):
        cv2.imwrite(str(folder / f"f{i}.png"), np.full((16, 16, 3), i, np.uint8))
    [src] = discover_video_root(tmp_path, assumed_fps=24)
    reader = SourceReader(src)
    assert reader.native_fps == 24 and reader.fps_assumed
    assert reader.frame_labels([0, 1, 2]) == ["f1", "f2", "f10"]


def test_corrupt_jpeg_names_the_file(tmp_path):
    folder = tmp_path / "JPEGImages" / "480p" / "seq"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "00000.jpg"), np.zeros((16, 16, 3), np.uint8))
    (folder / "00001.jpg").write_bytes(b"\xff\xd8 truncated")
    [src] = discover_davis(tmp_path)
    with pytest.raises(FrameReadError, match="00001.jpg"):
        SourceReader(src).read([0, 1])


def test_missing_and_empty_roots_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--davis_root .*folder not found"):
        discover_davis(tmp_path / "missing")
    with pytest.raises(UsageError, match="--davis_root .*JPEGImages/480p"):
        discover_davis(tmp_path)
    (tmp_path / "JPEGImages" / "480p").mkdir(parents=True)
    with pytest.raises(UsageError, match="no sequences"):
        discover_davis(tmp_path)
    with pytest.raises(UsageError, match="--ytvos_root .*found neither"):
        discover_ytvos(tmp_path)
    (tmp_path / "train" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(UsageError, match="--ytvos_root .*no videos"):
        discover_ytvos(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="--video_root .*no videos"):
        discover_video_root(empty, 30)
    with pytest.raises(UsageError, match="--video_root .*folder not found"):
        discover_video_root(tmp_path / "nope", 30)


def test_embedded_samples_are_real_mp4_files():
    paths = sample_videos()
    assert [p.name for p in paths] == ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]
    names = [s.name for s in discover_sources()]
    assert names == ["sample_bigbuckbunny", "sample_bikes", "sample_carphone_pristine"]
    reader = SourceReader(discover_sources()[2])
    assert reader.num_frames == 120 and frame_stride(reader.native_fps, 15) == 1


def test_frame_stride_follows_diffueraser():
    assert frame_stride(24, 15) == 1  # DAVIS
    assert frame_stride(30, 15) == 2  # YouTube-VOS all frames
    assert frame_stride(6, 15) == 1  # YouTube-VOS sparse train/
    assert frame_stride(29.97, 15) == 1
    assert frame_stride(60, 15) == 4


def test_clip_indices_seeded_and_too_short():
    idx = clip_indices(30, 5, 2, np.random.default_rng(0))
    assert idx == list(range(idx[0], idx[0] + 10, 2)) and idx[-1] < 30
    assert idx == clip_indices(30, 5, 2, np.random.default_rng(0))
    assert clip_indices(9, 5, 2, np.random.default_rng(0)) == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="too short: 15 frames.*22 frames at stride 1 needs 22"):
        clip_indices(15, 22, 1, np.random.default_rng(0))


def test_working_size_multiple_of_8_aspect_kept_and_center_crop():
    ws = working_size(432, 240, 128)
    assert (ws.width, ws.height) == (232, 128) and ws.crop == (0, 0, 432, 240)
    ws = working_size(176, 144, 512)
    assert (ws.width, ws.height) == (624, 512)
    ws = working_size(240, 432, 64)
    assert (ws.width, ws.height) == (64, 112)
    ws = working_size(432, 240, 64, center_crop=True)
    assert (ws.width, ws.height, ws.crop) == (64, 64, (96, 0, 240, 240))
    frames = np.random.default_rng(0).integers(0, 256, (2, 240, 432, 3), dtype=np.uint8)
    assert resize_frames(frames, ws).shape == (2, 64, 64, 3)
    with pytest.raises(ValueError, match="multiple of 8"):
        working_size(432, 240, 100)


def test_captions_json_and_csv(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"davis_tennis": "a tennis player", "bmx-trees": "a bmx rider"}))
    (tmp_path / "c.csv").write_text("video,caption\ndavis_tennis,\"a court, with a player\"\n")
    caps = load_captions(tmp_path / "c.json")
    from regdpo.generate.sources import VideoSource

    tennis = VideoSource("davis_tennis", "davis", "tennis", tmp_path, "frames", "davis", 24.0)
    bmx = VideoSource("davis_bmx-trees", "davis", "bmx-trees", tmp_path, "frames", "davis", 24.0)
    other = VideoSource("davis_x", "davis", "x", tmp_path, "frames", "davis", 24.0)
    assert caption_for(tennis, caps, "") == ("a tennis player", "captions")
    assert caption_for(bmx, caps, "") == ("a bmx rider", "captions")
    assert caption_for(other, caps, "dflt") == ("dflt", "default")
    assert load_captions(tmp_path / "c.csv") == {"davis_tennis": "a court, with a player"}
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(FormatError, match="--captions .*bad.json"):  # the file's content: a data error
        load_captions(tmp_path / "bad.json")
    with pytest.raises(UsageError, match="--captions .*file not found"):
        load_captions(tmp_path / "missing.csv")


def test_video_whose_header_overstates_its_frames_is_still_made(tmp_path):
    """A truncated file says 40 frames but decodes fewer: count them and draw the clip again."""
    from regdpo import format as fmt
    from regdpo.cli import main as regdpo_main

    videos = tmp_path / "videos"
    videos.mkdir()
    full = tmp_path / "full.avi"
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 15, (64, 48))
    for i in range(40):
        frame = np.full((48, 64, 3), 4 * i, np.uint8)
        cv2.putText(frame, str(i), (5, 30), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255))
        writer.write(frame)
    writer.release()
    data = full.read_bytes()
    (videos / "cut.avi").write_bytes(data[: len(data) // 2])
    cap = cv2.VideoCapture(str(videos / "cut.avi"))
    header = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    out = tmp_path / "out"
    flags = ["generate", "--video_root", str(videos), "--output_dir", str(out), "--nframes", "12",
             "--resolution", "48", "--neg_types", "blur", "--no_progress"]
    for seed in range(4):  # whatever start the seed draws
        assert regdpo_main(flags + ["--seed", str(seed), "--overwrite"]) == 0
        meta = fmt.read_video_meta(out, "video_cut")
        assert meta.source["num_source_frames"] < header == 40
        assert max(int(f) for f in meta.source["source_frames"]) < meta.source["num_source_frames"]
