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
