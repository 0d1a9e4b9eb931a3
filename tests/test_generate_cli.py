"""The generator's command line: flags, refusals, bad input, per-video failures and retries."""

import argparse
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.cli import build_parser
from regdpo.cli import main as regdpo_main
from regdpo.generate.cli import build_parser as script_parser
from helpers import DATA, REPO

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real-video fixtures not found at {DATA}")

ISSUE_FLAGS = [
    "--davis_root", "--ytvos_root", "--output_dir", "--nframes", "--max_videos", "--neg_types",
    "--base_model_path", "--vae_path", "--diffueraser_path", "--propainter_model_dir", "--pcm_weights_path",
    "--resume", "--seed", "--backend", "--device", "--mask_mode", "--overwrite", "--davis_split", "--ytvos_split",
    "--video_root", "--fps", "--prompt", "--captions", "--resolution", "--center_crop", "--flicker_segments",
    "--max_attempts",
]


def generate(*flags):
    return regdpo_main(["generate", "--no_progress", *map(str, flags)])


def small_davis(tmp_path, frames=10):
    """A copy of the DAVIS fixture cut to ``frames`` frames (so it can be damaged)."""
    if not DATA.is_dir():
        pytest.skip(f"real-video fixtures not found at {DATA}")
    root = tmp_path / "DAVIS"
    for seq in ("bmx-trees", "tennis"):
        for kind, ext in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
            dst = root / kind / "480p" / seq
            dst.mkdir(parents=True)
            for i in range(frames):
                shutil.copy(DATA / "DAVIS" / kind / "480p" / seq / f"{i:05d}{ext}", dst)
    return root


def options_of(parser):
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


