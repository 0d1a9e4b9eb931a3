"""Special files among the inputs (issue 18, items 1, 2, 15): a named pipe (FIFO), a socket, a device or a link
loop named like a frame, a video or a JSON file never blocks a reader. ``regdpo.safe_read`` refuses it with one
line naming it; a source holding one fails its video alone (recorded, ``--resume`` retries it); a finished
dataset holding one is reported by ``audit``, ``verify``, ``preview``, ``DPODataset`` and ``generate --resume``,
which end. A reader stuck anyway (a hung file system) never holds a Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import REPO, FakeTokenizer, write_pair_dataset
from test_reliability_inputs import write_frames, write_video_file

from regdpo.errors import InputUnreadable
from regdpo.safe_read import check_regular_file, open_input, read_input_bytes, read_input_text

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need POSIX")

SMALL = ["--nframes", "4", "--resolution", "64", "--neg_types", "blur", "--no_progress"]
LIMIT_S = 60  # today's code never ends (a FIFO) or fails at once (a traceback); the fixed one takes a second


def within(seconds: float, fn, *args):
    """``fn(*args)`` run on a daemon thread; fails the test (instead of hanging it) when it has not returned
    in ``seconds``. Returns its result or raises its exception."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{getattr(fn, '__name__', fn)} blocked for more than {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def release(fifo: Path) -> None:
    """Let a reader stuck on opening ``fifo`` go (a writer opens and closes it) so no thread stays behind."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def cli(*argv: str, timeout: float = LIMIT_S) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-m", "regdpo", *argv], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO)


def special_files(folder: Path) -> dict[str, Path]:
    """A FIFO, a socket, a link to a character device, a folder, a link to itself and a two-link loop."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {k: folder / f"{k}.png" for k in ("fifo", "socket", "device", "folder", "self_link", "loop")}
    os.mkfifo(made["fifo"])
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(made["socket"]))
    sock.close()
    os.symlink("/dev/zero", made["device"])
    made["folder"].mkdir()
    os.symlink(made["self_link"].name, made["self_link"])
    os.symlink("loop_b.png", made["loop"])
    os.symlink(made["loop"].name, folder / "loop_b.png")
    return made


# --------------------------------------------------------------------------- the one safe opener


def test_safe_read_refuses_every_special_file_at_once_naming_it(tmp_path):
    words = {"fifo": "named pipe (FIFO)", "socket": "socket", "device": "character device", "folder": "folder",
             "self_link": "symbolic link loop", "loop": "symbolic link loop"}
    for kind, path in special_files(tmp_path).items():
        for reader in (read_input_bytes, read_input_text, open_input, check_regular_file):
            with pytest.raises(InputUnreadable) as info:
                within(10, reader, path, "image")
            line = str(info.value)
            assert "\n" not in line and line.startswith(str(path)) and words[kind] in line, line
    release(tmp_path / "fifo.png")


def test_safe_read_reads_a_regular_file_through_a_link_unless_refused(tmp_path):
    real = tmp_path / "real.json"
    real.write_bytes(b'{"a": 1}')
    link = tmp_path / "link.json"
    link.symlink_to(real.name)
    assert read_input_bytes(link) == b'{"a": 1}' and read_input_text(real) == '{"a": 1}'
    with pytest.raises(InputUnreadable, match="symbolic link"):
        read_input_bytes(link, follow_links=False)
    with pytest.raises(FileNotFoundError):
        read_input_bytes(tmp_path / "absent.json")
    with pytest.raises(InputUnreadable, match="8 bytes, more than the 3 allowed for the image"):
        read_input_bytes(real, "image", max_bytes=3)


def test_a_fifo_swapped_in_after_the_stat_opens_at_once_and_is_refused(tmp_path, monkeypatch):
    """The race: the path was a regular file when looked at, a FIFO when opened. ``O_NONBLOCK`` opens it
    without waiting for a writer and ``fstat`` of the open descriptor refuses it."""
    regular, fifo = tmp_path / "a.png", tmp_path / "b.png"
    regular.write_bytes(b"x")
    os.mkfifo(fifo)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: real_stat(regular if Path(p) == fifo else p, *a, **k))
    with pytest.raises(InputUnreadable, match="named pipe"):
        within(10, read_input_bytes, fifo, "image")
    release(fifo)


# --------------------------------------------------------------------------- sources (items 1 and 2)


