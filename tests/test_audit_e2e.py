"""End to end on real video: `regdpo generate` (classical backend) on ../shared/data, then
`regdpo audit`: every negative shows its defect; tampered copies are caught by video name."""

from __future__ import annotations

import importlib.util
import json
import shutil

import cv2
import pytest

from regdpo import format as fmt
from regdpo.cli import main
from helpers import DATA


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "DAVIS").is_dir(), reason=f"real-video fixtures not found at {DATA}"),
    pytest.mark.skipif(importlib.util.find_spec("regdpo.generate.cli") is None, reason="generator not installed"),
]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "dpo_data"
    rc = main(["generate", "--davis_root", str(DATA / "DAVIS"), "--ytvos_root", str(DATA / "YTBV"),
               "--output_dir", str(out), "--nframes", "12", "--resolution", "128", "--seed", "0"])
    assert rc == 0
    return out


def test_generated_negatives_show_their_defects(generated, tmp_path):
    rc = main(["audit", str(generated), "--output-dir", str(tmp_path), "--no-progress", "--workers", "2",
               "--write-filtered-manifest", str(tmp_path / "filtered.json")])
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert rc == 0 and doc["invariant_failures"] == []
    manifest = fmt.load_manifest(generated)
    assert doc["num_videos"] == len(manifest.videos) >= 3
    for neg_type in fmt.DEFAULT_NEG_TYPES:
        s = doc["summary"][neg_type]
        assert s["count"] == len(manifest.videos)
        assert s["verdicts"]["none"] == 0 and s["verdicts"]["not_measured"] == 0, (neg_type, s["verdicts"])
        assert s["verdicts"]["clear"] >= s["count"] - 1, (neg_type, s["verdicts"])  # at most one only 'weak'
    seg = doc["summary"]["flicker"]["segment_boundaries"]
    assert seg["videos_with_segments"] == len(manifest.videos)
    assert seg["boundaries_with_jump"] >= 0.75 * seg["boundaries"], seg
    filtered = fmt.load_manifest(generated, tmp_path / "filtered.json")
    assert [(v.name, v.neg_types) for v in filtered.videos] == [(v.name, v.neg_types) for v in manifest.videos]


def test_tampered_generated_data_is_caught_naming_the_video(generated, tmp_path, capsys):
    data = tmp_path / "dpo_data"
    shutil.copytree(generated, data)
    names = [v.name for v in fmt.load_manifest(data).videos]
    copy_video, leak_video = names[0], names[1]
    for frame in (data / copy_video / fmt.GT_DIR).iterdir():  # "blur" that is the GT itself
        shutil.copy(frame, data / copy_video / "blur" / frame.name)
    path = data / leak_video / "flicker" / fmt.frame_name(3)  # change a corner outside the hole
    mask = cv2.imread(str(data / leak_video / fmt.MASK_DIR / fmt.frame_name(3)), cv2.IMREAD_GRAYSCALE)
    image = cv2.imread(str(path))
    ys, xs = (mask == 0).nonzero()
    image[ys[0], xs[0]] = 255 - image[ys[0], xs[0]]
    cv2.imwrite(str(path), image)
    rc = main(["audit", str(data), "--no-progress", "--no-html", "--write-filtered-manifest"])
    text = capsys.readouterr().out
    assert rc == 1
    assert f"FAIL identical_to_gt: video {copy_video}, blur" in text
    assert f"FAIL outside_hole_differs: video {leak_video}, flicker" in text and "most in frame 3" in text
    kept = {v.name: v.neg_types for v in fmt.load_manifest(data, data / "manifest.filtered.json").videos}
    assert "blur" not in kept[copy_video] and "flicker" not in kept[leak_video]
    assert sum(len(v) for v in kept.values()) == 3 * len(names) - 2
