"""`regdpo audit` on synthetic datasets written with the real writer: verdicts, invariant
failures naming the video, audit.json / audit.html, filtered manifest, workers, exit codes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.audit import synthetic as S
from regdpo.cli import main
from helpers import DATA, FakeTokenizer

T, H, W = 12, 112, 192


def _clips():
    if (DATA / "DAVIS").is_dir():
        return S.davis_clips(DATA, T, H, W)
    return {"texture-a": S.textured_clip(T, H, W, seed=1), "texture-b": S.textured_clip(T, H, W, seed=2, speed=0.5)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit") / "dpo_data"
    clips = _clips()
    names = S.build_dataset(root, clips)
    return root, names, sorted(clips)


@pytest.fixture(scope="module")
def audited(dataset, tmp_path_factory):
    root, _, _ = dataset
    out = tmp_path_factory.mktemp("audit_out")
    rc = main(["audit", str(root), "--output-dir", str(out), "--no-progress", "--write-filtered-manifest",
               str(out / "filtered.json")])
    return rc, out, json.loads((out / "audit.json").read_text())


def test_good_negatives_are_clear_and_wrong_ones_are_caught(dataset, audited, capsys):
    root, names, clips = dataset
    rc, out, doc = audited
    assert rc == 1  # invariant failures exist
    assert doc["num_videos"] == len(names)
    by_key = {(i["video"], i["neg_type"]): i for i in doc["items"]}
    for clip in clips:
        for neg_type in fmt.DEFAULT_NEG_TYPES:
            item = by_key[(f"good_{clip}", neg_type)]
            assert item["verdict"] == "clear" and item["passes"] and not item["failures"], item
        blur = by_key[(f"bad_{clip}", "blur")]
        assert blur["verdict"] == "none" and not blur["passes"]
        assert [f["check"] for f in blur["failures"]] == ["identical_to_gt"]
        assert f"video bad_{clip}" in blur["failures"][0]["message"]
        hallu = by_key[(f"bad_{clip}", "hallucination")]
        assert hallu["invariants"]["outside_max_abs_diff"] == 20 and not hallu["passes"]
        assert [f["check"] for f in hallu["failures"]] == ["outside_hole_differs"]
    checks = sorted((f["video"], f["check"]) for f in doc["invariant_failures"])
    assert checks == sorted([(f"bad_{c}", "identical_to_gt") for c in clips]
                            + [(f"bad_{c}", "outside_hole_differs") for c in clips])
    flick = doc["summary"]["flicker"]["segment_boundaries"]
    assert flick["boundaries"] == 2 * len(clips) and flick["boundaries_with_jump"] == flick["boundaries"]


def test_console_names_the_bad_videos(dataset, tmp_path, capsys):
    root, _, clips = dataset
    rc = main(["audit", str(root), "--output-dir", str(tmp_path), "--no-progress", "--no-html"])
    text = capsys.readouterr().out
    assert rc == 1
    for clip in clips:
        assert re.search(rf"FAIL identical_to_gt: video bad_{re.escape(clip)}, blur", text)
        assert re.search(rf"FAIL outside_hole_differs: video bad_{re.escape(clip)}, hallucination", text)
    assert not (tmp_path / "audit.html").exists()


def test_filtered_manifest_drops_failing_negatives(dataset, audited):
    root, names, clips = dataset
    rc, out, doc = audited
    filtered = fmt.load_manifest(root, out / "filtered.json")
    kept = {v.name: v.neg_types for v in filtered.videos}
    assert kept == {f"good_{c}": list(fmt.DEFAULT_NEG_TYPES) for c in clips}  # bad_* lost both negatives
    full = {v.name: v for v in fmt.load_manifest(root).videos}
    for v in filtered.videos:
        assert (v.num_frames, v.height, v.width) == (full[v.name].num_frames, full[v.name].height, full[v.name].width)


def test_filtered_manifest_loads_in_dpodataset(dataset, audited):
    pytest.importorskip("torch")
    from types import SimpleNamespace

    from regdpo.dataset import DPODataset

    root, _, clips = dataset
    rc, out, doc = audited
    args = SimpleNamespace(dpo_data_root=str(root), nframes=8, resolution=64, manifest=str(out / "filtered.json"))
    ds = DPODataset(args, FakeTokenizer())
    assert len(ds) == 3 * len(clips)
    assert all(p.video.startswith("good_") for p in ds.pairs)


def test_default_filtered_path_strict_and_min_verdict(dataset, tmp_path):
    root, _, clips = dataset
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    good = [f"good_{c}" for c in clips]
    args = ["audit", str(copy), "--no-progress", "--no-html"] + sum((["--video", v] for v in good), [])
    assert main(args + ["--write-filtered-manifest"]) == 0
    assert (copy / "manifest.filtered.json").is_file() and (copy / "audit.json").is_file()
    # demand more than any negative shows: nothing fails an invariant, so only --strict exits 1
    harsh = ["--blur-weak-db", "90", "--blur-clear-db", "99"]
    assert main(args + harsh) == 0
    assert main(args + harsh + ["--strict"]) == 1
    doc = json.loads((copy / "audit.json").read_text())
    assert {i["verdict"] for i in doc["items"] if i["neg_type"] == "blur"} == {"none"}


def test_workers_give_identical_results(dataset, audited, tmp_path):
    root, _, _ = dataset
    _, out, doc = audited
    assert main(["audit", str(root), "--output-dir", str(tmp_path), "--no-progress", "--no-html",
                 "--workers", "2"]) == 1
    assert (tmp_path / "audit.json").read_bytes() == (out / "audit.json").read_bytes()


def test_corrupt_frame_and_non_binary_mask_are_reported(dataset, tmp_path, capsys):
    root, _, clips = dataset
    copy = tmp_path / "data"
    video = f"good_{clips[0]}"
    shutil.copytree(root / video, copy / video)
    shutil.copy(root / "manifest.json", copy / "manifest.json")
    (copy / video / "flicker" / "00003.png").write_bytes(b"not a png")
    mask = copy / video / "masks" / "00002.png"
    import cv2

    m = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    m[m == 255] = 200
    cv2.imwrite(str(mask), m)
    rc = main(["audit", str(copy), "--video", video, "--no-progress", "--no-html"])
    assert rc == 1
    doc = json.loads((copy / "audit.json").read_text())
    checks = {(f["neg_type"], f["check"]) for f in doc["invariant_failures"]}
    assert (None, "mask_not_binary") in checks and ("flicker", "unreadable") in checks
    msg = [f["message"] for f in doc["invariant_failures"] if f["check"] == "unreadable"][0]
    assert video in msg and "00003.png" in msg
    flicker = [i for i in doc["items"] if i["neg_type"] == "flicker"][0]
    assert flicker["verdict"] == "not_measured" and not flicker["passes"]


def test_a_frame_of_another_size_gets_no_thumbnail_and_no_traceback(dataset, tmp_path, capsys):
    """The fault campaign's case: a GT frame replaced by (a link to) a frame of another video, of another
    size. The audit fails that video and still writes its HTML report: the item's thumbnail is left out
    ("frames unreadable"), never an IndexError from mixing two sizes."""
    import cv2

    from regdpo.audit import report

    root, _, clips = dataset
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    video = f"good_{clips[0]}"
    frame = copy / video / fmt.GT_DIR / "00000.png"
    smaller = cv2.imread(str(frame))[: H - 8, : W - 8]
    elsewhere = tmp_path / "elsewhere.png"
    cv2.imwrite(str(elsewhere), smaller)
    frame.unlink()
    frame.symlink_to(elsewhere)
    item = {"video": video, "neg_type": "blur", "stream": "blur", "metrics": {}}
    assert report.item_thumbnail(copy, item, {"largest_hole_frame": 0}) is None
    frame.unlink()
    shutil.copy(elsewhere, frame)  # the same as a plain file
    assert report.item_thumbnail(copy, item, {"largest_hole_frame": 0}) is None
    assert report.item_thumbnail(root, item, {"largest_hole_frame": 0}) is not None
    capsys.readouterr()
    assert main(["audit", str(copy), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert (copy / "audit.html").is_file() and video in (copy / "audit.html").read_text()


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["audit", str(tmp_path), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert main(["audit", str(tmp_path), "--blur-weak-db", "9", "--blur-clear-db", "3"]) == 2
    assert "--blur-clear-db" in capsys.readouterr().err


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.srcs, self.hrefs, self.tags = set(), [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        for key, bucket in (("src", self.srcs), ("href", self.hrefs)):
            if key in a:
                bucket.append(a[key])


def test_html_report_is_self_contained(dataset, audited):
    root, names, clips = dataset
    _, out, doc = audited
    text = (out / "audit.html").read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(text)
    parser.close()
    assert {"summary", "distributions", "invariants", "thresholds", "items"} <= parser.ids
    assert {f"examples-{t}" for t in fmt.DEFAULT_NEG_TYPES} <= parser.ids
    assert parser.srcs and all(s.startswith("data:image/") for s in parser.srcs)
    assert not parser.hrefs and "<script" not in text and "<link" not in text
    assert not re.search(r"(?:src|href)\s*=\s*['\"]?(?:https?:)?//", text) and "url(" not in text
    assert parser.tags.count("img") >= 3 + 2 * len(clips)  # plots + failure thumbnails + examples
    for clip in clips:
        assert f"video bad_{clip}, blur" in text


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)")
def test_html_report_renders_in_headless_chromium(audited, tmp_path):
    _, out, _ = audited
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", (out / "audit.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-500:]
    assert "Summary per negative type" in dom.stdout and "Invariant failures" in dom.stdout
    assert "Calibration: how hard the negatives are" in dom.stdout and "Purity warnings" in dom.stdout
    assert dom.stdout.count("quality score per type with the band") == 1
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,2400", f"--screenshot={shot}", (out / "audit.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2400, 1200)
    # the calibration histogram (first image after the summary) is drawn: its eligible band is shaded
    # light yellow (#ffe9a8 at alpha 0.7 on white = RGB 255, 240, 194), a colour nothing else uses
    band = (np.abs(image[..., 2].astype(int) - 255) <= 3) & (np.abs(image[..., 1].astype(int) - 240) <= 4) & (
        np.abs(image[..., 0].astype(int) - 194) <= 6)
    assert np.count_nonzero(band) > 2000
    assert float(image.std()) > 20  # rendered plots and thumbnails, not a blank page
    assert np.count_nonzero(image.min(axis=2) < 250) > 0.05 * image.shape[0] * image.shape[1]


def test_auditing_a_filtered_manifest_audits_only_its_negatives(dataset, audited, tmp_path):
    """A filtered manifest lists fewer negatives per video by design: no mismatch, only those audited."""
    root, _, _ = dataset
    _, out, _ = audited
    filtered = fmt.load_manifest(root, out / "filtered.json")
    listed = {(v.name, t) for v in filtered.videos for t in v.neg_types}
    again = tmp_path / "again"
    rc = main(["audit", str(root), "--manifest", str(out / "filtered.json"), "--output-dir", str(again),
               "--no-progress", "--no-html"])
    doc = json.loads((again / "audit.json").read_text())
    assert rc == 0  # every negative it lists passed before
    assert {(i["video"], i["neg_type"]) for i in doc["items"]} == listed
    assert not any(f["check"] == "manifest_mismatch" for i in doc["items"] for f in i["failures"])


def test_one_video_that_cannot_be_audited_does_not_end_the_audit(dataset, monkeypatch):
    from regdpo.audit import runner

    root, names, _ = dataset
    entry = fmt.load_manifest(root).videos[0]

    def broken(*args, **kwargs):
        raise ZeroDivisionError("odd video")

    monkeypatch.setattr(runner, "audit_video", broken)
    record = runner._worker((str(root), entry.name, runner.AuditConfig(), entry))
    assert record["failures"][0]["check"] == "audit_error"
    assert f"video {entry.name}" in record["failures"][0]["message"]
    assert [i["neg_type"] for i in record["items"]] == list(entry.neg_types)


def test_every_item_has_a_quality_score_band_and_purity(dataset, audited):
    _, out, doc = audited
    assert doc["band"] == [0.30, 0.65] and doc["audit_version"] == 2
    for item in doc["items"]:
        assert (item["stream"], item["strength"]) == (item["neg_type"], 1.0)
        assert 0.0 <= item["quality_score"] <= 1.0, item
        lo, hi = doc["band"]
        expected = "too_bad" if item["quality_score"] < lo else "too_good" if item["quality_score"] > hi else "eligible"
        assert item["band"] == expected and isinstance(item["impure"], list)
    by_key = {(i["video"], i["neg_type"]): i for i in doc["items"]}
    good = [k for k in by_key if k[0].startswith("good_")]
    # content of another clip is far from the GT; a sigma-2.5 blur keeps the layout
    for video, _ in good:
        assert by_key[(video, "hallucination")]["quality_score"] < by_key[(video, "blur")]["quality_score"]
    # the synthetic flicker (a different OpenCV inpainting per segment) also hallucinates: flagged
    assert all("hallucination" in by_key[(v, "flicker")]["impure"] for v, t in good if t == "flicker")
    for neg_type, s in doc["summary"].items():
        assert sum(s["bands"].values()) == s["count"] and s["quality_score"]["max"] <= 1.0
    text = (out / "audit.html").read_text(encoding="utf-8")
    assert "id='impure'" in text and "Purity warnings" in text


def test_band_flag(dataset, tmp_path, capsys):
    root, _, clips = dataset
    args = ["audit", str(root), "--output-dir", str(tmp_path), "--no-progress", "--no-html"]
    assert main(args + ["--band", "0.7", "0.2"]) == 2
    assert "--band" in capsys.readouterr().err
    main(args + ["--band", "0", "0.01"])
    text = capsys.readouterr().out
    assert "quality score bands (--band 0 0.01)" in text and "IMPURE: video good_" in text
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert doc["band"] == [0.0, 0.01]
    assert {i["band"] for i in doc["items"]} <= {"too_good", "eligible"}


def test_calibration_section(dataset, audited):
    from regdpo.audit import calibration

    _, out, doc = audited
    rows = calibration.band_table(doc["items"])
    assert [(r["neg_type"], r["strength"]) for r in rows] == [(t, 1.0) for t in fmt.DEFAULT_NEG_TYPES]
    for row in rows:
        mine = [i for i in doc["items"] if i["neg_type"] == row["neg_type"]]
        assert row["count"] == len(mine) and sum(row["bands"].values()) == row["scored"] == len(mine)
        assert row["mean_quality_score"] == pytest.approx(np.mean([i["quality_score"] for i in mine]))
        assert sum(row["shares"].values()) == pytest.approx(1.0)
    examples = calibration.band_examples(doc["items"], 2)
    for band, (low, high) in examples.items():
        assert all(i["band"] == band for i in low + high)
        assert not {id(i) for i in low} & {id(i) for i in high}
        if low and high:
            assert low[0]["quality_score"] <= high[0]["quality_score"]
    text = (out / "audit.html").read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(text)
    assert {"calibration", "band-table", "mask-area", "band-too_bad", "band-eligible", "band-too_good"} <= parser.ids
    assert "quality score per type with the band" in text and "mask area distribution" in text
