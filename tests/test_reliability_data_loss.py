"""Issue 11, data loss: `regdpo manifest` beside a running generator, --overwrite deleting only what regdpo
wrote, an interrupted --overwrite, resume counting only complete videos, one damaged meta.json."""

import json
import shutil

import pytest

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from regdpo.errors import FormatError
from regdpo.writer import VideoEntryWriter, output_lock
from helpers import tree_files, dataset_contents

SMALL = ["--nframes", "6", "--resolution", "64", "--neg_types", "blur", "flicker", "--seed", "1", "--no_progress"]


def generate(out, *extra):
    return regdpo_main(["generate", "--output_dir", str(out), *SMALL, *extra])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run on the embedded samples (3 videos)."""
    out = tmp_path_factory.mktemp("ref") / "dpo"
    assert generate(out) == 0
    return out


contents = dataset_contents


def test_manifest_never_removes_staging_of_a_running_generator(tmp_path):
    root = tmp_path / "dpo"
    root.mkdir()
    staged = root / fmt.STAGING_DIR / "video_x.1234abcd" / "gt_frames"
    staged.mkdir(parents=True)
    (staged / "00000.png").write_bytes(b"work in progress")
    for shard in (None, "shard-0-of-2"):
        with output_lock(root, shard):  # a generator (or a shard of one) is running
            assert regdpo_main(["manifest", str(root)]) == 0
        assert (staged / "00000.png").is_file(), shard
    assert regdpo_main(["manifest", str(root)]) == 0  # nobody runs: the leftovers of a killed run go
    assert not (root / fmt.STAGING_DIR).exists()


def test_commit_refuses_streams_removed_under_it(tmp_path):
    import numpy as np

    gt = np.zeros((3, 16, 16, 3), np.uint8)
    hole = np.zeros((3, 16, 16), bool)
    hole[:, 4:8, 4:8] = True
    with VideoEntryWriter(tmp_path, "v") as writer:
        writer.write_gt(gt)
        writer.write_masks(hole)
        (writer.staging_dir / fmt.GT_DIR / "00001.png").unlink()  # e.g. removed by another process
        meta = fmt.VideoMeta("v", 3, 16, 16, [])
        with pytest.raises(FormatError, match="gt_frames has 2 frames"):
            writer.commit(meta)
    assert not (tmp_path / "v").exists()


def test_overwrite_never_deletes_a_users_folder_with_its_own_meta_json(tmp_path, reference, capsys):
    out = tmp_path / "dpo"
    shutil.copytree(reference, out)
    split = out / "train"  # e.g. a YouTube-VOS split kept beside the output
    (split / "JPEGImages").mkdir(parents=True)
    (split / "meta.json").write_text(json.dumps({"videos": {"003234408d": {}}}))
    assert generate(out, "--overwrite") == 2
    assert "'train'" in capsys.readouterr().err
    assert (split / "meta.json").is_file()
    # a regdpo-looking record, but the folder holds a file regdpo never writes
    (split / "meta.json").unlink()
    video = fmt.complete_videos(out)[0]
    (out / video / "my_notes.txt").write_text("mine")
    assert generate(out, "--overwrite") == 2
    assert (out / video / "my_notes.txt").is_file()


def test_interrupted_overwrite_leaves_every_video_whole_or_gone(tmp_path, reference, monkeypatch):
    out = tmp_path / "dpo"
    shutil.copytree(reference, out)
    real_rmtree = shutil.rmtree

    def interrupted_rmtree(path, *args, **kwargs):  # Ctrl-C after deleting one file
        victim = next((p for p in sorted(__import__("pathlib").Path(path).rglob("*.png"))), None)
        if victim is not None:
            victim.unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", interrupted_rmtree)
    assert generate(out, "--overwrite") == 130  # the command's Ctrl-C exit status
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    for name in fmt.complete_videos(out):  # what is left is complete
        fmt.validate_video_streams(out, fmt.read_video_meta(out, name))
    folders = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    assert all((p / fmt.META_FILE).is_file() for p in folders)
    assert generate(out, "--resume") == 0
    assert contents(out) == contents(reference)
    assert generate(out, "--overwrite") == 0  # and --overwrite works again
    assert contents(out) == contents(reference)


@pytest.mark.parametrize("damage", ["missing_frame", "truncated_frame", "missing_stream"])
def test_resume_makes_an_incomplete_committed_video_again(tmp_path, reference, damage, capsys):
    out = tmp_path / "dpo"
    shutil.copytree(reference, out)
    video = fmt.complete_videos(out)[1]
    frame = out / video / "blur" / "00003.png"
    if damage == "missing_frame":
        frame.unlink()
    elif damage == "truncated_frame":
        frame.write_bytes(frame.read_bytes()[:-40])
    else:
        shutil.rmtree(out / video / "flicker")
    assert generate(out, "--resume") == 0
    assert "1 written, 2 already done" in capsys.readouterr().out
    assert contents(out) == contents(reference)


def test_one_damaged_meta_json_is_reported_and_skipped(tmp_path, reference, capsys):
    out = tmp_path / "dpo"
    shutil.copytree(reference, out)
    bad, *good = fmt.complete_videos(out)
    (out / bad / fmt.META_FILE).write_text("{ not json")
    assert regdpo_main(["manifest", str(out)]) == 0
    manifest = fmt.load_manifest(out)
    assert [v.name for v in manifest.videos] == good
    assert manifest.failed[0]["name"] == bad and "not valid JSON" in manifest.failed[0]["reason"]
    capsys.readouterr()
    assert generate(out, "--resume") == 1  # the others are done; the damaged one is named, never replaced
    err = capsys.readouterr().err
    assert f"FAILED {bad}" in err and "not valid JSON" in err
    assert (out / bad / fmt.META_FILE).read_text() == "{ not json"
