"""kill -9 in the middle of a real run leaves no partial video, and --resume finishes it so that the
output equals an uninterrupted run with the same seed, file for file (meta.json minus ``timings``)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from helpers import DATA, REPO, tree_files

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real-video fixtures not found at {DATA}")


def flags(out):
    return ["--davis_root", str(DATA / "DAVIS"), "--ytvos_root", str(DATA / "YTBV"), "--output_dir", str(out),
            "--nframes", "12", "--resolution", "128", "--seed", "3", "--no_progress"]


def staged_frames(root):
    staging = Path(root) / fmt.STAGING_DIR
    return list(staging.glob("*/*/*.png")) if staging.is_dir() else []


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "generate_dpo_negatives.py", *flags(killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        # wait until one video is committed and the next one is half written in .staging/
        while not (fmt.complete_videos(killed) and staged_frames(killed)):
            assert proc.poll() is None, f"generator ended early: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no video committed within 120 s"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    # complete or absent: every video folder holds meta.json, and not all videos are done yet
    folders = [p for p in killed.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    assert all((p / fmt.META_FILE).is_file() for p in folders)
    done_at_kill = fmt.complete_videos(killed)
    assert 1 <= len(done_at_kill) < 5, done_at_kill
    assert staged_frames(killed)  # the interrupted video's work in progress is left in .staging/ only
    for name in done_at_kill:
        fmt.validate_video_streams(killed, fmt.read_video_meta(killed, name))

    # without a flag the folder is refused; --resume finishes the rest
    assert regdpo_main(["generate", *flags(killed)]) == 2
    assert regdpo_main(["generate", *flags(killed), "--resume"]) == 0
    assert not staged_frames(killed)  # cleared by the resumed run

    clean = tmp_path / "clean"
    assert regdpo_main(["generate", *flags(clean)]) == 0
    files = tree_files(clean)
    assert len(fmt.complete_videos(clean)) == 5 and files == tree_files(killed)
    compared = 0
    for rel in files:
        a, b = killed / rel, clean / rel
        if a.name == fmt.META_FILE:
            ma, mb = json.loads(a.read_text()), json.loads(b.read_text())
            ma.pop("timings"), mb.pop("timings")
            assert ma == mb, rel
        else:
            assert a.read_bytes() == b.read_bytes(), rel
        compared += 1
    assert compared > 5 * 5 * 12  # 5 videos x 5 streams x 12 frames, plus records


def test_a_second_run_into_a_locked_folder_is_refused_and_deletes_nothing(tmp_path):
    """Two generators never write one folder: the second stops before touching anything."""
    import fcntl

    out = tmp_path / "dpo"
    flags = ["generate", "--no_progress", "--davis_root", DATA / "DAVIS", "--max_videos", "1", "--nframes", "6",
             "--resolution", "64", "--neg_types", "blur", "--output_dir", out]
    flags = [str(f) for f in flags]
    assert regdpo_main(flags) == 0
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    (out / ".staging").mkdir()  # work in progress of the run that holds the lock
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for extra in (["--resume"], ["--overwrite"]):
            assert regdpo_main(flags + extra) == 2
        assert (out / ".staging").is_dir()
    (out / ".staging").rmdir()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert regdpo_main(flags + ["--overwrite"]) == 0  # lock released: runs again
    assert (out / ".lock").is_file()


def test_overwrite_after_audit_and_preview(tmp_path):
    """README's workflow (generate, audit, preview) leaves regdpo's own files: --overwrite may delete them."""
    out = tmp_path / "dpo"
    small = ["--davis_root", str(DATA / "DAVIS"), "--max_videos", "1", "--nframes", "6", "--resolution", "64",
             "--neg_types", "blur", "--no_progress", "--output_dir", str(out)]
    assert regdpo_main(["generate", *small]) == 0
    assert regdpo_main(["audit", str(out), "--no-progress", "--write-filtered-manifest"]) == 0
    assert regdpo_main(["preview", str(out)]) == 0
    for name in ("audit.json", "audit.html", "manifest.filtered.json", "_preview"):
        assert (out / name).exists(), name
    (out / "notes.txt").write_text("mine")
    assert regdpo_main(["generate", *small, "--overwrite"]) == 2  # a file regdpo did not write: refused
    (out / "notes.txt").unlink()
    assert regdpo_main(["generate", *small, "--overwrite"]) == 0
    assert not (out / "audit.json").exists() and not (out / "_preview").exists()


def test_resume_refuses_other_backend_settings_but_not_other_paths_or_versions(tmp_path, capsys):
    out = tmp_path / "dpo"
    small = ["generate", "--davis_root", str(DATA / "DAVIS"), "--max_videos", "1", "--nframes", "6",
             "--resolution", "64", "--neg_types", "blur", "--no_progress", "--output_dir", str(out)]
    assert regdpo_main(small) == 0
    (video,) = fmt.complete_videos(out)
    meta_path = out / video / fmt.META_FILE
    meta = json.loads(meta_path.read_text())
    meta["generator"]["backend_settings"]["versions"] = {"torch": "0.0"}  # e.g. resumed after an upgrade
    meta["generator"]["backend_settings"]["paths"] = {"vae_path": "/elsewhere"}
    meta_path.write_text(json.dumps(meta))
    assert regdpo_main(small + ["--resume"]) == 0
    meta["generator"]["backend_settings"]["inpaint"] = "cv2.INPAINT_NS radius 9"  # made another way
    meta_path.write_text(json.dumps(meta))
    assert regdpo_main(small + ["--resume"]) == 2
    assert "other classical backend settings (inpaint:" in capsys.readouterr().err
