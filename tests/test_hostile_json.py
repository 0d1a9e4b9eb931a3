"""Hostile JSON (issue 18, items 13 and 14): every JSON file a command reads goes through one validating loader
(``regdpo.json_io``: size, nesting, huge numbers, types and ranges of the fields each reader uses) that names
the file in one line; one bad video's record fails that video alone (``manifest`` passes over it, ``verify``
reports it and goes on, ``generate --resume`` records it and makes the others); ``verify`` refuses what any
reader would refuse."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from regdpo import format as fmt
from regdpo import json_io
from regdpo.cli import main as regdpo_main
from regdpo.errors import FormatError, InputUnreadable, JSONFileError

SMALL = ["--nframes", "6", "--resolution", "64", "--neg_types", "blur", "--seed", "1", "--no_progress"]
HUGE_INT = "9" * 5000


def run(argv, capsys) -> tuple[int, str, str]:
    """``regdpo ARGV`` in this process: (status, stdout, stderr); never a traceback."""
    try:
        rc = regdpo_main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        rc = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def error_line(err: str, command: str, path: Path) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"regdpo {command}: error: "), err
    assert str(path) in lines[0], lines[0]
    assert len(lines[0]) < 600, lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The embedded samples (3 videos), audited and selected: every file kind a command reads."""
    root = tmp_path_factory.mktemp("ref") / "dpo"
    assert regdpo_main(["generate", "--output_dir", str(root), *SMALL]) == 0
    assert regdpo_main(["audit", str(root), "--no-progress", "--no-html"]) == 0
    assert regdpo_main(["select", str(root)]) in (0, 1)
    assert (root / fmt.SELECTION_FILE).is_file()
    return root


