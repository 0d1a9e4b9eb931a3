"""Unreadable inputs: a source root, a video folder, a frame file or a video file that cannot be read is one
line naming it (exit 1; a root that names no folder, a file or a dangling link: exit 2), and one unreadable
video inside a run fails alone (recorded; ``--resume`` makes it once readable) while the others are made.

We run as root, which ignores permissions: a refused read is simulated by making ``os.scandir`` /
``os.stat`` / ``os.open`` / ``numpy.fromfile`` raise ``PermissionError`` for the chosen paths."""

import errno
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from regdpo.cli import main as regdpo_main
from regdpo.errors import InputUnreadable
from regdpo.generate.sources import SourceReader, discover_video_root, list_images

SMALL = ["--nframes", "4", "--resolution", "64", "--neg_types", "blur", "--no_progress"]


def one_error_line(err: str, prefix: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]


def write_frames(folder: Path, n: int = 6, size: int = 64) -> Path:
    folder.mkdir(parents=True)
    gen = np.random.default_rng(len(str(folder)))
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), gen.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return folder


def write_video_file(path: Path, n: int = 6, size: int = 64) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 24.0, (size, size))
    gen = np.random.default_rng(1)
    for _ in range(n):
        writer.write(gen.integers(0, 255, (size, size, 3), dtype=np.uint8))
    writer.release()
    return path


def make_root(kind: str, base: Path) -> Path:
    """A tiny source root of ``kind`` (davis / ytvos / video) with one frame folder."""
    root = base / kind
    sub = {"davis": "JPEGImages/480p/seq", "ytvos": "train/JPEGImages/vid", "video": "clip"}[kind]
    write_frames(root / sub)
    return root


