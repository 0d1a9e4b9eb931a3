"""An unwritable or read-only output folder is found before any work (a probe: an exclusive temporary file
created and removed, ``safe_io.check_writable``): one line naming it, exit 1, nothing made.

We run as root, which ignores permissions: EROFS / EACCES are simulated by making ``os.open`` refuse inside
the folder; a real read-only tmpfs mount is tried too (skipped where ``mount`` is not allowed)."""

import errno
import os
import subprocess
from pathlib import Path

import pytest

from regdpo.cli import main as regdpo_main
from regdpo.errors import OutputUnwritable
from regdpo.safe_io import check_writable
from helpers import tree_files, write_pair_dataset


def one_error_line(err: str, prefix: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]


def refuse_writes_in(monkeypatch, folder: Path, code: int) -> None:
    real_open = os.open

    def open_(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and Path(os.fsdecode(path)).parent == folder:
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", open_)


def no_work(monkeypatch):
    """Make the work of every command fail the test if it starts."""
    from regdpo.audit import preview, runner
    from regdpo.generate import pipeline

    def work(*a, **k):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(pipeline, "run_generation", work)
    monkeypatch.setattr(runner, "run_audit", work)
    monkeypatch.setattr(preview, "load_video", work)
    import regdpo.manifest_cli as manifest_cli

    monkeypatch.setattr(manifest_cli, "rebuild_manifest", work)


def commands(root: Path, out: Path) -> dict[str, list[str]]:
    return {
        "generate": ["generate", "--output_dir", str(out), "--max_videos", "1", "--nframes", "6", "--resolution", "64",
                     "--no_progress"],
        "audit": ["audit", str(root), "--output-dir", str(out), "--no-progress", "--no-html"],
        "preview": ["preview", str(root), "--output-dir", str(out), "--no-mp4"],
        "manifest": ["manifest", str(out)],
    }


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES], ids=["EROFS", "EACCES"])
@pytest.mark.parametrize("command", ["generate", "audit", "preview", "manifest"])
def test_an_unwritable_output_folder_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, command, code):
    root = write_pair_dataset(tmp_path / "d")
    out = root if command == "manifest" else tmp_path / "out"
    out.mkdir(exist_ok=True)
    before = tree_files(tmp_path)
    refuse_writes_in(monkeypatch, out, code)
    no_work(monkeypatch)
    assert regdpo_main(commands(root, out)[command]) == 1
    line = one_error_line(capsys.readouterr().err, f"regdpo {command}: error: ")
    assert str(out) in line and f"cannot write there ({os.strerror(code)})" in line, line
    assert tree_files(tmp_path) == before  # the probe left nothing


def test_a_folder_still_to_be_made_is_probed_where_it_will_be_made(tmp_path, monkeypatch):
    refuse_writes_in(monkeypatch, tmp_path, errno.EROFS)
    with pytest.raises(OutputUnwritable, match=f"--output_dir {tmp_path / 'a' / 'b'}: cannot write there"):
        check_writable(tmp_path / "a" / "b", "--output_dir")
    assert not (tmp_path / "a").exists()
    monkeypatch.undo()
    check_writable(tmp_path / "a" / "b")  # writable: nothing made, nothing left
    assert list(tmp_path.iterdir()) == []


def test_score_checks_its_output_before_loading_models(tmp_path, capsys, monkeypatch):
    from regdpo.train import score_cli

    monkeypatch.setattr(score_cli, "_check", lambda args: None)  # (no weights here) the flags pass
    (tmp_path / "ro").mkdir()
    refuse_writes_in(monkeypatch, tmp_path / "ro", errno.EROFS)
    argv = ["score", str(tmp_path), "--base_model_path", str(tmp_path), "--vae_path", str(tmp_path),
            "--diffueraser_path", str(tmp_path), "--output", str(tmp_path / "ro" / "score.json")]
    assert regdpo_main(argv) == 1
    line = one_error_line(capsys.readouterr().err, "regdpo score: error: ")
    assert f"--output {tmp_path / 'ro'}: cannot write there (Read-only file system)" in line


def test_a_real_read_only_mount(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                                 capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        mounted = False
    if not mounted:
        pytest.skip("mount -t tmpfs -o ro not allowed here")
    try:
        argv = ["generate", "--output_dir", str(ro / "dpo_data"), "--max_videos", "1", "--nframes", "6",
                "--resolution", "64", "--no_progress"]
        assert regdpo_main(argv) == 1
        line = one_error_line(capsys.readouterr().err, "regdpo generate: error: ")
        assert f"--output_dir {ro / 'dpo_data'}: cannot write there (Read-only file system)" in line, line
        assert regdpo_main(["manifest", str(ro)]) == 1
        assert "cannot write there (Read-only file system)" in capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True, timeout=30)


def test_a_manifest_that_cannot_be_rebuilt_at_the_end_is_a_warning_line(tmp_path, monkeypatch, capsys):
    """The videos are committed; only the final manifest.json fails to write (e.g. the disk filled at the last
    moment): one warning line saying how to rebuild it, never a traceback (the path once hit a NameError)."""
    import regdpo.generate.pipeline as pipeline

    def full_disk(root):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(root) / "manifest.json"))

    monkeypatch.setattr(pipeline, "rebuild_manifest", full_disk)
    out = tmp_path / "out"
    assert regdpo_main(["generate", "--output_dir", str(out), "--max_videos", "1", "--nframes", "4",
                        "--resolution", "64", "--neg_types", "blur", "--no_progress"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {out / 'manifest.json'} not rebuilt" in err and f"regdpo manifest {out}" in err, err
    assert "Traceback" not in err
    assert regdpo_main(["manifest", str(out)]) == 0
