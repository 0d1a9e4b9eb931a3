"""Progress display and CLI messages: bar on a terminal, plain lines in logs, logging, usage, plurals."""

import io
import logging

import pytest

from regdpo.cli import main as regdpo_main
from regdpo.progress import Progress, plural


def test_plural():
    assert [plural(n, "video") for n in (0, 1, 2)] == ["0 videos", "1 video", "2 videos"]


def test_plain_lines_when_not_on_a_terminal():
    out = io.StringIO()
    bar = Progress(3, "audit", "video", file=out, interval_s=0)
    for name in ("a", "b", "c"):
        bar.set_postfix_str(name)
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "audit: 0/3 videos (0 %), 0.0 s"
    assert lines[1].startswith("audit: 1/3 videos (33 %)") and "left, at a" in lines[1]
    assert lines[-1].startswith("audit: 3/3 videos (100 %)") and lines[-1].endswith("(done)")
    assert len(lines) == 4  # start, 1/3, 2/3, end: the last update is the end line only


def test_plain_lines_are_periodic():
    out = io.StringIO()
    for _ in Progress(1000, "generate", file=out, interval_s=3600).wrap(range(1000)):
        pass
    assert len(out.getvalue().splitlines()) == 2  # start and end only within the interval


def test_a_bar_on_a_terminal_and_nothing_when_disabled():
    out = io.StringIO()
    list(Progress(2, "preview", file=out, terminal=True).wrap([1, 2]))
    assert "\r" in out.getvalue() and "preview" in out.getvalue()
    quiet = io.StringIO()
    list(Progress(2, "preview", file=quiet, enabled=False).wrap([1, 2]))
    assert quiet.getvalue() == ""


def test_generate_audit_preview_report_progress_in_a_log(tmp_path, capsys, caplog):
    out = tmp_path / "dpo_data"
    with caplog.at_level(logging.INFO, logger="regdpo"):
        assert regdpo_main(["generate", "--output_dir", str(out), "--nframes", "6", "--resolution", "64",
                            "--max_videos", "1", "--neg_types", "blur"]) == 0
    captured = capsys.readouterr()
    assert "generate: 0/1 video (0 %)" in captured.err and "generate: 1/1 video (100 %)" in captured.err
    assert "\r" not in captured.err
    assert "1 video -> " in captured.out and "(1 video, 1 pair)" in captured.out
    assert regdpo_main(["audit", str(out), "--no-html"]) in (0, 1)
    captured = capsys.readouterr()
    assert "audit: 1/1 video (100 %)" in captured.err and "audited 1 video, 1 negative" in captured.out
    assert regdpo_main(["preview", str(out), "--no-mp4"]) == 0
    assert "preview: 1/1 video (100 %)" in capsys.readouterr().err


def test_library_messages_go_through_logging(tmp_path, caplog):
    (tmp_path / "tiny").mkdir()
    import cv2
    import numpy as np

    for i in range(3):  # too short for --nframes 6: skipped, and said so through logging
        cv2.imwrite(str(tmp_path / "tiny" / f"{i:05d}.png"), np.zeros((64, 64, 3), np.uint8))
    with caplog.at_level(logging.INFO, logger="regdpo"):
        assert regdpo_main(["generate", "--no_progress", "--video_root", str(tmp_path), "--output_dir",
                            str(tmp_path / "o"), "--nframes", "6", "--resolution", "64"]) == 0
    assert any(r.name == "regdpo.generate" and "skipped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("command", ["generate", "audit", "preview"])
def test_a_bad_flag_names_the_subcommand_in_one_line(command, capsys):
    with pytest.raises(SystemExit) as exc:
        regdpo_main([command, "--bogus"] + (["x"] if command != "generate" else []))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"regdpo {command}: error: unrecognized arguments: --bogus") and err.count("\n") == 1
    assert "usage:" not in err  # one line, not the usage block (issue 18 item 11)
