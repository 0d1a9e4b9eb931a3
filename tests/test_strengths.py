"""Strength variants of the negatives: CLI, meta, resume, and monotone quality on the real fixtures."""

import json

import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.audit import metrics as M
from regdpo.audit import quality as Q
from regdpo.audit.config import AuditConfig
from regdpo.cli import main as regdpo_main
from regdpo.frames import read_mask_clip, read_rgb_clip
from helpers import DATA, needs_data


def generate(*flags):
    return regdpo_main(["generate", "--no_progress", *map(str, flags)])


def quality_scores(root):
    """(neg_type, strength) -> quality_score per video, measured as `regdpo audit` does."""
    cfg = AuditConfig()
    out: dict[tuple[str, float], list[float]] = {}
    for name in fmt.complete_videos(root):
        meta = fmt.read_video_meta(root, name)
        names = fmt.frame_names(meta.num_frames)
        gt = read_rgb_clip([root / name / fmt.GT_DIR / n for n in names])
        hole = read_mask_clip([root / name / fmt.MASK_DIR / n for n in names])
        ref = M.reference(gt, hole, cfg)
        for s in meta.streams:
            neg = read_rgb_clip([root / name / s.stream / n for n in names])
            metrics = M.measure_negative(ref, neg, cfg, meta.info(s.stream).get("segments"))
            out.setdefault((s.type, s.strength), []).append(Q.quality_terms(metrics, cfg)["quality_score"])
    return out


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    if not DATA.is_dir():
        pytest.skip(f"real-video fixtures not found at {DATA}")
    out = tmp_path_factory.mktemp("strengths") / "dpo_data"
    assert generate("--davis_root", DATA / "DAVIS", "--ytvos_root", DATA / "YTBV", "--nframes", 12,
                    "--resolution", 128, "--strengths", 0.3, 1.0, "--output_dir", out) == 0
    return out


@needs_data
def test_variants_are_streams_of_one_entry_and_lower_strength_is_milder(variants, tmp_path):
    names = fmt.complete_videos(variants)
    assert names
    meta = fmt.read_video_meta(variants, names[0])
    assert [s.stream for s in meta.streams] == ["hallucination", "hallucination_s0.30", "blur", "blur_s0.30",
                                                "flicker", "flicker_s0.30"]
    assert meta.generator["strengths"] == {t: [1.0, 0.3] for t in fmt.DEFAULT_NEG_TYPES}
    scores = quality_scores(variants)
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    for t in fmt.DEFAULT_NEG_TYPES:  # the criterion: mean quality at 0.3 above that at 1.0
        assert means[(t, 0.3)] > means[(t, 1.0)], (t, means)
    # strength 1.0 streams are exactly those of a run without strength flags
    plain = tmp_path / "plain"
    assert generate("--davis_root", DATA / "DAVIS", "--ytvos_root", DATA / "YTBV", "--nframes", 12,
                    "--resolution", 128, "--output_dir", plain) == 0
    for name in names:
        for t in fmt.DEFAULT_NEG_TYPES:
            for f in fmt.frame_names(12):
                assert (plain / name / t / f).read_bytes() == (variants / name / t / f).read_bytes()
    assert "strengths" not in fmt.read_video_meta(plain, names[0]).generator
    from regdpo.dataset import DPODataset
    from helpers import FakeTokenizer
    from types import SimpleNamespace
    ds = DPODataset(SimpleNamespace(dpo_data_root=str(variants), nframes=12, resolution=128), FakeTokenizer())
    assert sorted({p.neg_strength for p in ds.pairs}) == [0.3, 1.0]


@needs_data
def test_per_type_strength_flag_resume_and_bad_values(tmp_path, capsys):
    out = tmp_path / "d"
    common = ["--davis_root", DATA / "DAVIS", "--max_videos", 1, "--nframes", 6, "--resolution", 64,
              "--neg_types", "blur", "flicker"]
    assert generate(*common, "--flicker_strength", 0.5, "--output_dir", out) == 0
    meta = fmt.read_video_meta(out, fmt.complete_videos(out)[0])
    assert [s.stream for s in meta.streams] == ["blur", "flicker_s0.50"]
    assert meta.generator["strengths"] == {"blur": [1.0], "flicker": [0.5]}
    assert json.loads((out / fmt.MANIFEST_FILE).read_text())["videos"][0]["negatives"][1]["stream"] == "flicker_s0.50"
    assert generate(*common, "--flicker_strength", 0.5, "--output_dir", out, "--resume") == 0
    capsys.readouterr()
    assert generate(*common, "--output_dir", out, "--resume") == 2  # other strengths: refused
    assert "strengths" in capsys.readouterr().err
    for bad in (["--strengths", 1.5], ["--blur_strength", -0.1], ["--strengths", 0.5, "--blur_strength", 0.5],
                ["--strengths", 0.5, 0.501]):
        assert generate(*common, *bad, "--output_dir", tmp_path / "x") == 2, bad