def test_a_fifo_frame_and_a_self_link_video_fail_alone_the_good_video_is_written(tmp_path):
    """The issue's done-when: the run ends in seconds, exit 1, the good video written, the two others each
    recorded as failed with one line; once repaired, --resume makes them."""
    src = tmp_path / "src"
    src.mkdir()
    write_video_file(src / "good.avi", n=8)
    clip = write_frames(src / "piped", n=8)
    (clip / "00003.jpg").unlink()
    os.mkfifo(clip / "00003.jpg")
    os.symlink("self.mp4", src / "self.mp4")
    out = tmp_path / "out"
    argv = ["generate", "--video_root", str(src), "--output_dir", str(out), "--assumed_fps", "24", *SMALL]
    t0 = time.monotonic()
    try:
        proc = cli(*argv)
    finally:
        release(clip / "00003.jpg")
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert (out / "video_good" / "meta.json").is_file()
    assert [v["name"] for v in json.loads((out / "manifest.json").read_text())["videos"]] == ["video_good"]
    expect = {"video_piped": (f"{clip / '00003.jpg'}: the image is a named pipe (FIFO)"),
              "video_self": f"{src / 'self.mp4'}: cannot read the video file (a symbolic link loop)"}
    for name, words in expect.items():
        record = json.loads((out / "_failed" / f"{name}.json").read_text())
        assert record["status"] == "failed" and words in record["reason"], record
        lines = [l for l in proc.stdout.splitlines() if l.strip().startswith(f"FAILED {name}:")]
        assert len(lines) == 1 and words in lines[0], proc.stdout
    (clip / "00003.jpg").unlink()
    shutil.copy(clip / "00002.jpg", clip / "00003.jpg")
    (src / "self.mp4").unlink()
    write_video_file(src / "self.mp4", n=8)
    proc = cli(*argv, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 written, 1 already done" in proc.stdout, proc.stdout


@pytest.mark.parametrize("layout", ["two_link_loop", "folder_loop", "socket_video", "device_video", "folder_link_loop"])
def test_other_special_sources_fail_alone(tmp_path, layout, capsys):
    from regdpo.cli import main as regdpo_main

    src = tmp_path / "src"
    write_frames(src / "good", n=8)
    if layout == "two_link_loop":
        os.symlink("b.mp4", src / "a.mp4")
        os.symlink("a.mp4", src / "b.mp4")
        bad = ["video_a", "video_b"]
    elif layout == "folder_loop":  # a frame folder's frame is a link loop
        write_frames(src / "looped", n=8)
        (src / "looped" / "00004.jpg").unlink()
        os.symlink("00004.jpg", src / "looped" / "00004.jpg")
        bad = ["video_looped"]
    elif layout == "socket_video":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(src / "sock.mp4"))
        sock.close()
        bad = ["video_sock"]
    elif layout == "device_video":
        os.symlink("/dev/zero", src / "zero.mp4")
        bad = ["video_zero"]
    else:  # a frame folder's link that loops: a source, failing alone (not silently dropped)
        os.symlink("clips", src / "clips")
        bad = ["video_clips"]
    out = tmp_path / "out"
    argv = ["generate", "--video_root", str(src), "--output_dir", str(out), "--assumed_fps", "24", *SMALL]
    assert within(LIMIT_S, regdpo_main, argv) == 1
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err + cap.out
    assert (out / "video_good" / "meta.json").is_file()
    for name in bad:
        assert json.loads((out / "_failed" / f"{name}.json").read_text())["status"] == "failed"
        assert len([l for l in cap.out.splitlines() if l.strip().startswith(f"FAILED {name}:")]) == 1, cap.out


