"""Issue 11, runs that die or lie: very long source names, a full disk, SIGTERM, name collisions after
sanitising, an output folder inside --video_root, leftover temporary files, preview past a bad video."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from helpers import REPO, tree_files, dataset_contents

SMALL = ["--nframes", "6", "--resolution", "64", "--neg_types", "blur", "flicker", "--seed", "1", "--no_progress"]


def frame_folder(folder, frames=14, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    for i in range(frames):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), np.roll(base, i, axis=1))
    return folder


contents = dataset_contents


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "dpo"
    assert regdpo_main(["generate", "--output_dir", str(out), *SMALL]) == 0
    return out


def test_a_very_long_source_name_is_stored_and_recorded(tmp_path):
    videos = tmp_path / "videos"
    long_ok = frame_folder(videos / ("x" * 245))
    frame_folder(videos / ("y" * 245), frames=3, seed=1)  # too short: its skip record must be writable
    out = tmp_path / "dpo"
    run = ["generate", "--video_root", str(videos), "--output_dir", str(out), *SMALL]
    assert regdpo_main(run) == 0
    assert regdpo_main([*run, "--resume"]) == 0
    (made,) = fmt.complete_videos(out)
    assert made.startswith("video_xxx") and len(made) <= fmt.MAX_VIDEO_NAME
    assert fmt.read_video_meta(out, made).source["path"] == str(long_ok)
    manifest = fmt.load_manifest(out)
    assert len(manifest.skipped) == 1 and "too short" in manifest.skipped[0]["reason"]


def test_disk_full_stops_the_run_without_spending_attempts(tmp_path, reference, monkeypatch, capsys):
    import regdpo.frames as frames

    out = tmp_path / "dpo"
    real_open = frames.open_nofollow
    calls = {"n": 0}

    def filling_disk(path, mode=0o644):
        calls["n"] += 1
        if calls["n"] > 40:  # the disk fills during the second video
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, mode)

    monkeypatch.setattr(frames, "open_nofollow", filling_disk)
    run = ["generate", "--output_dir", str(out), *SMALL]
    assert regdpo_main(run) == 1
    err = capsys.readouterr().err
    assert "out of disk space" in err and "--resume" in err
    assert err.count("FAILED") == 0
    assert not (out / fmt.FAILED_DIR).exists()  # no attempt spent
    assert not list((out / fmt.STAGING_DIR).rglob("*")) if (out / fmt.STAGING_DIR).exists() else True
    assert len(fmt.complete_videos(out)) == 1
    monkeypatch.setattr(frames, "open_nofollow", real_open)
    assert regdpo_main([*run, "--resume"]) == 0
    assert contents(out) == contents(reference)


def test_file_size_limit_in_a_real_process(tmp_path, reference):
    """`ulimit -f`: every PNG write fails (EFBIG); the run stops cleanly, leaves no temporary file."""
    out = tmp_path / "dpo"
    cmd = " ".join([f"ulimit -f 4;", sys.executable, "generate_dpo_negatives.py", "--output_dir", str(out), *SMALL])
    proc = subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "out of disk space" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / fmt.FAILED_DIR).exists()
    leftovers = [p for p in tree_files(out) if not p.startswith(".lock") and p != fmt.MANIFEST_FILE]
    assert leftovers == []
    assert regdpo_main(["generate", "--output_dir", str(out), *SMALL, "--resume"]) == 0
    assert contents(out) == contents(reference)


def test_sigterm_abandons_the_video_rebuilds_the_manifest_and_says_how_to_resume(tmp_path, reference):
    out = tmp_path / "dpo"
    proc = subprocess.Popen([sys.executable, "generate_dpo_negatives.py", "--output_dir", str(out), *SMALL],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while not fmt.complete_videos(out):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "--resume" in err and "Traceback" not in err
    listed = [v.name for v in fmt.load_manifest(out).videos]
    assert listed == fmt.complete_videos(out) and listed
    assert regdpo_main(["generate", "--output_dir", str(out), *SMALL, "--resume"]) == 0
    assert contents(out) == contents(reference)


def test_a_source_added_beside_one_that_sanitises_alike_never_moves_a_finished_video(tmp_path, capsys):
    videos = tmp_path / "videos"
    frame_folder(videos / "a-b")
    out = tmp_path / "dpo"
    run = ["generate", "--video_root", str(videos), "--output_dir", str(out), *SMALL]
    assert regdpo_main(run) == 0
    written = {p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
               for p in (out / "video_a-b").rglob("*") if p.is_file()}
    second = frame_folder(videos / "a b", seed=5)  # added later: sorts first, and sanitises to video_a-b too
    capsys.readouterr()
    assert regdpo_main([*run, "--resume"]) == 0
    assert "1 written, 1 already done" in capsys.readouterr().out  # a-b is not made again
    assert {p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in (out / "video_a-b").rglob("*") if p.is_file()} == written  # untouched, not renamed
    assert sorted(fmt.complete_videos(out)) == ["video_a-b", "video_a-b-2"]
    assert fmt.read_video_meta(out, "video_a-b-2").source["path"] == str(second)
    assert fmt.read_video_meta(out, "video_a-b").source["id"] == "a-b"
    assert regdpo_main([*run, "--resume"]) == 0  # stable: both done
    assert "2 already done" in capsys.readouterr().out


def test_an_output_folder_inside_video_root_is_never_input(tmp_path, capsys):
    videos = tmp_path / "videos"
    frame_folder(videos / "clip")
    out = videos / "dpo"
    run = ["generate", "--video_root", str(videos), "--output_dir", str(out), *SMALL]
    assert regdpo_main(run) == 0
    assert regdpo_main([*run, "--resume"]) == 0
    other = ["generate", "--video_root", str(videos), "--output_dir", str(tmp_path / "dpo2"), *SMALL]
    assert regdpo_main(other) == 0  # another output: the first dataset is not a source either
    for root in (out, tmp_path / "dpo2"):
        manifest = fmt.load_manifest(root)
        assert [v.name for v in manifest.videos] == ["video_clip"] and not manifest.skipped


def test_leftover_temporary_files_never_block_overwrite(tmp_path, reference):
    out = tmp_path / "dpo"
    shutil.copytree(reference, out)
    (out / ".manifest.json.0123456789ab.tmp").write_bytes(b"")  # a process killed while writing
    (out / ".audit.json.4242.tmp").write_bytes(b"")  # an older version's temporary name
    (out / fmt.FAILED_DIR).mkdir()
    (out / fmt.FAILED_DIR / ".video_x.json.0123456789ab.tmp").write_bytes(b"")
    assert regdpo_main(["generate", "--output_dir", str(out), *SMALL, "--overwrite"]) == 0
    assert contents(out) == contents(reference)


def test_preview_goes_on_past_a_bad_video(tmp_path, reference, capsys):
    out = tmp_path / "dpo"
    shutil.copytree(reference, out)
    bad, *good = fmt.complete_videos(out)
    (out / bad / "blur" / "00001.png").write_bytes(b"not a png")
    assert regdpo_main(["preview", str(out), "--no-mp4", "--gif"]) == 1
    assert bad in capsys.readouterr().err
    made = sorted(p.name for p in (out / fmt.PREVIEW_DIR).iterdir())
    assert made == sorted([f"{g}.gif" for g in good] + ["contact_sheet.png"])


def _open_and_abort_writers(root, shard, count, failures):
    from regdpo.writer import VideoEntryWriter

    for i in range(count):
        try:
            VideoEntryWriter(root, f"v{shard}_{i}", staging_subdir=f"shard-{shard}-of-2").abort()
        except Exception as exc:  # noqa: BLE001 - what the test counts
            failures.put(f"{type(exc).__name__}: {exc}")
            return


def test_two_shards_writers_never_fail_on_the_other_removing_an_empty_staging(tmp_path):
    """Each shard's writer removes ``.staging/`` when it is left empty; the other shard, creating its
    staging folder at that moment, retries instead of failing the video (a flaky launch run, found by
    two processes opening and aborting writers in one folder: ~1 failure per 1000 before the fix)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    failures = context.Queue()
    workers = [context.Process(target=_open_and_abort_writers, args=(tmp_path, shard, 2000, failures))
               for shard in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert failures.empty(), failures.get()
    assert not (tmp_path / ".staging").exists()
