"""The fault campaign (bench/fault_campaign.py) in a short form, and the faults it found, as regressions."""

import json
import os
import subprocess
import sys

import pytest

from helpers import DATA, REPO


def interrupting_site(tmp_path, module):
    """A ``sitecustomize`` that raises KeyboardInterrupt when ``module`` is first imported: Ctrl-C arriving
    while the command's modules load, before its run starts (the campaign's SIGINTs at 0.05-0.3 s)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, _Interrupt())\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO / "src")])}


@pytest.mark.parametrize("command", [
    ["generate_dpo_negatives.py", "--output_dir", "out", "--no_progress"],
    ["-m", "regdpo", "manifest", "out"],
    ["-m", "regdpo", "generate", "--output_dir", "out", "--no_progress"],
])
def test_ctrl_c_while_the_modules_load_is_one_line_exit_130(tmp_path, command):
    (tmp_path / "out").mkdir()
    proc = subprocess.run([sys.executable, *[str(REPO / c) if c.endswith(".py") else c for c in command]],
                          cwd=tmp_path, env=interrupting_site(tmp_path, "numpy"), capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 130 and proc.stderr.strip().endswith("interrupted"), (proc.returncode, proc.stderr)
    assert sorted(os.listdir(tmp_path / "out")) == []


def wrapping_site(tmp_path, module):
    """A ``sitecustomize`` that, when ``module`` is first imported, receives a real SIGINT and turns it into an
    ``ImportError`` that keeps no trace of it (numpy's C-extension import does so: "PyCapsule_Import could not
    import module datetime", the campaign's traceback of issue 18)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, signal, sys, time\n"
        "class _Wrap:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            try:\n"
        "                os.kill(os.getpid(), signal.SIGINT)\n"
        "                time.sleep(5)\n"
        "            except KeyboardInterrupt:\n"
        "                pass\n"
        "            else:\n"
        "                return None\n"
        "            raise ImportError('PyCapsule_Import could not import module \"datetime\"')\n"
        "sys.meta_path.insert(0, _Wrap())\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO / "src")])}


@pytest.mark.parametrize("command", [
    ["generate_dpo_negatives.py", "--output_dir", "out", "--no_progress"],
    ["-m", "regdpo", "manifest", "out"],
])
def test_ctrl_c_that_a_library_import_turns_into_another_error_is_one_line_exit_130(tmp_path, command):
    (tmp_path / "out").mkdir()
    proc = subprocess.run([sys.executable, *[str(REPO / c) if c.endswith(".py") else c for c in command]],
                          cwd=tmp_path, env=wrapping_site(tmp_path, "numpy"), capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 130 and proc.stderr.strip().endswith("interrupted"), (proc.returncode, proc.stderr)
    assert sorted(os.listdir(tmp_path / "out")) == []


def test_ctrl_c_while_the_generator_sets_up_is_one_line_exit_130(tmp_path, monkeypatch, capsys):
    from regdpo.generate import cli as generate_cli, sources

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sources, "discover_sources", interrupted)
    assert generate_cli.main(["--output_dir", str(tmp_path / "out"), "--no_progress"]) == 130
    assert capsys.readouterr().err.strip() == "generate_dpo_negatives.py: interrupted"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real-video fixtures not found at {DATA}")
def test_a_short_fault_campaign_loses_nothing_and_writes_nothing_outside(tmp_path):
    """kill -9 / SIGTERM / SIGINT of generate and --overwrite and regdpo manifest, a full tmpfs (when root can
    mount one; skipped otherwise), a planted link, a traversal name: each recovered and equal to the reference."""
    report = tmp_path / "campaign.json"
    kinds = ["generate", "overwrite", "manifest_kill", "disk_tmpfs", "symlink", "traversal",
             "special_source", "special_dataset", "manifest_startup"]  # the last three: issue 18
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "fault_campaign.py"), "--quick", "--seed", "3",
                           "--kinds", *kinds, "--json", str(report), "--workdir", str(tmp_path / "work"),
                           "--data", str(DATA)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert report.is_file(), proc.stdout + proc.stderr
    summary = json.loads(report.read_text())
    total = summary["total"]
    failed = [c for c in summary["cases"] if not c["survived"] and not c["skipped"]]
    assert proc.returncode == 0 and not failed, (proc.stdout[-3000:], failed)
    assert total["cases"] + total["skipped"] == len(kinds) and total["cases"] >= len(kinds) - 1
    assert total["lost"] == total["written_outside"] == total["tracebacks"] == 0
    assert sorted(os.listdir(tmp_path / "work")) == ["ref", "special_root"]  # survived cases' folders are removed


