"""What a new user following the docs met (issue 18): the audit judges an on-policy negative (``inpaint``) by
its quality-score band, not by a defect verdict it cannot have; every usage error of every command is one line
(a misspelt flag names the closest one); a read-only dataset is a data error (exit 1) for ``prune``."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from helpers import REPO, write_pair_dataset


def one_line(err: str, prefix: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err and "usage:" not in err
    return lines[0]


# --------------------------------------------------------------------------- item 7: on-policy negatives


@pytest.fixture(scope="module")
def inpaint_dataset(tmp_path_factory):
    """Two videos, each with a clear blur and an ``inpaint`` negative: ``hard``'s inpaint in the default band
    (quality ~0.5), ``easy``'s almost the GT (too good)."""
    from regdpo.audit import synthetic as S
    from regdpo.writer import rebuild_manifest

    root = tmp_path_factory.mktemp("onpolicy") / "dpo_data"
    t, h, w = 8, 64, 96
    gt = S.textured_clip(t, h, w, seed=1)
    hole = S.moving_ellipse_hole(t, h, w, seed=2)
    for name, sigma in (("hard", 1.8), ("easy", 0.8)):
        S.write_synthetic_video(root, name, gt, hole, {"blur": S.blur_negative(gt, 2.5),
                                                       "inpaint": S.blur_negative(gt, sigma)})
    rebuild_manifest(root)
    return root


def test_the_audit_keeps_eligible_inpaint_negatives(inpaint_dataset, capsys):
    root = inpaint_dataset
    rc = regdpo_main(["audit", str(root), "--no-progress", "--no-html", "--write-filtered-manifest", "--strict"])
    out = capsys.readouterr().out
    doc = json.loads((root / fmt.AUDIT_JSON).read_text())
    items = {(i["video"], i["stream"]): i for i in doc["items"]}
    assert items[("hard", "inpaint")]["band"] == "eligible" and items[("hard", "inpaint")]["passes"]
    assert items[("easy", "inpaint")]["band"] == "too_good" and not items[("easy", "inpaint")]["passes"]
    assert items[("hard", "inpaint")]["verdict"] == "not_measured"  # no designed defect: no verdict, yet kept
    kept = {v.name: v.stream_names for v in fmt.load_manifest(root, root / fmt.FILTERED_MANIFEST_FILE).videos}
    assert kept == {"hard": ["blur", "inpaint"], "easy": ["blur"]}
    assert rc == 1  # --strict: easy's inpaint is outside the band
    assert "OUTSIDE --band: video easy, inpaint" in out and "video hard, inpaint" not in out
    assert doc["summary"]["inpaint"]["passing"] == 1
    # only eligible ones: --strict passes
    assert regdpo_main(["audit", str(root), "--no-progress", "--no-html", "--strict", "--video", "hard",
                        "--output-dir", str(root.parent / "hard_only")]) == 0


def test_on_policy_types_are_a_property_of_the_type():
    from regdpo.audit.runner import decide

    assert fmt.ON_POLICY_TYPES <= set(fmt.NEG_TYPES) and "inpaint" in fmt.ON_POLICY_TYPES
    items = [{"neg_type": "inpaint", "verdict": "not_measured", "failures": [], "band": band, "impure": []}
             for band in ("eligible", "too_good", "too_bad", None)]
    items.append({"neg_type": "blur", "verdict": "not_measured", "failures": [], "band": "eligible", "impure": []})
    items.append({"neg_type": "inpaint", "verdict": "not_measured", "failures": [{"check": "x"}], "band": "eligible",
                  "impure": []})
    decide(items, "weak")
    assert [i["passes"] for i in items] == [True, False, False, False, False, False]


# --------------------------------------------------------------------------- item 11: one-line usage errors


@pytest.mark.parametrize("argv, prefix, hint", [
    (["generate", "--resolutoin", "256"], "regdpo generate: error: unrecognized arguments: --resolutoin 256",
     "did you mean --resolution?"),
    (["generate", "--resolution", "abc"], "regdpo generate: error: argument --resolution", "'abc'"),
    (["audit"], "regdpo audit: error: the following arguments are required: root", ""),
    (["prune", "x", "--dryrun"], "regdpo prune: error: unrecognized arguments: --dryrun", "did you mean --dry-run?"),
    (["verify", "x", "--jsn", "y"], "regdpo verify: error: unrecognized arguments", "did you mean --json?"),
    (["select"], "regdpo select: error:", ""),
    (["score"], "regdpo score: error:", ""),
    (["preview"], "regdpo preview: error:", ""),
    (["manifest"], "regdpo manifest: error:", ""),
    (["launch", "--gpus", "0", "--", "--resolutoin", "3"], "regdpo launch: generate flag: error: unrecognized",
     "did you mean --resolution?"),
    (["nosuchcommand"], "regdpo: error: argument COMMAND: invalid choice", ""),
])
def test_every_usage_error_is_one_line(argv, prefix, hint, capsys):
    with pytest.raises(SystemExit) as exc:
        regdpo_main(argv)
    assert exc.value.code == 2
    line = one_line(capsys.readouterr().err, prefix)
    assert hint in line


