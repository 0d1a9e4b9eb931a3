"""Issue 18, item 4: the temporary files a killed command left (``.prune.json.<12 hex>.tmp`` after a ``kill -9``
of ``regdpo prune``) are removed by the next command that holds the dataset's lock (prune, generate, manifest):
only regdpo's exact naming, of its own files, at the dataset's top and in ``_failed/`` / ``_preview/``; never a
user's file, a link, a folder below, nor the temporary of a command still writing (it holds an ``flock``)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from helpers import write_pair_dataset

from regdpo import safe_io
from regdpo.cli import main as regdpo_main
from regdpo.outputs import remove_leftover_temps

HEX = "0123456789ab"


def plant(root: Path) -> tuple[list[str], list[str]]:
    """Temporaries a killed command leaves (to remove) and look-alikes (to keep), relative to ``root``."""
    stale = [f".prune.json.{HEX}.tmp", f".manifest.json.{HEX}.tmp", f".audit.html.{HEX}.tmp",
             f"_failed/.clip_x.json.{HEX}.tmp", f"_preview/.clip_a.mp4.{HEX}.tmp.mp4"]
    keep = [".prune.json.notes.tmp",            # not regdpo's naming (no 12 hex digits)
            f".my_notes.txt.{HEX}.tmp",         # a temporary of a file regdpo does not write
            f"prune.json.{HEX}.tmp",            # no leading dot
            f"clip_a/.meta.json.{HEX}.tmp",     # below a video folder: not the top
            f".selection.json.{HEX}.tmp.d/x",   # a folder named like one
            f".score.json.{HEX}.tmp"]           # a link named like one (made below)
    for rel in stale + keep[:-1]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    (root / keep[-1]).symlink_to(root / "clip_a" / "meta.json")
    return stale, keep


def test_remove_leftover_temps_takes_only_regdpos_own_stale_temporaries(tmp_path):
    root = write_pair_dataset(tmp_path / "ds")
    stale, keep = plant(root)
    live = root / f".selection.json.{'f' * 12}.tmp"  # a command writing right now holds its temporary's flock
    live.write_bytes(b"being written")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        removed = remove_leftover_temps(root)
    finally:
        os.close(fd)
    assert sorted(removed) == sorted(stale)
    assert not any((root / rel).exists() for rel in stale)
    assert all((root / rel).exists() or (root / rel).is_symlink() for rel in keep) and live.exists()
    assert (root / "clip_a" / "meta.json").read_bytes().startswith(b"{")  # the link's target untouched


def test_a_temporary_is_locked_while_its_writer_lives(tmp_path, monkeypatch):
    """A cleaner running at the worst moment (just before the writer's rename) leaves the write alone."""
    target = tmp_path / "manifest.json"
    real_replace = os.replace
    seen = []

    def replace(src, dst):
        seen.append(safe_io.remove_stale_temps(tmp_path, lambda base: True))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    safe_io.write_bytes_atomic(target, b"{}")
    with safe_io.replacing(tmp_path / "clip.mp4", ".mp4") as tmp:
        tmp.write_bytes(b"video")
    assert seen == [[], []] and target.read_bytes() == b"{}" and (tmp_path / "clip.mp4").read_bytes() == b"video"


def test_a_temporary_removed_before_its_lock_is_taken_is_given_up_for_another(tmp_path, monkeypatch):
    real_flock = fcntl.flock
    first = []

    def flock(fd, op):
        if not first:  # the cleaner wins the race once: it removes the fresh temporary before the writer locks it
            first.append(True)
            os.unlink(next(p for p in tmp_path.iterdir() if p.name.startswith(".a.json.")))
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    safe_io.write_bytes_atomic(tmp_path / "a.json", b"1")
    assert (tmp_path / "a.json").read_bytes() == b"1" and sorted(os.listdir(tmp_path)) == ["a.json"]


def selection(root: Path) -> None:
    names = sorted(p.name for p in root.iterdir() if (p / "meta.json").is_file())
    (root / "selection.json").write_text(json.dumps({
        "schema": 1, "considered": names,
        "picks": [{"video": n, "stream": "blur", "neg_type": "blur"} for n in names]}))


@pytest.mark.parametrize("command", ["prune", "manifest", "generate"])
def test_the_next_command_holding_the_lock_removes_them(tmp_path, command, capsys):
    if command == "generate":
        src = tmp_path / "src"
        from test_reliability_inputs import write_frames

        write_frames(src / "clip", n=8)
        root = tmp_path / "ds"
        argv = ["generate", "--video_root", str(src), "--output_dir", str(root), "--nframes", "4", "--resolution",
                "64", "--neg_types", "blur", "--no_progress"]
        assert regdpo_main(argv) == 0
        argv.append("--resume")
    else:
        root = write_pair_dataset(tmp_path / "ds")
        argv = [command, str(root)]
    if command == "prune":
        selection(root)
        assert regdpo_main(["prune", str(root), "--dry-run"]) in (0, 1)
    stale, keep = plant(root)
    if command == "prune":  # a dry run changes nothing, not even leftovers
        regdpo_main(["prune", str(root), "--dry-run"])
        assert all((root / rel).exists() for rel in stale)
    capsys.readouterr()
    rc = regdpo_main(argv)
    assert rc in (0, 1), capsys.readouterr()
    assert not [rel for rel in stale if (root / rel).exists()]
    assert all((root / rel).exists() or (root / rel).is_symlink() for rel in keep)