def test_help_documents_every_flag(capsys):
    parser = build_parser(["generate"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["generate"]
    flags = options_of(sub)
    assert set(ISSUE_FLAGS) <= flags
    with pytest.raises(SystemExit) as exc:
        regdpo_main(["generate", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in flags - {"--help"}:
        assert flag in text, flag
    action_help = {a.option_strings[0]: a.help for a in sub._actions if a.option_strings}
    assert all(action_help[f] for f in action_help if f != "-h"), "every flag has a help text"
    assert options_of(script_parser()) == flags  # the script takes the same flags


def test_script_runs_from_the_repo_root():
    proc = subprocess.run([sys.executable, "generate_dpo_negatives.py", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--davis_root" in proc.stdout and "--pcm_weights_path" in proc.stdout and "--resume" in proc.stdout


def test_bad_flags_are_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    for flags, message in [
        (["--nframes", "0"], "--nframes must be a positive"),
        (["--nframes", "-3"], "--nframes must be a positive"),
        (["--resolution", "100"], "--resolution must be a multiple of 8"),
        (["--max_videos", "0"], "--max_videos must be >= 1"),
        (["--flicker_segments", "30", "--nframes", "8"], "--flicker_segments must be between 2 and --nframes"),
        (["--flicker_segments", "1"], "--flicker_segments must be between 2 and --nframes"),
        (["--neg_types", "blur", "--flicker_segments", "0"], "--flicker_segments must be between 2"),
        (["--resume", "--overwrite"], "--resume and --overwrite"),
        (["--davis_root", tmp_path / "nope"], "--davis_root .*nope: folder not found"),
        (["--video_root", tmp_path], "--video_root .*no videos found"),
        (["--captions", tmp_path / "c.json"], "--captions .*c.json: file not found"),
    ]:
        if flags[0] == "--video_root":
            (tmp_path / "empty_sub").mkdir(exist_ok=True)
            flags = ["--video_root", tmp_path / "empty_sub"]
        assert generate("--output_dir", out, *flags) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("regdpo generate: error: ")
        import re

        assert re.search(message, err), (flags, err)
        assert not out.exists()


def test_unknown_neg_type_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        generate("--output_dir", tmp_path / "o", "--neg_types", "blur", "smear")
    assert exc.value.code == 2
    assert "invalid choice: 'smear'" in capsys.readouterr().err


def test_models_backend_without_weights_is_a_clear_error_not_a_fallback(tmp_path, capsys):
    out = tmp_path / "out"
    # (--resolution 256: at 64 ProPainter's working size could never suit RAFT, refused before the weights)
    assert generate("--output_dir", out, "--backend", "models", "--nframes", "8", "--resolution", "256") == 2
    err = capsys.readouterr().err
    assert "cannot use --backend models" in err
    for flag in ("--base_model_path", "--vae_path", "--diffueraser_path", "--propainter_model_dir",
                 "--pcm_weights_path"):
        assert flag in err
    assert not out.exists()
    # auto picks models as soon as one weight path is given: still an error, never classical
    assert generate("--output_dir", out, "--vae_path", tmp_path, "--nframes", "8") == 2
    err = capsys.readouterr().err
    assert "cannot use --backend models" in err and "--base_model_path is required" in err
    assert not out.exists()


def test_non_empty_output_needs_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something.txt").write_text("x")
    assert generate("--output_dir", out, "--nframes", "8", "--resolution", "64") == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--resume" in err and "--overwrite" in err
    assert generate("--output_dir", out, "--nframes", "8", "--resolution", "64", "--overwrite") == 2
    assert "'something.txt', which regdpo did not write" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["something.txt"]


@needs_data
def test_overwrite_and_resume_settings_check(tmp_path, capsys):
    davis = small_davis(tmp_path)
    out = tmp_path / "out"
    base = ["--davis_root", davis, "--output_dir", out, "--nframes", "8", "--resolution", "64"]
    assert generate(*base) == 0
    first = (out / "davis_tennis/masks/00000.png").read_bytes()
    assert generate(*base, "--resume") == 0
    assert "2 already done" in capsys.readouterr().out
    assert generate(*base, "--resume", "--seed", "5") == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--seed 0" in err and "--seed 5" in err and "--overwrite" in err
    assert generate(*base, "--overwrite", "--seed", "5") == 0
    assert (out / "davis_tennis/masks/00000.png").read_bytes() != first
    assert fmt.read_video_meta(out, "davis_tennis").generator["run_seed"] == 5


@needs_data
def test_corrupt_frame_fails_that_video_only_and_resume_retries_up_to_max_attempts(tmp_path, capsys):
    davis = small_davis(tmp_path, frames=8)
    bad = davis / "JPEGImages/480p/tennis/00003.jpg"
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[: len(good_bytes) // 8])  # truncated JPEG
    out = tmp_path / "out"
    base = ["--davis_root", davis, "--output_dir", out, "--nframes", "8", "--resolution", "64"]

    assert generate(*base) == 1  # the run goes on, but says that something failed
    captured = capsys.readouterr()
    assert "FAILED davis_tennis" in captured.err and "00003.jpg" in captured.err
    assert "1 written" in captured.out and "1 failed" in captured.out and "--resume" in captured.out
    assert fmt.complete_videos(out) == ["davis_bmx-trees"]
    record = json.loads((out / fmt.FAILED_DIR / "davis_tennis.json").read_text())
    assert record["status"] == "failed" and record["attempts"] == 1 and "00003.jpg" in record["reason"]
    manifest = fmt.load_manifest(out)
    assert [f["name"] for f in manifest.failed] == ["davis_tennis"]

    assert generate(*base, "--resume") == 1  # second attempt
    assert json.loads((out / fmt.FAILED_DIR / "davis_tennis.json").read_text())["attempts"] == 2
    capsys.readouterr()
    assert generate(*base, "--resume") == 1  # --max_attempts 2 reached: not tried again
    captured = capsys.readouterr()
    assert "no more attempts" in captured.out and "FAILED davis_tennis (attempt" not in captured.err
    assert json.loads((out / fmt.FAILED_DIR / "davis_tennis.json").read_text())["attempts"] == 2

    bad.write_bytes(good_bytes)  # fixed: one more attempt allowed
    assert generate(*base, "--resume", "--max_attempts", "3") == 0
    assert fmt.complete_videos(out) == ["davis_bmx-trees", "davis_tennis"]
    assert not (out / fmt.FAILED_DIR / "davis_tennis.json").exists()
    assert fmt.load_manifest(out).failed == []


@needs_data
def test_unreadable_object_annotation_fails_the_video_that_uses_it(tmp_path, capsys):
    davis = small_davis(tmp_path, frames=8)
    for p in (davis / "Annotations/480p/tennis").iterdir():
        p.write_bytes(b"broken")
    out = tmp_path / "out"
    rc = generate("--davis_root", davis, "--output_dir", out, "--nframes", "8", "--resolution", "64",
                  "--mask_mode", "object")
    assert rc == 1
    # bmx-trees takes its mask from tennis (the only other annotated video): fails naming the file
    record = json.loads((out / fmt.FAILED_DIR / "davis_bmx-trees.json").read_text())
    assert "Annotations/480p/tennis/0000" in record["reason"] and "unreadable annotation" in record["reason"]
    assert fmt.complete_videos(out) == ["davis_tennis"]
    assert fmt.read_video_meta(out, "davis_tennis").generator["mask"]["donor_video"] == "davis_bmx-trees"


def test_empty_frame_folder_and_short_video_are_skipped_with_reason(tmp_path, capsys):
    root = tmp_path / "videos"
    (root / "empty").mkdir(parents=True)
    short = root / "short"
    short.mkdir()
    for i in range(3):
        cv2.imwrite(str(short / f"{i:03d}.png"), np.full((40, 48, 3), 30 * i, np.uint8))
    out = tmp_path / "out"
    assert generate("--video_root", root, "--output_dir", out, "--nframes", "4", "--resolution", "32") == 0
    records = {r["name"]: r for r in fmt.failure_records(out)}
    assert records["video_empty"]["status"] == "skipped" and "no frames found" in records["video_empty"]["reason"]
    assert records["video_short"]["status"] == "skipped" and "too short: 3 frames" in records["video_short"]["reason"]
    assert "2 skipped" in capsys.readouterr().out


def test_flicker_segment_length_sets_the_number_of_segments(tmp_path):
    from regdpo.generate.cli import config_from_args

    parse = lambda *a: config_from_args(script_parser().parse_args(["--output_dir", str(tmp_path), *a]))
    assert parse("--nframes", "22").flicker_segments == 3
    assert parse("--nframes", "22", "--flicker_segment_length", "5").flicker_segments == 5
    assert parse("--nframes", "22", "--flicker_segments", "4").flicker_segments == 4
    from regdpo.errors import UsageError

    with pytest.raises(UsageError, match="not both"):
        parse("--flicker_segments", "2", "--flicker_segment_length", "5")
    assert parse().backend == "classical"
    assert parse("--neg_types", "flicker", "blur", "blur").neg_types == ("blur", "flicker")


def test_flags_accept_dashes_and_underscores(tmp_path, capsys):
    from regdpo.cli import main as regdpo_main
    from regdpo.generate.cli import main as script_main

    with pytest.raises(SystemExit):
        script_main(["--max-videos", "0", "--output-dir", str(tmp_path / "a"), "--bogus-flag"])
    assert "--bogus-flag" in capsys.readouterr().err  # unknown flags still rejected, by their own name
    assert script_main(["--max-videos", "0", "--output-dir", str(tmp_path / "a")]) == 2
    assert "--max_videos must be >= 1" in capsys.readouterr().err
    assert regdpo_main(["generate", "--nframes=0", "--output-dir=" + str(tmp_path / "b")]) == 2
    assert "--nframes must be a positive" in capsys.readouterr().err
    assert regdpo_main(["audit", str(tmp_path / "missing"), "--max_videos", "3", "--no_progress"]) == 2
    assert "missing" in capsys.readouterr().err