def test_the_generator_script_usage_error_is_one_line():
    proc = subprocess.run([sys.executable, str(REPO / "generate_dpo_negatives.py"), "--resolutoin", "256"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 2
    assert "did you mean --resolution?" in one_line(proc.stderr, "generate_dpo_negatives.py: error: unrecognized")


# --------------------------------------------------------------------------- item 18: read-only dataset


def refuse_writes_in(monkeypatch, folder: Path, code: int) -> None:
    """As on a read-only mount (we run as root, which ignores permissions): no file is created in ``folder``."""
    real_open = os.open

    def open_(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and Path(os.fsdecode(path)).parent == folder:
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", open_)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "prune"])
@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES], ids=["EROFS", "EACCES"])
def test_prune_on_a_read_only_dataset_is_a_data_error(tmp_path, monkeypatch, capsys, dry_run, code):
    root = write_pair_dataset(tmp_path / "d")
    (root / fmt.SELECTION_FILE).write_text(json.dumps({"considered": ["clip_a"],
                                                       "picks": [{"video": "clip_a", "stream": "blur"}]}))
    refuse_writes_in(monkeypatch, root, code)
    assert regdpo_main(["prune", str(root), *(["--dry-run"] if dry_run else [])]) == 1
    line = one_line(capsys.readouterr().err, "regdpo prune: error: ")
    assert str(root) in line and os.strerror(code) in line


# --------------------------------------------------------------------------- item 8: no silent upscaling


def test_training_refuses_to_enlarge_a_dataset_beyond_the_generators_max_upscale(tmp_path):
    import argparse

    from regdpo.dataset import DEFAULT_MAX_UPSCALE, DPODataset
    from regdpo.errors import UsageError
    from regdpo.generate.config import GenerateConfig
    from regdpo.train.loop import build_parser
    from helpers import FakeTokenizer

    assert DEFAULT_MAX_UPSCALE == GenerateConfig.max_upscale  # one policy
    root = tmp_path / "d"
    write_pair_dataset(root, videos=(("small", 6),), size=64)
    write_pair_dataset(root, videos=(("big", 6),), size=128, seed=1)

    def ds(**kw):
        return DPODataset(argparse.Namespace(dpo_data_root=str(root), nframes=4, resolution=128, **kw),
                          FakeTokenizer())

    with pytest.raises(UsageError) as exc:
        ds()
    text = str(exc.value)
    assert "resolution 128 enlarges 1 video(s) more than max_upscale 1.25" in text and "small, stored 64x64, 2.00x" \
        in text and "train at resolution 80 or lower" in text and "max_upscale 2" in text
    assert {p.video for p in ds(max_upscale=2).pairs} == {"small", "big"}
    with pytest.warns(UserWarning, match="small: 2.00x upscale"):
        assert {p.video for p in ds(skip_invalid=True).pairs} == {"big"}
    assert {p.video for p in DPODataset(argparse.Namespace(dpo_data_root=str(root), nframes=4, resolution=80),
                                        FakeTokenizer()).pairs} == {"small", "big"}  # 1.25x: the limit itself
    args = build_parser().parse_args(["--base_model_name_or_path", "a", "--vae_path", "b", "--diffueraser_path", "c",
                                      "--dpo_data_root", "d"])
    assert args.max_upscale == DEFAULT_MAX_UPSCALE


# --------------------------------------------------------------------------- item 10: the models backend


def test_a_models_setting_that_can_never_work_is_one_line_before_any_video(tmp_path, capsys):
    from regdpo.backends.models_config import ModelsConfig
    from regdpo.errors import UsageError

    out = tmp_path / "out"
    argv = ["generate", "--backend", "models", "--resolution", "128", "--nframes", "6", "--output_dir", str(out),
            "--no_progress"]
    assert regdpo_main(argv) == 2  # before the weights are even looked for, nothing made
    line = one_line(capsys.readouterr().err, "regdpo generate: error: --propainter_resize_ratio 0.6 at --resolution "
                    "128: ProPainter would work at 72 px")
    assert "RAFT needs at least 128" in line and "--propainter_resize_ratio 1 or more, or --resolution 216" in line
    assert not (out / fmt.FAILED_DIR).exists() and not list(out.glob("*/meta.json"))
    ModelsConfig(propainter_resize_ratio=0.6).check_resolution(216)  # 129 px: works
    ModelsConfig(propainter_resize_ratio=1.0).check_resolution(128)
    with pytest.raises(UsageError, match="--resolution 224 or more"):
        ModelsConfig(propainter_resize_ratio=0.58).check_resolution(216)


def test_training_without_the_diffueraser_code_names_the_flag_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("accelerate (the [models] extra) is not installed")
    if importlib.util.find_spec("diffueraser") is not None:
        pytest.skip("the DiffuEraser code is on sys.path here")
    from regdpo.backends.models_source import import_source
    from regdpo.errors import UsageError
    from regdpo.train import loop

    with pytest.raises(UsageError) as exc:
        import_source(None)
    assert "--diffueraser_repo" in str(exc.value) and "pip install" not in str(exc.value)
    monkeypatch.delenv("REGDPO_DIFFUERASER_REPO", raising=False)
    monkeypatch.setattr(loop, "check_args", lambda args: loop.step_config(args))  # (no weights here) flags pass
    out = tmp_path / "run"
    rc = loop.main(["--base_model_name_or_path", str(tmp_path), "--vae_path", str(tmp_path), "--diffueraser_path",
                    str(tmp_path), "--dpo_data_root", str(tmp_path), "--output_dir", str(out)])
    assert rc == 2
    line = one_line(capsys.readouterr().err, "train_region_reg_dpo.py: error: the DiffuEraser code was not found")
    assert "--diffueraser_repo PATH" in line and "pip install" not in line
    assert not out.exists()  # no empty output folder left behind


# --------------------------------------------------------------------------- item 11: launch on CPUs, skips


def test_a_skipped_source_is_reported_and_counted_once_with_masks_per_clip(tmp_path, capsys):
    out = tmp_path / "dpo"
    argv = ["generate", "--output_dir", str(out), "--resolution", "200", "--nframes", "6", "--neg_types", "blur",
            "--masks_per_clip", "3", "--seed", "2", "--no_progress"]
    assert regdpo_main(argv) == 0
    captured = capsys.readouterr()
    # sample_carphone_pristine (176x144) would need a 1.39x upscale: skipped, as one source of 3 entries
    skipped_lines = [line for line in captured.err.splitlines() if "skipped sample_carphone" in line]
    assert len(skipped_lines) == 1 and "(a source of 3 --masks_per_clip entries" in skipped_lines[0], captured.err
    assert "9 videos -> " in captured.out and "6 written, 0 already done, 1 source skipped (3 --masks_per_clip " \
        "entries), 0 failed" in captured.out, captured.out
    assert [line for line in captured.out.splitlines() if line.strip().startswith("skipped ")] == [
        f"  skipped sample_carphone_pristine: {skipped_lines[0].split(': ', 2)[-1].split(' (a source')[0]}"]
    assert sorted(p.name for p in (out / fmt.FAILED_DIR).iterdir()) == ["sample_carphone_pristine.json"]
    manifest = fmt.load_manifest(out)
    assert len(manifest.skipped) == 1 and manifest.skipped[0]["entries"] == 3 and len(manifest.videos) == 6
    assert regdpo_main([*argv, "--resume"]) == 0  # and again on --resume: once
    captured = capsys.readouterr()
    assert len([line for line in captured.err.splitlines() if "skipped sample_carphone" in line]) == 1
    assert "6 already done, 1 source skipped (3 --masks_per_clip entries)" in captured.out


def test_launch_runs_cpu_workers_named_as_such(tmp_path, capsys):
    out, whole = tmp_path / "launched", tmp_path / "whole"
    flags = ["--output_dir", str(out), "--resolution", "64", "--nframes", "6", "--neg_types", "blur", "--seed", "3"]
    proc = subprocess.run([sys.executable, "-m", "regdpo", "launch", "--cpu_workers", "2", "--no_progress", "--",
                           *flags], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr
    assert "GPU" not in proc.stdout + proc.stderr
    summary = [line for line in proc.stdout.splitlines() if line.startswith("CPU worker ")]
    assert [line.split(":")[0] for line in summary] == ["CPU worker 0", "CPU worker 1"]
    assert all(": exit 0, log " in line for line in summary)
    for k in (0, 1):
        header = (out / fmt.LOGS_DIR / f"worker-{k}.log").read_text().splitlines()[0]
        assert header.startswith(f"# regdpo launch CPU worker {k}: CUDA_VISIBLE_DEVICES='' ") and \
            f"--num_shards 2 --shard_index {k}" in header
    assert regdpo_main(["generate", *[f if f != str(out) else str(whole) for f in flags], "--no_progress"]) == 0
    from helpers import dataset_contents

    launched = {k: v for k, v in dataset_contents(out).items() if not k.startswith(fmt.LOGS_DIR)}
    assert launched == dataset_contents(whole)  # the bytes of one process


@pytest.mark.parametrize("argv, message", [
    (["launch", "--gpus", "0", "--cpu_workers", "2", "--"], "not allowed with argument"),
    (["launch", "--"], "one of the arguments --gpus --cpu_workers is required"),
    (["launch", "--cpu_workers", "0", "--"], "--cpu_workers"),
])
def test_launch_needs_gpus_or_cpu_workers(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        regdpo_main(argv)
    assert exc.value.code == 2 and message in one_line(capsys.readouterr().err, "regdpo launch: error:")


def test_cpu_workers_refuse_a_gpu_device(tmp_path, capsys):
    assert regdpo_main(["launch", "--cpu_workers", "2", "--", "--output_dir", str(tmp_path / "o"), "--device",
                        "cuda"]) == 2
    assert "--cpu_workers run on the CPU" in one_line(capsys.readouterr().err, "regdpo launch: error:")
    assert not (tmp_path / "o").exists()