def test_a_repaired_link_loop_leaves_no_failure_of_a_source_that_is_gone(tmp_path, capsys):
    """The fault campaign's case: a two-link loop planted as clip.avi (clip.avi -> clip.avi.loop -> clip.avi)
    makes two failing sources; the repair puts the real clip.avi back and deletes the second link. --resume
    makes video_clip and drops the record of video_clip.avi.loop (no source makes it any more), so the
    dataset equals a run that never met the loop."""
    from regdpo.cli import main as regdpo_main

    src = tmp_path / "src"
    write_frames(src / "good", n=8)
    os.symlink("clip.avi.loop", src / "clip.avi")
    os.symlink("clip.avi", src / "clip.avi.loop")
    out = tmp_path / "out"
    argv = ["generate", "--video_root", str(src), "--output_dir", str(out), "--assumed_fps", "24", *SMALL]
    assert within(LIMIT_S, regdpo_main, argv) == 1
    assert sorted(p.name for p in (out / "_failed").iterdir()) == ["video_clip.avi.loop.json", "video_clip.json"]
    (src / "clip.avi").unlink()
    (src / "clip.avi.loop").unlink()
    write_video_file(src / "clip.avi", n=8)
    (out / "_failed" / "notes.txt").write_text("a user's file: not a record, kept")
    capsys.readouterr()
    assert regdpo_main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "dropped _failed/video_clip.avi.loop.json" in err, err
    assert sorted(p.name for p in (out / "_failed").iterdir()) == ["notes.txt"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [v["name"] for v in manifest["videos"]] == ["video_clip", "video_good"] and manifest["failed"] == []
    # a record of a source that is still there (failing again) is kept
    (src / "clip.avi").unlink()
    os.symlink("clip.avi", src / "clip.avi")
    shutil.rmtree(out / "video_clip")
    assert regdpo_main([*argv, "--resume"]) == 1
    assert (out / "_failed" / "video_clip.json").is_file()


# --------------------------------------------------------------------------- inside a finished dataset (item 15)


@pytest.fixture()
def dataset(tmp_path):
    return write_pair_dataset(tmp_path / "ds", videos=(("clip_a", 6), ("clip_b", 6)))


FIFO_PLACES = ["clip_a/gt_frames/00001.png", "clip_a/masks/00000.png", "clip_a/blur/00002.png", "clip_a/meta.json"]


@pytest.mark.parametrize("command, rel", [("audit", FIFO_PLACES[0]), ("audit", FIFO_PLACES[3]),
                                          ("verify", FIFO_PLACES[1]), ("verify", FIFO_PLACES[3]),
                                          ("preview", FIFO_PLACES[1]), ("preview", FIFO_PLACES[3]),
                                          ("pack", FIFO_PLACES[2])])
def test_dataset_commands_report_a_fifo_and_end(dataset, tmp_path, rel, command):
    fifo = dataset / rel
    fifo.unlink()
    os.mkfifo(fifo)
    extra = {"preview": ["--out", str(tmp_path / "prev")], "pack": [str(tmp_path / "packed")]}.get(command, [])
    try:
        proc = cli(command, str(dataset), *extra)
    finally:
        release(fifo)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "clip_a" in proc.stdout + proc.stderr


def test_verify_of_a_packed_dataset_whose_index_is_a_fifo_reports_it(dataset, tmp_path):
    packed = tmp_path / "packed"
    assert cli("pack", str(dataset), str(packed)).returncode == 0
    (packed / "index.json").unlink()
    os.mkfifo(packed / "index.json")
    try:
        proc = cli("verify", str(packed))
    finally:
        release(packed / "index.json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{packed / 'index.json'}: cannot read" in proc.stderr and "named pipe" in proc.stderr, proc.stderr


@pytest.mark.parametrize("rel", FIFO_PLACES[:3])
@pytest.mark.parametrize("skip_invalid", [False, True])
def test_dpo_dataset_meets_a_fifo_without_blocking(dataset, rel, skip_invalid):
    from regdpo.dataset import DPODataset

    fifo = dataset / rel
    fifo.unlink()
    os.mkfifo(fifo)
    args = SimpleNamespace(dpo_data_root=str(dataset), nframes=6, resolution=64, skip_invalid=skip_invalid)

    def read_all():
        ds = DPODataset(args, FakeTokenizer())
        return [ds.pairs[i].video for i in range(len(ds)) if ds[i] is not None]

    try:
        if skip_invalid:
            with pytest.warns(UserWarning, match="named pipe"):
                assert within(LIMIT_S, read_all) == ["clip_b"]  # the one with the FIFO is dropped, named
        else:
            with pytest.raises(InputUnreadable, match=f"{rel}: the image is a named pipe"):
                within(LIMIT_S, read_all)
    finally:
        release(fifo)


def test_generate_resume_meets_a_fifo_in_the_dataset_and_ends(tmp_path):
    src = tmp_path / "src"
    write_frames(src / "one", n=8)
    write_frames(src / "two", n=8)
    out = tmp_path / "out"
    argv = ["generate", "--video_root", str(src), "--output_dir", str(out), "--assumed_fps", "24", *SMALL]
    assert cli(*argv).returncode == 0
    fifo = out / "video_one" / "gt_frames" / "00001.png"
    frame = fifo.read_bytes()
    fifo.unlink()
    os.mkfifo(fifo)
    try:
        proc = cli(*argv, "--resume")
    finally:
        release(fifo)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == 1 and "FAILED video_one" in proc.stdout, proc.stdout + proc.stderr
    assert "1 already done" in proc.stdout, proc.stdout
    fifo.unlink()  # repaired: the video is complete again, and its failure record is not left behind
    fifo.write_bytes(frame)
    proc = cli(*argv, "--resume")
    assert proc.returncode == 0 and "2 already done" in proc.stdout, proc.stdout + proc.stderr
    assert not (out / "_failed" / "video_one.json").exists()


# --------------------------------------------------------------------------- a stuck reader never holds Ctrl-C


def test_a_reader_stuck_forever_does_not_hold_an_interrupt():
    """The reader thread blocked in a read that never returns (a hung file system): Ctrl-C (or SIGTERM, the
    same ``KeyboardInterrupt``) in the backend still ends the run, in about the reader's grace time."""
    from regdpo.generate.engine import LocalEngine

    stuck = threading.Event()

    class Stages:
        def prepare(self, source):
            if source == 1:
                stuck.wait()  # never set while the run lasts
            return source

        def compute(self, work, backend):
            time.sleep(0.3)  # the reader is now inside prepare(1)
            raise KeyboardInterrupt

        def finish(self, work):
            return work

    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            within(20, LocalEngine(backend=None).run, Stages(), [0, 1, 2], lambda outcome: None)
    finally:
        stuck.set()
    assert time.monotonic() - t0 < 10