@pytest.mark.parametrize("command", ["manifest", "audit"])
def test_a_full_disk_while_a_command_writes_its_report_is_one_line_naming_the_file(tmp_path, command):
    """Fault campaign: ENOSPC / EFBIG in the write of manifest.json or audit.json carried no file name, so
    `regdpo manifest` and `regdpo audit` on a full disk ended with a traceback."""
    import resource

    from helpers import write_pair_dataset

    root = write_pair_dataset(tmp_path / "data")
    report = "manifest.json" if command == "manifest" else "audit.json"
    (root / report).unlink(missing_ok=True)

    def small_files_only():  # a file-size limit (`ulimit -f`): every write past 200 bytes fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    proc = subprocess.run([sys.executable, "-m", "regdpo", command, str(root)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True,
                          timeout=300, preexec_fn=small_files_only)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"regdpo {command}: error: {root / report}: File too large"), proc.stderr
    assert not [p for p in root.rglob("*.tmp*")] and not (root / report).exists()


def test_an_out_of_space_error_naming_no_file_is_one_line(monkeypatch, capsys, tmp_path):
    import errno

    from regdpo import manifest_cli
    from regdpo.cli import main

    def full(args):  # e.g. a library writing a file itself (Pillow, ffmpeg's pipe)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(manifest_cli, "run", full)
    assert main(["manifest", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("regdpo manifest: error: out of disk space") and "Traceback" not in err


@pytest.mark.parametrize("flags, written", [([], "clip_a.mp4"), (["--gif", "--no-mp4"], "clip_a.gif")])
def test_preview_on_a_full_disk_is_one_line_naming_the_file_exit_1(tmp_path, flags, written):
    """Issue 18: ffmpeg killed by the file-size limit (or out of space) was an OSError naming no errno: a
    traceback. Now one line naming the preview file, exit 1, no temporary left."""
    import resource

    from helpers import write_pair_dataset

    root = write_pair_dataset(tmp_path / "data")
    out = tmp_path / "prev"

    def small_files_only():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    proc = subprocess.run([sys.executable, "-m", "regdpo", "preview", str(root), "--out", str(out), *flags],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, capture_output=True,
                          text=True, timeout=300, preexec_fn=small_files_only)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"regdpo preview: error: {out / written}: File too large", proc.stderr
    assert os.listdir(out) == []


@pytest.mark.parametrize("status, stderr, errno_name", [
    (-25, "", "EFBIG"), (1, "Error writing trailer: No space left on device", "ENOSPC"),
    (1, "av_interleaved_write_frame(): Disk quota exceeded", "EDQUOT"), (1, "Unknown encoder", "EIO")])
def test_an_ffmpeg_failure_is_an_os_error_naming_the_file(tmp_path, status, stderr, errno_name):
    import errno

    from regdpo.audit.media import ffmpeg_error
    from regdpo.errors import out_of_space

    exc = ffmpeg_error(tmp_path / "v.mp4", status, stderr)
    assert exc.errno == getattr(errno, errno_name) and exc.filename == str(tmp_path / "v.mp4")
    assert bool(out_of_space(exc)) == (errno_name != "EIO")


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real-video fixtures not found at {DATA}")
def test_the_hostile_json_class_of_the_campaign_finds_no_traceback(tmp_path):
    """Issue 18: every JSON file kind of a dataset (meta.json, a failure record, the manifests, audit.json,
    selection.json, score.json) made hostile under a command that reads it (--quick: one case per file kind):
    no traceback, verify names the file, each recovered and equal to the reference."""
    report = tmp_path / "campaign.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "fault_campaign.py"), "--quick", "--seed", "4",
                           "--kinds", "hostile_json", "--json", str(report), "--workdir", str(tmp_path / "work"),
                           "--data", str(DATA)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert report.is_file(), proc.stdout + proc.stderr
    summary = json.loads(report.read_text())
    failed = [c for c in summary["cases"] if not c["survived"]]
    assert proc.returncode == 0 and not failed, (proc.stdout[-3000:], failed)
    assert sorted(c["params"]["file"] for c in summary["cases"]) == sorted(
        ["audit_json", "failed_record", "manifest_json", "manifest_selected", "meta_json", "score_json", "selection"])
    assert summary["total"]["tracebacks"] == summary["total"]["lost"] == summary["total"]["written_outside"] == 0