@pytest.fixture
def data(reference, tmp_path):
    out = tmp_path / "dpo"
    shutil.copytree(reference, out)
    return out


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (label, how the text of a file is made hostile): generic to every kind
GENERIC = {
    "deep-100000": lambda text: nested(100_000),
    "deep-40": lambda text: '{"a": ' + nested(40) + "}",
    "huge-int": lambda text: text.replace('"format_version": 2', f'"format_version": {HUGE_INT}', 1)
    if '"format_version": 2' in text else '{"items": ' + HUGE_INT + "}",
    "nan": lambda text: '{"format_version": NaN}',
    "float-overflow": lambda text: '{"format_version": 1e999}',
    "not-utf8": lambda text: b"\xff\xfe{}",
    "truncated": lambda text: text[: len(text) // 2],
    "not-an-object": lambda text: "[1, 2, 3]",
}


def set_field(path: Path, dotted: str, value) -> None:
    """Set ``a.b.0.c`` in the JSON file ``path`` to ``value``."""
    data = json.loads(path.read_text())
    keys = dotted.split(".")
    target = data
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last = keys[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    path.write_text(json.dumps(data))


def write_hostile(path: Path, how) -> None:
    made = how(path.read_text())
    path.write_bytes(made if isinstance(made, bytes) else made.encode())


# --------------------------------------------------------------------------- the loader


def test_the_loader_names_the_file_and_what_is_wrong(tmp_path):
    cases = {
        nested(100_000): "nested deeper than 32",
        nested(33): "nested deeper than 32",
        f'{{"a": {HUGE_INT}}}': "integer too large",
        '{"a": NaN}': "NaN is not a JSON number",
        '{"a": -Infinity}': "-Infinity is not a JSON number",
        '{"a": 1e999}': "too large for a float",
        "{": "not valid JSON",
    }
    for k, (text, why) in enumerate(cases.items()):
        path = tmp_path / f"f{k}.json"
        path.write_text(text)
        with pytest.raises(JSONFileError, match=why) as exc:
            json_io.read_json(path)
        assert str(exc.value).startswith(f"{path}: ") and "\n" not in str(exc.value)
    ok = tmp_path / "ok.json"
    ok.write_text('{"a": [[1]]}')
    assert json_io.read_json(ok) == {"a": [[1]]}
    big = tmp_path / "big.json"
    big.write_text('{"a": "' + "x" * 2000 + '"}')
    with pytest.raises(JSONFileError, match="2009 bytes, more than the 1000"):
        json_io.read_json(big, max_bytes=1000)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # never waited on
    with pytest.raises(InputUnreadable, match="named pipe"):  # regdpo.safe_read's refusal, never a blocking open
        json_io.read_json(fifo)


def test_fields_check_type_and_range():
    f = json_io.Fields({"n": "8", "s": None, "x": 3, "b": True}, "m.json: videos[0]")
    with pytest.raises(JSONFileError, match=r"^m.json: videos\[0\]: n: '8' is not an integer in 1..9$"):
        f.integer("n", 1, 9)
    with pytest.raises(JSONFileError, match="s: None is not a string"):
        f.string("s")
    with pytest.raises(JSONFileError, match="b: True is not an integer"):
        f.integer("b", 0, 9)
    with pytest.raises(JSONFileError, match="missing"):
        f.string("absent")
    assert f.integer("x", 0, 9) == 3 and f.string("absent", "d") == "d" and f.string("s", nullable=True) is None


# --------------------------------------------------------------------------- meta.json: one bad video alone


META_WRONG = {
    "num_frames-string": ("num_frames", "6"),
    "source-null": ("source", None),
    "source-id-list": ("source.id", [1, 2]),
    "prompt-number": ("prompt", 5),
    "mask_index-string": ("mask_index", "x"),
    "seed-float": ("seed", 1.5),
    "generator-list": ("generator", []),
    "backend_settings-string": ("generator.backend_settings", "x"),
    "timings-string": ("timings.decode", "slow"),
    "negatives-number": ("negatives.0", 5),
    "height-huge": ("height", 10**30),
}
META_CASES = [(k, "generic") for k in GENERIC] + [(k, "field") for k in META_WRONG]


@pytest.mark.parametrize("case, kind", META_CASES, ids=[c for c, _ in META_CASES])
def test_a_hostile_meta_json_fails_its_video_alone(data, capsys, case, kind):
    bad, *good = fmt.complete_videos(data)
    meta = data / bad / fmt.META_FILE
    if kind == "generic":
        write_hostile(meta, GENERIC[case])
    else:
        set_field(meta, *META_WRONG[case])
    with pytest.raises(FormatError) as exc:
        fmt.read_video_meta(data, bad)
    assert str(meta) in str(exc.value) and "\n" not in str(exc.value)

    rc, out, err = run(["manifest", data], capsys)  # passes over it, as the docs say
    assert rc == 0
    manifest = fmt.load_manifest(data)
    assert [v.name for v in manifest.videos] == good
    assert manifest.failed[0]["name"] == bad and str(meta) in manifest.failed[0]["reason"]

    rc, out, err = run(["verify", data], capsys)  # reports it, verifies the others
    assert rc == 1
    assert f"{bad}: {meta}: " in out and "3 videos verified, 2 ok, 1 with problems" in out

    rc, out, err = run(["generate", "--output_dir", data, *SMALL, "--resume"], capsys)
    assert rc == 1 and f"FAILED {bad}: " in err and "2 already done" in out  # named, never replaced

    rc, out, err = run(["audit", data, "--no-progress", "--no-html", "--output-dir", data.parent / "a"], capsys)
    assert rc in (0, 1)  # the manifest no longer lists it; the others audited


def test_audit_without_a_manifest_passes_over_a_hostile_meta_json(data, capsys):
    bad, *good = fmt.complete_videos(data)
    write_hostile(data / bad / fmt.META_FILE, GENERIC["deep-100000"])
    (data / fmt.MANIFEST_FILE).unlink()
    rc, out, err = run(["audit", data, "--no-progress", "--no-html"], capsys)
    assert rc == 0 and f"video {bad} not audited" in err
    assert "audited 2 videos" in out


# --------------------------------------------------------------------------- _failed records


FAILED_WRONG = {"attempts-string": ("attempts", "abc"), "attempts-huge": ("attempts", 10**40),
                "status-number": ("status", 5), "name-null": ("name", None), "reason-list": ("reason", [1])}
FAILED_CASES = [(k, "generic") for k in GENERIC] + [(k, "field") for k in FAILED_WRONG]


@pytest.mark.parametrize("case, kind", FAILED_CASES, ids=[c for c, _ in FAILED_CASES])
def test_a_hostile_failure_record_never_stops_a_run(data, capsys, case, kind):
    from regdpo.writer import failure_file_name, record_failure

    redo = fmt.complete_videos(data)[0]
    shutil.rmtree(data / redo)
    record_failure(data, redo, "failed", "RuntimeError: once", attempts=1)
    path = data / fmt.FAILED_DIR / failure_file_name(redo)
    if kind == "generic":
        write_hostile(path, GENERIC[case])
    else:
        set_field(path, *FAILED_WRONG[case])

    rc, out, err = run(["manifest", data], capsys)
    assert rc == 0 and len(fmt.load_manifest(data).videos) == 2
    rc, out, err = run(["verify", data], capsys)
    assert rc == 1 and str(path) in out
    rc, out, err = run(["generate", "--output_dir", data, *SMALL, "--resume"], capsys)
    assert rc == 0 and "1 written, 2 already done" in out
    assert f"warning: {path}: " in err and f"counting attempts of {redo} from 1" in err
    assert not path.exists() and redo in fmt.complete_videos(data)


# --------------------------------------------------------------------------- manifests


MANIFEST_WRONG = {
    "prompt-null": ("videos.0.prompt", None),
    "source_clip-number": ("videos.0.source_clip", 5),
    "name-null": ("videos.0.name", None),
    "failed-number": ("failed", [1]),
    "videos-object": ("videos", {"a": 1}),
}
MANIFEST_CASES = [(k, "generic") for k in GENERIC] + [(k, "field") for k in MANIFEST_WRONG]


@pytest.mark.parametrize("case, kind", MANIFEST_CASES, ids=[c for c, _ in MANIFEST_CASES])
def test_a_hostile_manifest_is_one_line_in_every_reader_and_refused_by_verify(data, capsys, tmp_path, case, kind):
    from regdpo.dataset import DPODataset
    from helpers import FakeTokenizer

    path = data / fmt.MANIFEST_FILE
    if kind == "generic":
        write_hostile(path, GENERIC[case])
    else:
        set_field(path, *MANIFEST_WRONG[case])
    rc, out, err = run(["verify", data], capsys)
    assert rc == 1 and f"-: {path}: {path}" in out
    for argv, command in ((["audit", data, "--no-progress", "--no-html", "--output-dir", tmp_path / "a"], "audit"),
                          (["select", data, "--output", tmp_path / "s.json", "--summary", tmp_path / "r.json"],
                           "select")):
        rc, out, err = run(argv, capsys)
        assert rc == 1
        error_line(err, command, path)
    import argparse

    args = argparse.Namespace(dpo_data_root=str(data), nframes=4, resolution=64, neg_types=None)
    with pytest.raises(FormatError, match=str(path)):
        DPODataset(args, FakeTokenizer())
    rc, out, err = run(["manifest", data], capsys)  # rebuilt from the videos' records
    assert rc == 0 and len(fmt.load_manifest(data).videos) == 3


ENTRY_WRONG = {"num_frames-string": ("videos.0.num_frames", "6"), "num_frames-float": ("videos.0.num_frames", 6.0),
               "width-huge": ("videos.0.width", 10**30), "height-null": ("videos.0.height", None)}


@pytest.mark.parametrize("case", ENTRY_WRONG)
def test_an_entry_of_wrong_sizes_is_refused_by_verify_and_dropped_by_skip_invalid(data, capsys, tmp_path, case):
    """Sizes are checked per entry (``DPODataset(skip_invalid)`` drops that entry alone); ``verify`` refuses
    what the dataset reader would refuse, naming the manifest and the field."""
    from regdpo.dataset import DPODataset
    from helpers import FakeTokenizer
    import argparse

    path = data / fmt.MANIFEST_FILE
    field, value = ENTRY_WRONG[case]
    set_field(path, field, value)
    name = json.loads(path.read_text())["videos"][0]["name"]
    rc, out, err = run(["verify", data], capsys)
    assert rc == 1 and f"{name}: {path}: {path}: video {name}: {field.split('.')[-1]} " in out
    args = argparse.Namespace(dpo_data_root=str(data), nframes=4, resolution=64, neg_types=None)
    with pytest.raises(FormatError, match=field.split(".")[-1]):
        DPODataset(args, FakeTokenizer())
    args.skip_invalid = True
    with pytest.warns(UserWarning, match=name):
        assert {p.video for p in DPODataset(args, FakeTokenizer()).pairs} == set(fmt.complete_videos(data)) - {name}
    rc, out, err = run(["audit", data, "--no-progress", "--no-html", "--output-dir", tmp_path / "a"], capsys)
    assert rc == 0 if case == "num_frames-float" else rc == 1 and "manifest_mismatch" in out  # 6.0 == 6 there


def test_verify_refuses_a_manifest_that_disagrees_with_the_videos(data, capsys):
    set_field(data / fmt.MANIFEST_FILE, "videos.0.num_frames", 5)
    rc, out, err = run(["verify", data], capsys)
    assert rc == 1 and "disagrees with" in out and "5 frames" in out


# --------------------------------------------------------------------------- audit, selection, score


AUDIT_WRONG = {"quality_score-string": ("items.0.quality_score", "x"), "items-number": ("items", 5),
               "item-number": ("items.0", 5), "video-null": ("items.0.video", None),
               "neg_type-unknown": ("items.0.neg_type", "bogus"), "band-word": ("band", "wide"),
               "impure-string": ("items.0.impure", "blur")}
SELECTION_WRONG = {"considered-null": ("considered", None), "pick-video-number": ("picks.0.video", 5),
                   "picks-object": ("picks", {}), "pick-number": ("picks.0", 3)}
SCORE_WRONG = {"ref_margin-string": ("items.0.ref_margin", "x"), "video-list": ("items.0.video", [1]),
               "items-null": ("items", None)}
OTHER_CASES = ([("audit", k, "generic") for k in GENERIC] + [("audit", k, "field") for k in AUDIT_WRONG]
               + [("selection", k, "generic") for k in GENERIC] + [("selection", k, "field") for k in SELECTION_WRONG]
               + [("score", k, "generic") for k in GENERIC] + [("score", k, "field") for k in SCORE_WRONG])


@pytest.mark.parametrize("what, case, kind", OTHER_CASES, ids=[f"{w}-{c}" for w, c, _ in OTHER_CASES])
def test_hostile_audit_selection_and_score_files(data, capsys, tmp_path, what, case, kind):
    if what == "score":
        path = data / "score.json"
        path.write_text(json.dumps({"items": [{"video": fmt.complete_videos(data)[0], "stream": "blur",
                                               "ref_margin": 0.5}]}))
    else:
        path = data / (fmt.AUDIT_JSON if what == "audit" else fmt.SELECTION_FILE)
    table = {"audit": AUDIT_WRONG, "selection": SELECTION_WRONG, "score": SCORE_WRONG}[what]
    if kind == "generic":
        write_hostile(path, GENERIC[case])
    else:
        set_field(path, *table[case])
    argv, command = ((["prune", data, "--dry-run"], "prune") if what == "selection" else
                     (["select", data, "--output", tmp_path / "s.json", "--summary", tmp_path / "r.json"], "select"))
    rc, out, err = run(argv, capsys)
    assert rc == 1
    error_line(err, command, path)
    rc, out, err = run(["verify", data], capsys)
    assert rc == 1 and f"-: {path}: {path}" in out


# --------------------------------------------------------------------------- a packed dataset's index


@pytest.mark.parametrize("case", ["deep-100000", "huge-int", "nan", "not-utf8"])
def test_a_hostile_packed_index_is_one_line(reference, tmp_path, capsys, case):
    packed = tmp_path / "packed"
    assert regdpo_main(["pack", str(reference), str(packed), "--no_progress"]) == 0
    capsys.readouterr()
    index = packed / "index.json"
    write_hostile(index, GENERIC[case])
    for argv, command in ((["verify", packed], "verify"), (["unpack", packed, tmp_path / "back", "--no_progress"],
                                                           "unpack")):
        rc, out, err = run(argv, capsys)
        assert rc == 1 and str(index) in out + err, (out, err)
