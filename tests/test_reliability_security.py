"""Issue 11, security: names read from files never lead outside the dataset, no command writes through a
planted symbolic link, decoding limits (huge declared images, huge files, absurd frame counts)."""

import json
import os
import shutil
import struct
import zlib
from argparse import Namespace

import cv2
import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from regdpo.dataset import DPODataset
from regdpo.errors import FormatError, FrameReadError
from regdpo.frames import decode_image
from helpers import FakeTokenizer

SMALL = ["--nframes", "6", "--resolution", "64", "--neg_types", "blur", "--seed", "1", "--no_progress",
         "--max_videos", "2"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "dpo"
    assert regdpo_main(["generate", "--output_dir", str(out), *SMALL]) == 0
    return out


@pytest.fixture
def dataset(tmp_path, reference):
    out = tmp_path / "dpo"
    shutil.copytree(reference, out)
    return out


def ds_args(root, **extra):
    return Namespace(dpo_data_root=str(root), nframes=4, resolution=64, **extra)


def set_first_name(manifest_path, name):
    data = json.loads(manifest_path.read_text())
    data["videos"][0]["name"] = name
    manifest_path.write_text(json.dumps(data))


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("bad", ["../../x/secretvid", "../outside", "/etc", "a/../../b", "..", "v" * 300])
def test_traversal_names_in_a_manifest_are_refused_everywhere(tmp_path, dataset, bad, capsys):
    outside = tmp_path / "x" / "secretvid"
    shutil.copytree(dataset / fmt.complete_videos(dataset)[0], outside)  # a valid video outside the dataset
    set_first_name(dataset / fmt.MANIFEST_FILE, bad)
    before = files_under(tmp_path / "x")
    with pytest.raises(FormatError, match="video name"):
        DPODataset(ds_args(dataset), FakeTokenizer())
    with pytest.raises(FormatError, match="video name"):
        DPODataset(ds_args(dataset, skip_invalid=True), FakeTokenizer())
    assert regdpo_main(["audit", str(dataset), "--no-progress"]) == 1  # a data error: exit 1
    assert regdpo_main(["preview", str(dataset), "--no-mp4"]) == 1
    assert "video name" in capsys.readouterr().err
    assert files_under(tmp_path / "x") == before
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob("x/*.png"))


def test_a_meta_json_naming_another_folder_is_refused(dataset):
    video = fmt.complete_videos(dataset)[0]
    meta_path = dataset / video / fmt.META_FILE
    meta = json.loads(meta_path.read_text())
    meta["name"] = "../elsewhere"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="video name"):
        fmt.read_video_meta(dataset, video)
    meta["name"] = "other_video"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="its folder is"):
        fmt.read_video_meta(dataset, video)
    with pytest.raises(FormatError, match="video name"):
        fmt.read_video_meta(dataset, "../" + video)


def test_filtered_manifest_names_are_checked(tmp_path, dataset):
    filtered = dataset / fmt.FILTERED_MANIFEST_FILE
    shutil.copy(dataset / fmt.MANIFEST_FILE, filtered)
    set_first_name(filtered, "../../x")
    with pytest.raises(FormatError, match="video name"):
        DPODataset(ds_args(dataset, manifest=str(filtered)), FakeTokenizer())


# --------------------------------------------------------------------------- planted links