def deny(monkeypatch, *denied: Path, stat_below: bool = True) -> None:
    """Make listing ``denied`` folders (and, with ``stat_below``, looking at anything below them) raise
    EACCES as a folder of mode 000 would for a user who does not own it; opening and reading ``denied``
    files raise it too."""
    denied = [Path(d) for d in denied]
    real_scandir, real_stat, real_open, real_fromfile = os.scandir, os.stat, os.open, np.fromfile

    def refused(path) -> bool:
        p = Path(os.fsdecode(path)) if not isinstance(path, int) else None
        return p is not None and any(p == d for d in denied)

    def below(path) -> bool:
        p = Path(os.fsdecode(path)) if not isinstance(path, int) else None
        return p is not None and any(d in p.parents for d in denied)

    def error(path):
        return PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    def scandir(path="."):
        if refused(path) or below(path):
            raise error(path)
        return real_scandir(path)

    def stat(path, *a, **k):
        if stat_below and below(path):
            raise error(path)
        return real_stat(path, *a, **k)

    def open_(path, *a, **k):
        if refused(path) or below(path):
            raise error(path)
        return real_open(path, *a, **k)

    def fromfile(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and (refused(file) or below(file)):
            raise error(file)
        return real_fromfile(file, *a, **k)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(np, "fromfile", fromfile)


@pytest.mark.parametrize("kind", ["davis", "ytvos", "video"])
def test_an_unreadable_source_root_is_one_line_naming_it_exit_1(tmp_path, capsys, monkeypatch, kind):
    root = make_root(kind, tmp_path)
    flag = f"--{kind}_root"
    deny(monkeypatch, root)
    assert regdpo_main(["generate", flag, str(root), "--output_dir", str(tmp_path / "o"), *SMALL]) == 1
    line = one_error_line(capsys.readouterr().err, "regdpo generate: error: ")
    assert line.startswith(f"regdpo generate: error: {flag} {root}: ") and "Permission denied" in line, line
    assert not (tmp_path / "o").exists()  # refused before anything is written


@pytest.mark.parametrize("kind", ["davis", "ytvos", "video"])
def test_a_source_root_that_is_a_file_or_a_dangling_link_is_a_usage_error(tmp_path, capsys, kind):
    flag = f"--{kind}_root"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    for root, says in ((a_file, "a file, not a folder"), (dangling, f"a symbolic link to {tmp_path / 'gone'}, "
                                                                     f"which does not exist"),
                       (tmp_path / "missing", "folder not found")):
        assert regdpo_main(["generate", flag, str(root), "--output_dir", str(tmp_path / "o"), *SMALL]) == 2
        line = one_error_line(capsys.readouterr().err, "regdpo generate: error: ")
        assert line == f"regdpo generate: error: {flag} {root}: {says}", line
    assert not (tmp_path / "o").exists()


def test_the_script_says_the_same(tmp_path, capsys, monkeypatch):
    from regdpo.generate.cli import main as script_main

    root = make_root("video", tmp_path)
    deny(monkeypatch, root)
    assert script_main(["--video_root", str(root), "--output_dir", str(tmp_path / "o"), *SMALL]) == 1
    line = one_error_line(capsys.readouterr().err, "generate_dpo_negatives.py: error: ")
    assert f"--video_root {root}" in line and "Permission denied" in line


def test_an_unreadable_davis_split_file_is_one_line(tmp_path, capsys, monkeypatch):
    root = make_root("davis", tmp_path)
    split = root / "ImageSets" / "2017" / "val.txt"
    split.parent.mkdir(parents=True)
    split.write_text("seq\n")
    deny(monkeypatch, split)  # (read through regdpo.safe_read: refused at os.open)
    argv = ["generate", "--davis_root", str(root), "--davis_split", "val", "--output_dir", str(tmp_path / "o"), *SMALL]
    assert regdpo_main(argv) == 1
    line = one_error_line(capsys.readouterr().err, "regdpo generate: error: ")
    assert str(split) in line and "Permission denied" in line


def test_readers_name_what_they_cannot_read(tmp_path, monkeypatch):
    folder = write_frames(tmp_path / "v" / "clip")
    frame = folder / "00002.jpg"
    video = write_video_file(tmp_path / "v" / "movie.avi")
    sources = {s.source_id: s for s in discover_video_root(tmp_path / "v", 24.0)}
    deny(monkeypatch, folder, video, stat_below=False)
    with pytest.raises(InputUnreadable, match=f"{folder}: cannot read the frame folder \\(Permission denied\\)"):
        list_images(folder)
    with pytest.raises(InputUnreadable, match=f"{video}: cannot read the video file \\(Permission denied\\)"):
        SourceReader(sources["movie"])
    monkeypatch.undo()
    reader = SourceReader(sources["clip"])
    deny(monkeypatch, frame)
    with pytest.raises(InputUnreadable, match=f"{frame}: cannot read the image \\(Permission denied\\)"):
        reader.read([0, 1, 2])


def test_a_dangling_frame_link_fails_its_video_instead_of_being_dropped(tmp_path):
    folder = write_frames(tmp_path / "clip")
    (folder / "00002.jpg").unlink()
    (folder / "00002.jpg").symlink_to(tmp_path / "gone.jpg")
    files = list_images(folder)
    assert folder / "00002.jpg" in files and len(files) == 6  # the clip keeps its numbering
    from regdpo.errors import FrameReadError

    with pytest.raises(FrameReadError, match="00002.jpg: file not found"):
        SourceReader(discover_video_root(tmp_path, 24.0)[0]).read([1, 2, 3])


def test_one_unreadable_video_in_a_run_fails_alone_and_resume_makes_it(tmp_path, capsys, monkeypatch):
    vr = tmp_path / "vr"
    write_frames(vr / "a_good")
    locked_folder = write_frames(vr / "b_folder")
    frame_clip = write_frames(vr / "c_frame")
    video = write_video_file(vr / "d_movie.avi")
    out = tmp_path / "o"
    argv = ["generate", "--video_root", str(vr), "--output_dir", str(out), "--assumed_fps", "24", *SMALL]
    deny(monkeypatch, locked_folder, video, *sorted(frame_clip.iterdir()), stat_below=False)
    assert regdpo_main(argv) == 1  # some videos failed
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    assert "1 written" in cap.out and "3 failed" in cap.out, cap.out
    assert (out / "video_a_good" / "meta.json").is_file()
    for name, path in (("video_b_folder", locked_folder), ("video_d_movie", video), ("video_c_frame", frame_clip)):
        assert not (out / name).exists()
        record = json.loads((out / "_failed" / f"{name}.json").read_text())
        assert record["status"] == "failed" and "Permission denied" in record["reason"], record
        assert str(path) in record["reason"], record
    manifest = json.loads((out / "manifest.json").read_text())
    assert [v["name"] for v in manifest["videos"]] == ["video_a_good"]
    good_meta = (out / "video_a_good" / "meta.json").read_bytes()
    monkeypatch.undo()  # the permissions fixed: --resume makes the three, keeps the first
    assert regdpo_main(argv + ["--resume"]) == 0
    assert "3 written, 1 already done" in capsys.readouterr().out
    assert (out / "video_a_good" / "meta.json").read_bytes() == good_meta
