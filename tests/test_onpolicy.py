"""On-policy negatives on the classical backend: several inpaint candidates per mask (select keeps one,
prune removes the others), the renoise type and its strength order, rounds recorded and selected, pair
weights; and the default run's bytes pinned (unchanged by all of it)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from regdpo.curate.candidates import pick_candidates, spread_summary
from regdpo.curate.weights import pair_weights
from helpers import DATA, REPO

SMALL = ["--resolution", "128", "--nframes", "6", "--max_videos", "2"]


def regdpo(*args):
    return regdpo_main([str(a) for a in args])


def generate(out, *flags):
    return regdpo("generate", "--no_progress", "--output_dir", out, *flags)


def run_digest(root: Path) -> str:
    """Every file's bytes (meta.json without its timings and regdpo version), hashed with its path."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith(".lock"):
            continue
        data = p.read_bytes()
        if p.name == fmt.META_FILE:
            meta = json.loads(data)
            meta.pop("timings")
            meta["generator"].pop("regdpo_version")
            data = json.dumps(meta, sort_keys=True).encode()
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


BEFORE_CANDIDATES = "1823bef"
"""main before candidates / renoise / rounds existed. The default run is compared with that code's run in
this same environment: PNG bytes depend on the installed Pillow / zlib / OpenCV (three machines gave three
digests of the same code), so a digest pinned on one machine says nothing on another."""


