"""Sharded runs (--num_shards / --shard_index): several processes into one folder at once."""

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from helpers import DATA, REPO

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real-video fixtures not found at {DATA}")


def flags(out, *extra):
    return ["--davis_root", str(DATA / "DAVIS"), "--ytvos_root", str(DATA / "YTBV"), "--output_dir", str(out),
            "--nframes", "8", "--resolution", "64", "--seed", "5", "--no_progress", *map(str, extra)]


def output_files(root):
    """Every file of a dataset folder but the run locks, with meta.json minus its timings."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if not p.is_file() or p.name.startswith(fmt.LOCK_FILE):
            continue
        rel = p.relative_to(root).as_posix()
        if p.name == fmt.META_FILE:
            meta = json.loads(p.read_text())
            meta.pop("timings")
            out[rel] = meta
        else:
            out[rel] = p.read_bytes()
    return out


def test_concurrent_shards_equal_an_unsharded_run(tmp_path):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert regdpo_main(["generate", *flags(whole)]) == 0
    procs = [
        subprocess.Popen([sys.executable, "generate_dpo_negatives.py", *flags(sharded, "--num_shards", 2,
                                                                              "--shard_index", k)],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in (0, 1)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for stdout, _ in outputs:  # each shard made its part of the videos
        assert " written" in stdout and " 0 written" not in stdout, stdout
        assert "the last shard to finish writes the complete one" in stdout
    assert output_files(sharded) == output_files(whole)  # including manifest.json and the skip records
    assert not (sharded / fmt.STAGING_DIR).exists()
    # a shard run again finds its videos done; resume settings are checked as for --resume
    assert regdpo_main(["generate", *flags(sharded, "--num_shards", 2, "--shard_index", 1)]) == 0
    assert regdpo_main(["generate", *flags(sharded, "--num_shards", 2, "--shard_index", 1, "--resolution", 128)]) == 2


def test_locks_keep_runs_apart(tmp_path, capsys):
    out = tmp_path / "dpo"
    out.mkdir()
    with open(out / ".lock.shard-0-of-2", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert regdpo_main(["generate", *flags(out, "--num_shards", 2, "--shard_index", 0)]) == 2
        assert "shard-0-of-2 is already running" in capsys.readouterr().err
        assert regdpo_main(["generate", *flags(out, "--num_shards", 2, "--shard_index", 1, "--max_videos", 2)]) == 0
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_SH | fcntl.LOCK_NB)  # as a running shard holds it
        assert regdpo_main(["generate", *flags(out, "--resume")]) == 2
        assert "another regdpo generator is writing" in capsys.readouterr().err
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run without shards holds it
        assert regdpo_main(["generate", *flags(out, "--num_shards", 2, "--shard_index", 0)]) == 2
        assert "a run without shards is writing" in capsys.readouterr().err


def test_a_shard_clears_only_its_own_staging(tmp_path):
    out = tmp_path / "dpo"
    mine = out / fmt.STAGING_DIR / "shard-0-of-2" / "davis_x.1234abcd"
    theirs = out / fmt.STAGING_DIR / "shard-1-of-2" / "davis_y.1234abcd" / "gt_frames"
    mine.mkdir(parents=True)
    theirs.mkdir(parents=True)
    assert regdpo_main(["generate", *flags(out, "--num_shards", 2, "--shard_index", 0, "--max_videos", 1)]) == 0
    assert not mine.exists() and theirs.is_dir()


@pytest.mark.parametrize("extra, message", [
    (["--num_shards", 0], "--num_shards must be >= 1"),
    (["--num_shards", 2, "--shard_index", 2], "--shard_index must be between 0 and"),
    (["--num_shards", 2, "--overwrite"], "--overwrite cannot be combined with --num_shards"),
])
def test_bad_shard_flags(tmp_path, capsys, extra, message):
    assert regdpo_main(["generate", *flags(tmp_path / "o", *extra)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_object_masks_do_not_depend_on_shards_or_max_videos(tmp_path):
    """Donor annotations come from every discovered video, not from the shard's or --max_videos' cut."""
    whole, sharded, first = tmp_path / "whole", tmp_path / "sharded", tmp_path / "first"
    common = ["--mask_mode", "object", "--neg_types", "blur"]
    assert regdpo_main(["generate", *flags(whole, *common)]) == 0
    for k in (0, 1):
        assert regdpo_main(["generate", *flags(sharded, *common, "--num_shards", 2, "--shard_index", k)]) == 0
    assert regdpo_main(["generate", *flags(first, *common, "--max_videos", 2)]) == 0
    assert output_files(sharded) == output_files(whole)
    masks = {k: v for k, v in output_files(whole).items() if "/masks/" in k}
    first_masks = {k: v for k, v in output_files(first).items() if "/masks/" in k}
    assert first_masks and all(masks[k] == v for k, v in first_masks.items())
