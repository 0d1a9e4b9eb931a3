"""Bad input reaches the user as one line naming the file or flag: exit 2 for a usage error (a flag or
argument is wrong), 1 for a data error (a file's content, a frame, the disk), never a traceback."""

import pytest

from regdpo.cli import main as regdpo_main
from regdpo.errors import DiskFull, FormatError, FrameReadError, RegdpoError, UsageError, exit_code
from regdpo.generate.cli import main as script_main
from helpers import write_pair_dataset


def one_error_line(err: str, prefix: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]


def test_exit_code_rule():
    assert exit_code(UsageError("--x")) == 2
    for data_error in (FormatError("f"), FrameReadError("f"), DiskFull("d"), RegdpoError("r")):
        assert exit_code(data_error) == 1


def test_data_error_exits_1_usage_error_exits_2(tmp_path, capsys):
    root = write_pair_dataset(tmp_path / "d")
    (root / "manifest.json").write_text("{not json")
    assert regdpo_main(["audit", str(root), "--no-progress", "--no-html"]) == 1
    assert "manifest.json" in one_error_line(capsys.readouterr().err, "regdpo audit: error: ")
    assert regdpo_main(["audit", str(root), "--workers", "0"]) == 2
    assert "--workers" in one_error_line(capsys.readouterr().err, "regdpo audit: error: ")
    assert regdpo_main(["audit", str(tmp_path / "missing")]) == 2  # a path argument that names nothing


@pytest.mark.parametrize("entry", ["regdpo", "script"])
def test_non_utf8_captions_is_a_data_error_naming_the_file(tmp_path, capsys, entry):
    captions = tmp_path / "caps.csv"
    captions.write_bytes("davis_tennis,un caf\u00e9\n".encode("latin-1"))
    flags = ["--captions", str(captions), "--output_dir", str(tmp_path / "o"), "--nframes", "8",
             "--resolution", "64", "--no_progress"]
    if entry == "regdpo":
        assert regdpo_main(["generate", *flags]) == 1
        line = one_error_line(capsys.readouterr().err, "regdpo generate: error: ")
    else:
        assert script_main(flags) == 1
        line = one_error_line(capsys.readouterr().err, "generate_dpo_negatives.py: error: ")
    assert "--captions" in line and str(captions) in line and "UTF-8" in line
    assert not (tmp_path / "o").exists()
    assert script_main(["--max_videos", "0", "--output_dir", str(tmp_path / "o")]) == 2  # usage: 2 here too


REFUSED_NUMBERS = [  # (command line, flag): nan, inf and absurd values, refused by the flag's type
    (["preview", "ROOT", "--fps", "nan"], "--fps"),
    (["preview", "ROOT", "--fps", "inf"], "--fps"),
    (["preview", "ROOT", "--scale", "1e12"], "--scale"),
    (["preview", "ROOT", "--scale", "-inf"], "--scale"),
    (["preview", "ROOT", "--sheet-height", "100000000"], "--sheet-height"),
    (["preview", "ROOT", "--crf", "99"], "--crf"),
    (["generate", "--resolution", "1e12"], "--resolution"),
    (["generate", "--resolution", "1000000000000"], "--resolution"),
    (["generate", "--mask_dilation", "1000000000000"], "--mask_dilation"),
    (["generate", "--nframes", "1000000000"], "--nframes"),
    (["generate", "--fps", "nan"], "--fps"),
    (["generate", "--assumed_fps", "inf"], "--assumed_fps"),
    (["generate", "--max_upscale", "inf"], "--max_upscale"),
    (["generate", "--blur_strength", "nan"], "--blur_strength"),
    (["generate", "--strengths", "0.5", "nan"], "--strengths"),
    (["generate", "--flicker_segments", "1000000000"], "--flicker_segments"),
    (["generate", "--max_attempts", "1000000000"], "--max_attempts"),
    (["generate", "--masks_per_clip", "1000000000"], "--masks_per_clip"),
    (["generate", "--mask_area", "0.1", "nan"], "--mask_area"),
    (["generate", "--mask_margin", "inf"], "--mask_margin"),
    (["generate", "--propainter_resize_ratio", "nan"], "--propainter_resize_ratio"),
    (["generate", "--propainter_mask_dilation", "1000000000"], "--propainter_mask_dilation"),
    (["audit", "ROOT", "--band", "nan", "0.5"], "--band"),
    (["audit", "ROOT", "--band", "0.2", "7"], "--band"),
    (["audit", "ROOT", "--blur-clear-db", "inf"], "--blur-clear-db"),
    (["audit", "ROOT", "--hallucination-weak-psnr", "nan"], "--hallucination-weak-psnr"),
    (["audit", "ROOT", "--lowpass-sigma-frac", "1e12"], "--lowpass-sigma-frac"),
    (["audit", "ROOT", "--erode-px", "1000000000"], "--erode-px"),
    (["audit", "ROOT", "--workers", "1000000000"], "--workers"),
    (["select", "ROOT", "--target", "nan"], "--target"),
    (["launch", "--stop_timeout", "nan", "--", "--output_dir", "ROOT"], "--stop_timeout"),
]