def code_at(commit: str, into: Path) -> Path | None:
    """``src/`` of ``commit`` extracted from this clone's git history into ``into``; None without git or
    the commit (a shallow clone, a source tarball)."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        return None
    probe = subprocess.run([git, "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    archive = subprocess.run([git, "-C", str(REPO), "archive", "--format=tar", commit, "src"],
                             capture_output=True, check=True).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def test_default_run_is_byte_identical_to_the_code_before_candidates(tmp_path):
    flags = ["generate", "--no_progress", *SMALL, "--neg_types", "hallucination", "blur", "flicker",
             "inpaint", "--masks_per_clip", "2"]
    old_src = code_at(BEFORE_CANDIDATES, tmp_path / "old")
    if old_src is None:
        pytest.skip(f"this checkout has no git history holding {BEFORE_CANDIDATES} to compare with")
    # the old code in its own interpreter, so that nothing of today's regdpo is imported by it
    run = subprocess.run(
        [sys.executable, "-c", "import sys, regdpo; from regdpo.cli import main; "
         f"assert regdpo.__file__.startswith({str(old_src)!r}), regdpo.__file__; sys.exit(main(sys.argv[1:]))",
         *flags, "--output_dir", str(tmp_path / "before")],
        env={**os.environ, "PYTHONPATH": str(old_src)}, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert generate(tmp_path / "now", *flags[2:]) == 0
    assert run_digest(tmp_path / "now") == run_digest(tmp_path / "before")


# --------------------------------------------------------------------------- format


def test_candidate_stream_names_round_trip_and_candidate_zero_is_the_bare_stream():
    assert fmt.stream_name("inpaint", 1.0, 0) == "inpaint"
    assert fmt.stream_name("inpaint", 1.0, 2) == "inpaint_c2"
    assert fmt.stream_name("renoise", 0.5, 1) == "renoise_s0.50_c1"
    for name in ("inpaint", "inpaint_c2", "renoise_s0.50", "renoise_s0.50_c1"):
        assert fmt.parse_negative(name).stream == name
    assert fmt.parse_stream("inpaint_c2") == ("inpaint", 1.0)
    for bad in ("inpaint_c0", "inpaint_c01", "inpaint_c1_s0.50", "renoise_s1.00"):
        with pytest.raises(ValueError):
            fmt.parse_negative(bad)
    assert fmt.NegativeStream("inpaint").to_dict() == {"type": "inpaint", "strength": 1.0, "stream": "inpaint"}
    assert fmt.NegativeStream("inpaint", 1.0, 1).to_dict()["candidate"] == 1
    with pytest.raises(ValueError):
        fmt.NegativeStream.from_dict({"type": "inpaint", "stream": "inpaint", "candidate": 1})


def test_manifest_keeps_a_checked_pair_weight():
    entry = {"name": "v", "num_frames": 2, "height": 8, "width": 8, "neg_types": ["blur"],
             "negatives": [{"type": "blur", "strength": 1.0, "stream": "blur", "pair_weight": 1.5}]}
    doc = {"format_version": 2, "videos": [entry]}
    manifest = fmt.Manifest.from_dict(doc)
    assert manifest.videos[0].negatives[0]["pair_weight"] == 1.5
    assert fmt.Manifest.from_dict(manifest.to_dict()).videos[0].negatives[0]["pair_weight"] == 1.5
    for bad in (0, -1, float("nan"), "2", True, 1e9):
        entry["negatives"][0]["pair_weight"] = bad
        with pytest.raises(fmt.FormatError, match="pair_weight"):
            fmt.Manifest.from_dict(doc)


# --------------------------------------------------------------------------- candidates


@pytest.fixture(scope="module")
def candidates_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cand") / "d"
    assert generate(out, *SMALL, "--neg_types", "inpaint", "--inpaint_candidates", "3", "--masks_per_clip", "2") == 0
    assert regdpo("audit", out) in (0, 1)
    return out


def test_three_candidates_per_mask_entry_with_their_own_seeds(candidates_run):
    out = candidates_run
    manifest = fmt.load_manifest(out)
    assert len(manifest.videos) == 4
    for entry in manifest.videos:
        assert entry.stream_names == ["inpaint", "inpaint_c1", "inpaint_c2"]
        meta = fmt.read_video_meta(out, entry.name)
        seeds = [meta.info(s).get("seed") for s in ("inpaint_c1", "inpaint_c2")]
        assert len(set(seeds)) == 2 and None not in seeds
        assert meta.generator["inpaint_candidates"] == 3
        clips = [np.stack([np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(p))
                           for p in sorted((out / entry.name / s).glob("*.png"))]) for s in entry.stream_names]
        assert not np.array_equal(clips[0], clips[1]) and not np.array_equal(clips[1], clips[2])
    audit = json.loads((out / fmt.AUDIT_JSON).read_text())
    scored = [i for i in audit["items"] if i["quality_score"] is not None]
    assert len(scored) == 12
    assert regdpo("verify", out) == 0


def test_candidate_zero_is_the_one_candidate_runs_inpaint(candidates_run, tmp_path):
    one = tmp_path / "one"
    assert generate(one, *SMALL, "--neg_types", "inpaint", "--masks_per_clip", "2") == 0
    for entry in fmt.load_manifest(one).videos:
        for png in sorted((one / entry.name / "inpaint").glob("*.png")):
            assert png.read_bytes() == (candidates_run / entry.name / "inpaint" / png.name).read_bytes()


def test_select_keeps_one_candidate_per_group_and_prune_removes_the_others(candidates_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(candidates_run, out)
    assert regdpo("select", out, "--secondary") == 0
    record = json.loads((out / fmt.SELECTION_FILE).read_text())
    groups = record["candidate_groups"]
    assert len(groups) == 4 and all(len(g["streams"]) == 3 and g["kept"] in g["streams"] for g in groups)
    assert "candidates: 4 groups of 12 drawn negatives" in capsys.readouterr().out
    picked = {(p["video"], p["stream"]) for p in record["picks"]}
    kept = {(g["video"], g["kept"]) for g in groups}
    assert picked <= kept  # never a dropped candidate
    assert regdpo("prune", out) == 0
    for entry in fmt.load_manifest(out).videos:
        streams = [p.name for p in (out / entry.name).iterdir() if p.is_dir() and p.name.startswith("inpaint")]
        assert len(streams) == 1 and (entry.name, streams[0]) in picked
    assert regdpo("verify", out) == 0


def cand(video, stream, q, band="eligible", valid=True):
    return {"video": video, "source_clip": video, "stream": stream, "neg_type": fmt.parse_stream(stream)[0],
            "strength": fmt.parse_stream(stream)[1], "quality_score": q, "band": band, "valid": valid}


def test_pick_target_and_worst_prefer_the_band():
    items = [cand("v", "inpaint", 0.20, "too_bad"), cand("v", "inpaint_c1", 0.60), cand("v", "inpaint_c2", 0.40),
             cand("v", "blur", 0.5), cand("w", "inpaint", 0.8, "too_good"), cand("w", "inpaint_c1", 0.05, "too_bad")]
    kept, groups = pick_candidates(items, "target", 0.45)
    assert [c["stream"] for c in kept if c["video"] == "v"] == ["inpaint_c2", "blur"]
    assert [g["kept"] for g in groups] == ["inpaint_c2", "inpaint"]  # w: none in the band, nearest the target
    kept, groups = pick_candidates(items, "worst", 0.45)
    assert [g["kept"] for g in groups] == ["inpaint_c2", "inpaint_c1"]  # the band's lowest; w: the lowest of all
    assert groups[0]["spread"] == pytest.approx(0.4)
    assert spread_summary(groups)["groups"] == 2
    invalid = [cand("x", "inpaint", None, None, False), cand("x", "inpaint_c1", None, None, False)]
    kept, groups = pick_candidates(invalid)
    assert len(kept) == 2 and groups[0]["kept"] is None


def test_candidates_need_inpaint_in_neg_types(tmp_path, capsys):
    assert generate(tmp_path / "x", *SMALL, "--inpaint_candidates", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--inpaint_candidates" in err[0] and "Traceback" not in err[0]


# --------------------------------------------------------------------------- renoise


def test_renoise_strength_orders_the_quality_score_and_one_is_inpaint(tmp_path):
    out = tmp_path / "r"
    flags = ["--resolution", "128", "--nframes", "8"]
    if (DATA / "DAVIS").is_dir():
        flags += ["--davis_root", DATA / "DAVIS"]
    else:
        flags += ["--max_videos", "2"]
    assert generate(out, *flags, "--neg_types", "inpaint", "renoise", "--strengths", "0.1", "0.3", "0.6", "1.0") == 0
    assert regdpo("audit", out) in (0, 1)
    audit = json.loads((out / fmt.AUDIT_JSON).read_text())
    by_video: dict[str, dict[float, float]] = {}
    for item in audit["items"]:
        if item["neg_type"] == "renoise":
            by_video.setdefault(item["video"], {})[item["strength"]] = item["quality_score"]
    assert by_video
    for video, scores in by_video.items():
        order = [scores[s] for s in (0.1, 0.3, 0.6, 1.0)]
        assert order == sorted(order, reverse=True) and order[0] > order[-1], (video, order)
        mine = {i["stream"]: i for i in audit["items"] if i["video"] == video}
        for key in ("verdict", "quality_score", "band", "passes", "impure"):  # judged as inpaint is (on-policy)
            assert mine["renoise"][key] == mine["inpaint"][key], key
        for png in sorted((out / video / "renoise").glob("*.png")):  # strength 1.0: from pure noise = inpaint
            assert png.read_bytes() == (out / video / "inpaint" / png.name).read_bytes()
        meta = fmt.read_video_meta(out, video)
        assert meta.info("renoise_s0.30")["sigma_px"] > meta.info("renoise_s0.10")["sigma_px"]
    from regdpo.dataset import DPODataset
    from types import SimpleNamespace
    from helpers import FakeTokenizer

    ds = DPODataset(SimpleNamespace(dpo_data_root=str(out), nframes=8, resolution=64, dataset_seed=0,
                                    neg_types="renoise"), FakeTokenizer())
    item = ds[0]
    assert item["neg_type"] == "renoise" and item["pair_weight"] == 1.0 and item["stream"].startswith("renoise")
    assert regdpo("verify", out) == 0


def test_renoise_without_a_strength_is_refused_in_one_line(tmp_path, capsys):
    """At its would-be default 1.0 renoise repeats inpaint byte for byte: the user must choose a strength."""
    assert generate(tmp_path / "x", *SMALL, "--neg_types", "inpaint", "renoise") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--renoise_strength" in err[0] and "inpaint" in err[0], err
    assert not (tmp_path / "x").exists()
    assert generate(tmp_path / "y", *SMALL, "--neg_types", "renoise", "--renoise_strength", "0.5") == 0
    assert sorted(p.name for p in (tmp_path / "y").iterdir() if p.is_dir())[0].startswith("sample_")
    assert all((v / "renoise_s0.50").is_dir() for v in (tmp_path / "y").iterdir() if v.is_dir())


def test_renoise_fill_splits_frequencies_not_pixels():
    from regdpo.backends.classical import renoise_fill

    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    fill = np.full_like(gt, 128)
    assert np.array_equal(renoise_fill(gt, fill, 0.0), gt)
    errors = [np.abs(renoise_fill(gt, fill, s).astype(float) - gt).mean() for s in (0.5, 1.0, 2.0, 4.0)]
    assert errors == sorted(errors)


# --------------------------------------------------------------------------- rounds and weights


def test_round_is_recorded_resumed_beside_other_rounds_and_selected(tmp_path, capsys):
    out = tmp_path / "rounds"
    assert generate(out, "--resolution", "128", "--nframes", "6", "--max_videos", "1", "--neg_types", "inpaint",
                    "--round", "1") == 0
    assert generate(out, "--resolution", "128", "--nframes", "6", "--max_videos", "2", "--neg_types", "inpaint",
                    "--round", "2", "--resume") == 0
    rounds = {v: fmt.read_video_meta(out, v).generator.get("round") for v in fmt.complete_videos(out)}
    assert sorted(rounds.values()) == [1, 2]
    capsys.readouterr()
    assert generate(out, "--resolution", "128", "--nframes", "6", "--max_videos", "2", "--neg_types", "inpaint",
                    "--resume") == 2  # a run without --round does not silently mix into a folder of rounds
    assert "--round" in capsys.readouterr().err
    assert regdpo("audit", out) in (0, 1)
    audit = json.loads((out / fmt.AUDIT_JSON).read_text())
    assert sorted(i["round"] for i in audit["items"]) == [1, 2]
    from regdpo.audit.calibration import band_table

    assert [r["round"] for r in band_table(audit["items"])] == [1, 2]
    assert "<th>round</th>" in (out / fmt.AUDIT_HTML).read_text()
    assert regdpo("select", out, "--round", "2") == 0
    record = json.loads((out / fmt.SELECTION_FILE).read_text())
    r2 = next(v for v, r in rounds.items() if r == 2)
    assert record["considered"] == [r2] and record["summary"]["other_rounds_left_out"] == 1
    assert regdpo("select", out, "--round", "3") == 2


def test_pair_weights_formula():
    picks = [{"quality_score": 0.45}, {"quality_score": 0.6}, {"quality_score": 0.3, "ref_margin": 0.5}]
    w = pair_weights(picks, target=0.45)
    assert w[1] > w[0] > w[2]
    assert sum(w) / 3 == pytest.approx(1.0, abs=1e-3)
    assert pair_weights(picks[:2], target=0.45, alpha=0.0) == [1.0, 1.0]
    assert min(pair_weights([{"quality_score": 0.3, "ref_margin": 50.0}, {"quality_score": 0.9}], 0.45)) == 0.25
    assert pair_weights([{"quality_score": 0.45, "ref_margin": 0.0}], 0.45) == [1.0]


def test_select_weights_reach_the_dataset(candidates_run, tmp_path):
    import shutil
    from types import SimpleNamespace

    from regdpo.dataset import DPODataset
    from helpers import FakeTokenizer

    out = tmp_path / "w"
    shutil.copytree(candidates_run, out)
    assert regdpo("select", out, "--weights", "--secondary") == 0
    selected = fmt.read_json(out / fmt.SELECTED_MANIFEST_FILE)
    weights = [n["pair_weight"] for v in selected["videos"] for n in v["negatives"]]
    assert weights and all(w > 0 for w in weights)
    ds = DPODataset(SimpleNamespace(dpo_data_root=str(out), manifest=str(out / fmt.SELECTED_MANIFEST_FILE),
                                    nframes=6, resolution=64, dataset_seed=0), FakeTokenizer())
    got = sorted(ds[i]["pair_weight"] for i in range(len(ds)))
    assert got == sorted(weights)
    plain = DPODataset(SimpleNamespace(dpo_data_root=str(out), nframes=6, resolution=64, dataset_seed=0),
                       FakeTokenizer())
    assert {plain[i]["pair_weight"] for i in range(len(plain))} == {1.0}


def test_use_pair_weights_flag_reaches_the_step_config():
    from regdpo.train.loop import build_parser, step_config

    base = ["--base_model_name_or_path", "b", "--vae_path", "v", "--diffueraser_path", "d", "--dpo_data_root", "r"]
    assert step_config(build_parser().parse_args(base)).use_pair_weights is False
    assert step_config(build_parser().parse_args(base + ["--use_pair_weights"])).use_pair_weights is True


# --------------------------------------------------------------------------- models backend, pure parts


def test_renoise_timesteps_scale_the_standard_schedule():
    from regdpo.backends.models import renoise_timesteps

    assert renoise_timesteps([999, 499], 1.0) == [999, 499]
    assert renoise_timesteps([999, 499], 0.5) == [500, 250]
    assert renoise_timesteps([999, 759, 499, 259], 0.25) == [250, 190, 125, 65]
    assert renoise_timesteps([999, 499], 0.001) == [1, 0]
    assert renoise_timesteps([999, 499], 0.0) == [0]
    with pytest.raises(ValueError):
        renoise_timesteps([999, 499], 1.5)


def test_inpaint_candidate_seeds_keep_candidate_zero():
    from regdpo.backends.models import inpaint_candidate_seed, inpaint_seed

    seeds = [inpaint_candidate_seed(123, k) for k in range(4)]
    assert seeds[0] == inpaint_seed(123) and len(set(seeds)) == 4


def test_weights_digest_names_the_loaded_files_and_changes_with_them(tmp_path):
    from regdpo.backends.models_diffueraser import weights_digest

    for folder in ("brushnet", "unet_main", "other"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "w.safetensors").write_bytes(folder.encode())
    files, digest = weights_digest(tmp_path)
    assert files == ["brushnet/w.safetensors", "unet_main/w.safetensors"]
    (tmp_path / "other" / "w.safetensors").write_bytes(b"x")  # not loaded: not hashed
    assert weights_digest(tmp_path)[1] == digest
    (tmp_path / "unet_main" / "w.safetensors").write_bytes(b"trained")
    assert weights_digest(tmp_path)[1] != digest


@pytest.mark.parametrize("script", ["bench_models.py", "bench_negatives.py"])
def test_the_benches_of_the_on_policy_figures_compile(script):
    from helpers import REPO

    path = REPO / "bench" / script
    compile(path.read_text(), str(path), "exec")


def test_resume_compares_the_weights_hash_only_where_it_was_recorded(tmp_path):
    from regdpo.errors import UsageError
    from regdpo.generate.config import GenerateConfig
    from regdpo.generate.pipeline import check_resume_compatible
    from regdpo.writer import write_video_entry

    config = GenerateConfig(output_dir=tmp_path, backend="models", neg_types=("inpaint",))
    gt = np.zeros((2, 8, 8, 3), np.uint8)
    hole = np.zeros((2, 8, 8), bool)
    hole[:, 2:5, 2:5] = True
    settings = {"num_inference_steps": 2, "paths": {"diffueraser_path": "a"}}
    for name, weights in (("old", None), ("new", {"sha256": "1" * 64})):
        backend = {**settings, **({"diffueraser_weights": weights} if weights else {})}
        meta = fmt.VideoMeta(name, 2, 8, 8, ["inpaint"], generator={**config.settings_for_meta(),
                                                                    "backend_settings": backend})
        write_video_entry(tmp_path, meta, gt, hole, {"inpaint": gt + 1})
    check_resume_compatible(config, {**settings, "diffueraser_weights": {"sha256": "1" * 64}})
    with pytest.raises(UsageError, match="diffueraser_weights"):  # other weights than the finished videos'
        check_resume_compatible(config, {**settings, "diffueraser_weights": {"sha256": "2" * 64}})