@pytest.fixture
def target(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    return victim


def test_preview_never_writes_through_planted_links(dataset, target):
    (dataset / fmt.PREVIEW_DIR).symlink_to(target, target_is_directory=True)
    assert regdpo_main(["preview", str(dataset), "--no-mp4"]) == 1
    assert files_under(target) == ["precious.txt"]
    (dataset / fmt.PREVIEW_DIR).unlink()
    (dataset / fmt.PREVIEW_DIR).mkdir()
    (dataset / fmt.PREVIEW_DIR / "contact_sheet.png").symlink_to(target / "precious.txt")
    assert regdpo_main(["preview", str(dataset), "--no-mp4"]) == 0
    assert (target / "precious.txt").read_text() == "keep me"
    sheet = dataset / fmt.PREVIEW_DIR / "contact_sheet.png"
    assert not sheet.is_symlink() and sheet.stat().st_size > 100


@pytest.mark.parametrize("name", [fmt.MANIFEST_FILE, fmt.AUDIT_JSON, fmt.AUDIT_HTML])
def test_derived_files_replace_a_planted_link_instead_of_writing_through_it(dataset, target, name):
    path = dataset / name
    path.unlink(missing_ok=True)
    path.symlink_to(target / "precious.txt")
    if name == fmt.MANIFEST_FILE:
        assert regdpo_main(["manifest", str(dataset)]) == 0
    else:
        assert regdpo_main(["audit", str(dataset), "--no-progress"]) in (0, 1)
    assert (target / "precious.txt").read_text() == "keep me"
    assert not path.is_symlink() and path.is_file()


def test_generate_never_writes_through_planted_links(tmp_path, dataset, target, capsys):
    run = ["generate", "--output_dir", str(dataset), *SMALL, "--resume"]
    (dataset / fmt.LOCK_FILE).unlink()
    (dataset / fmt.LOCK_FILE).symlink_to(target / "lockfile")
    assert regdpo_main(run) == 1
    assert "symbolic link" in capsys.readouterr().err
    assert files_under(target) == ["precious.txt"]
    (dataset / fmt.LOCK_FILE).unlink()
    shutil.rmtree(dataset / fmt.complete_videos(dataset)[1])  # so the run has a video to write
    (dataset / fmt.STAGING_DIR).symlink_to(target, target_is_directory=True)
    assert regdpo_main(run) == 1
    assert "symbolic link" in capsys.readouterr().err
    assert files_under(target) == ["precious.txt"]


def test_json_temp_files_are_never_opened_through_a_link(tmp_path, target, monkeypatch):
    monkeypatch.setattr(os, "getpid", lambda: 4242)  # today's predictable temporary name
    (tmp_path / f".manifest.json.4242.tmp").symlink_to(target / "precious.txt")
    fmt.write_json_atomic(tmp_path / "manifest.json", {"a": 1})
    assert (target / "precious.txt").read_text() == "keep me"
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"a": 1}


# --------------------------------------------------------------------------- decoding limits


def png_declaring(path, width, height):
    """A valid small PNG whose header is patched to declare ``width x height`` (a decompression bomb's header)."""
    ok, buf = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    data = bytearray(buf.tobytes())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def test_a_png_declaring_gigapixels_is_refused_before_decoding(tmp_path):
    bomb = png_declaring(tmp_path / "bomb.png", 40_000, 40_000)
    with pytest.raises(FrameReadError, match="refused before decoding|pixels"):
        decode_image(bomb)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    huge = tmp_path / "frame.jpg"
    with open(huge, "wb") as fh:  # sparse: takes no disk space
        fh.truncate(fmt.MAX_IMAGE_BYTES + 1)
    with pytest.raises(FrameReadError, match="more than"):
        decode_image(huge)


def test_absurd_frame_counts_are_refused_before_allocating(dataset):
    data = json.loads((dataset / fmt.MANIFEST_FILE).read_text())
    data["videos"][0]["num_frames"] = 10**12
    (dataset / fmt.MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(FormatError, match="num_frames"):
        DPODataset(ds_args(dataset), FakeTokenizer())
    with pytest.warns(UserWarning, match="num_frames"):
        ds = DPODataset(ds_args(dataset, skip_invalid=True), FakeTokenizer())
    assert len(ds) == 1
    data["videos"][0]["num_frames"] = "6"
    (dataset / fmt.MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(FormatError, match="num_frames"):
        DPODataset(ds_args(dataset), FakeTokenizer())


def test_skip_invalid_finds_a_truncated_png(dataset):
    video = fmt.complete_videos(dataset)[0]
    frame = dataset / video / "blur" / "00002.png"
    frame.write_bytes(frame.read_bytes()[:-30])
    with pytest.warns(UserWarning, match="truncated"):
        ds = DPODataset(ds_args(dataset, skip_invalid=True), FakeTokenizer())
    assert {p.video for p in ds.pairs} == set(fmt.complete_videos(dataset)) - {video}


def test_score_json_is_never_written_through_a_planted_link(tmp_path):
    """``regdpo score`` wrote ``score.json`` through a fixed ``.score.json.tmp`` with a plain write, which
    follows a link planted there; now an exclusive temporary and a rename (the link itself is replaced)."""
    from regdpo.train.score_cli import _write_json

    root, outside = tmp_path / "dpo_data", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "victim").write_text("keep")
    (root / ".score.json.tmp").symlink_to(outside / "victim")
    (root / "score.json").symlink_to(outside / "victim")
    _write_json(root / "score.json", {"version": 1, "items": []})
    assert (outside / "victim").read_text() == "keep"
    assert not (root / "score.json").is_symlink()
    assert json.loads((root / "score.json").read_text())["version"] == 1