@pytest.mark.parametrize("argv, flag", REFUSED_NUMBERS, ids=[" ".join(a[:1] + a[2:]) for a, _ in REFUSED_NUMBERS])
def test_nan_inf_and_absurd_numbers_are_refused_naming_the_flag(tmp_path, capsys, argv, flag):
    argv = [str(tmp_path) if a == "ROOT" else a for a in argv]
    if argv[0] == "generate":
        argv += ["--output_dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as refused:
        regdpo_main(argv)
    err = capsys.readouterr().err
    assert refused.value.code == 2 and f"error: argument {flag}" in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_script_refuses_the_same_numbers(tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        script_main(["--resolution", "1000000000000", "--output_dir", str(tmp_path / "o")])
    assert refused.value.code == 2 and "argument --resolution" in capsys.readouterr().err


def test_number_types():
    import argparse

    from regdpo.cli_types import integer, real

    assert real(0, 1)("0.5") == 0.5 and real()("-1e300") == -1e300 and integer(0, 3)("3") == 3
    for bad, parse in (("nan", real()), ("inf", real()), ("0", real(0, 1, lo_open=True)), ("1.5", real(0, 1)),
                       ("x", real()), ("1e3", integer()), ("2.5", integer()), ("-1", integer(0)), ("9", integer(0, 8))):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(bad)):
            parse(bad)


def test_davis_split_without_davis_root_is_a_usage_error(tmp_path, capsys):
    assert regdpo_main(["generate", "--davis_split", "val", "--output_dir", str(tmp_path / "o")]) == 2
    line = one_error_line(capsys.readouterr().err, "regdpo generate: error: ")
    assert "--davis_split" in line and "--davis_root" in line
    assert not (tmp_path / "o").exists()


def test_resume_with_another_prompt_is_refused_naming_the_flag(tmp_path, capsys):
    out = tmp_path / "o"
    base = ["generate", "--output_dir", str(out), "--max_videos", "1", "--nframes", "6", "--resolution", "64",
            "--neg_types", "blur", "--no_progress", "--prompt", "a rabbit"]
    assert regdpo_main(base) == 0
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    capsys.readouterr()
    assert regdpo_main(base[:-1] + ["a dog", "--resume"]) == 2
    line = one_error_line(capsys.readouterr().err, "regdpo generate: error: ")
    assert "--prompt 'a rabbit'" in line and "--prompt 'a dog'" in line
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert regdpo_main(base + ["--resume"]) == 0  # the same prompt resumes
    assert "1 already done" in capsys.readouterr().out


def test_an_output_path_below_a_file_is_one_line_naming_it(tmp_path, capsys):
    root = write_pair_dataset(tmp_path / "d")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    below = blocker / "out"
    for argv in (["generate", "--output_dir", str(below), "--max_videos", "1", "--nframes", "6", "--resolution", "64",
                  "--no_progress"],
                 ["audit", str(root), "--output-dir", str(below), "--no-progress", "--no-html"],
                 ["preview", str(root), "--output-dir", str(below), "--no-mp4"],
                 ["manifest", str(below)]):
        assert regdpo_main(argv) == 1, argv  # the file system refused: a data error
        line = one_error_line(capsys.readouterr().err, f"regdpo {argv[0]}: error: ")
        assert str(below) in line, line
    assert blocker.read_text() == "x"


def test_an_os_error_on_a_path_is_one_line(tmp_path, capsys, monkeypatch):
    """A read-only or unwritable file system (not reproducible as root): any OSError that names a path."""
    import errno

    from regdpo.audit import preview

    def read_only(args):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "ro" / "x.png"))

    monkeypatch.setattr(preview, "run", read_only)
    assert regdpo_main(["preview", str(tmp_path)]) == 1
    line = one_error_line(capsys.readouterr().err, "regdpo preview: error: ")
    assert line.endswith(f"{tmp_path / 'ro' / 'x.png'}: Read-only file system")
