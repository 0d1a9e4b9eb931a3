"""The evaluation gate: `regdpo evalset`, `regdpo eval` (classical backend and stand-in models), the paired
statistics, `--exclude_evalset`, and refusals of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.cli import main
from regdpo.evaluation import evalset as es
from regdpo.evaluation.learned_hooks import LEARNED_CLIP_SPECS
from regdpo.evaluation.metrics import PIXEL_SPECS, MetricSpec, PixelMetrics
from regdpo.evaluation.models import EvalModel
from regdpo.evaluation.results import build_document
from regdpo.evaluation.runner import EvalRunner
from regdpo.evaluation.stats import compare
from regdpo.frames import read_rgb, write_rgb

from helpers import DATA, FakeTokenizer, needs_data, tree_files

SIZE = dict(nframes=6, height=48, width=64)
SOURCES = 5


def _textured(frames: int, h: int, w: int, seed: int) -> np.ndarray:
    from regdpo.audit.synthetic import textured_clip

    return textured_clip(frames, h, w, seed=seed)


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> Path:
    """SOURCES frame folders of 14 procedural frames (64x80), names src0 .. src4."""
    root = tmp_path_factory.mktemp("videos")
    for k in range(SOURCES):
        clip = _textured(14, 64, 80, seed=k + 1)
        folder = root / f"src{k}"
        folder.mkdir()
        for i, frame in enumerate(clip):
            write_rgb(folder / f"{i:05d}.png", frame)
    return root


def _evalset_args(video_root: Path, out: Path, *extra: str) -> list[str]:
    return ["evalset", str(out), "--video_root", str(video_root), "--nframes", str(SIZE["nframes"]),
            "--height", str(SIZE["height"]), "--width", str(SIZE["width"]), "--no_progress", *extra]


@pytest.fixture(scope="module")
def evalset_dir(video_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("es") / "set"
    assert main(_evalset_args(video_root, out, "--split", "dev:1", "--split", "test:3")) == 0
    return out


def test_evalset_one_clip_per_source_splits_disjoint_every_file_hashed(evalset_dir, video_root, tmp_path):
    data = json.loads((evalset_dir / es.EVALSET_FILE).read_text())
    assert data["protocol"]["name"] == es.PROTOCOL_NAME and data["protocol"]["masks"] == "stationary"
    splits = {c["name"]: c["split"] for c in data["clips"]}
    assert sorted(splits.values()) == ["dev", "test", "test", "test"]
    keys = [es.source_key(c["source"]["dataset"], c["source"]["id"]) for c in data["clips"]]
    assert len(set(keys)) == len(keys)  # a source (scene) in one split only
    for clip in data["clips"]:
        assert len(clip["files"]) == 2 * SIZE["nframes"]
        for rel, digest in clip["files"].items():
            assert es.file_sha256(evalset_dir / rel) == digest
        masks = np.stack([cv2.imread(str(evalset_dir / "clips" / clip["name"] / "masks" / fmt.frame_name(i)),
                                     cv2.IMREAD_UNCHANGED) for i in range(SIZE["nframes"])])
        assert set(np.unique(masks)) == {0, 255}  # 255 = hole, as in a dpo_data folder
        assert (masks == masks[0]).all()  # stationary
    again = tmp_path / "again"
    assert main(_evalset_args(video_root, again, "--split", "dev:1", "--split", "test:3")) == 0
    assert (again / es.EVALSET_FILE).read_bytes() == (evalset_dir / es.EVALSET_FILE).read_bytes()  # same seed


def test_evalset_masks_folder(video_root, tmp_path):
    masks = tmp_path / "masks"
    for k in (1, 3):
        (masks / f"src{k}").mkdir(parents=True)
        m = np.zeros((64, 80), np.uint8)
        m[10:30, 20:50] = 255
        cv2.imwrite(str(masks / f"src{k}" / "00000.png"), m)
    out = tmp_path / "set"
    assert main(_evalset_args(video_root, out, "--split", "test:2", "--masks", str(masks))) == 0
    data = json.loads((out / es.EVALSET_FILE).read_text())
    assert sorted(c["source"]["id"] for c in data["clips"]) == ["src1", "src3"]
    assert data["protocol"]["masks"] == "folder"
    evalset = es.load_evalset(out)
    _, hole = evalset.read_clip(evalset.clips[0])
    assert hole.any() and (hole == hole[0]).all()
    assert abs(hole[0].mean() - (20 * 30) / (64 * 80)) < 0.02


def _run_cli(args: list[str]) -> int:
    return main(args)


@pytest.fixture(scope="module")
def classical_run(evalset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    rc = main(["eval", str(evalset_dir), "--model", "base=inpaint", "--model", "blurry=blur", "--output_dir", str(out),
               "--save_frames", "--no_progress"])
    return rc, out


def test_eval_classical_writes_complete_eval_json_and_resumes(classical_run, evalset_dir, capsys):
    rc, out = classical_run
    assert rc == 0
    doc = json.loads((out / "eval.json").read_text())
    assert [m["name"] for m in doc["models"]] == ["base", "blurry"]
    assert len(doc["clips"]) == 3 and all(c["split"] == "test" for c in doc["clips"])
    names = [s.name for s in PIXEL_SPECS]
    learned = [s.name for s in LEARNED_CLIP_SPECS]
    for clip in doc["clips"]:
        for model in ("base", "blurry"):
            assert sorted(clip[model]) == sorted(names + learned)
            assert all(isinstance(clip[model][n], float) for n in names)
            # no weights given: the learned metrics are not measured (null + reason), never 0
            assert all(clip[model][n] is None and "given" in clip["not_measured"][model][n] for n in learned)
    assert doc["summary"]["base"]["vfid"] == {"value": None, "not_measured": "no --i3d_path given (nor "
                                              "--propainter_model_dir, where i3d_rgb_imagenet.pt is looked for)"}
    (comparison,) = doc["comparisons"]
    assert comparison["model"] == "blurry" and comparison["baseline"] == "base"
    for n in names:
        s = comparison["metrics"][n]
        assert s["n"] == 3 and s["wins"] + s["ties"] + s["losses"] == 3
        assert s["verdict"] in ("better", "worse", "no significant difference")
        assert s["ci95"][0] <= s["mean_delta"] <= s["ci95"][1]
    before = (out / "eval.json").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "units").rglob("*.json")}
    capsys.readouterr()
    assert main(["eval", str(evalset_dir), "--model", "base=inpaint", "--model", "blurry=blur", "--output_dir",
                 str(out), "--save_frames", "--no_progress"]) == 0
    assert "reusing 6 finished" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (out / "units").rglob("*.json")} == stamps  # nothing recomputed
    assert (out / "eval.json").read_bytes() == before  # byte-identical


def test_saved_frames_reproduce_the_reported_psnr(classical_run, evalset_dir):
    from skimage.metrics import peak_signal_noise_ratio

    _, out = classical_run
    doc = json.loads((out / "eval.json").read_text())
    evalset = es.load_evalset(evalset_dir)
    clips = {c.name: c for c in evalset.clips}
    for row in doc["clips"]:
        gt, hole = evalset.read_clip(clips[row["name"]])
        for model in ("base", "blurry"):
            frames = np.stack([read_rgb(out / "frames" / model / row["name"] / fmt.frame_name(i))
                               for i in range(SIZE["nframes"])])
            assert (frames[~hole] == gt[~hole]).all()  # composited: the GT outside the hole
            whole = np.mean([min(100.0, peak_signal_noise_ratio(g, f, data_range=255)) for g, f in zip(gt, frames)])
            in_hole = peak_signal_noise_ratio(gt[hole], frames[hole], data_range=255)
            assert abs(whole - row[model]["psnr"]) < 1e-3
            assert abs(in_hole - row[model]["hole_psnr"]) < 1e-3


class _StandIn:
    def __init__(self, fn):
        self.fn = fn

    def inpaint(self, clip):
        return self.fn(clip.frames)

    def close(self):
        pass


def _stand_in(name, fn):
    return EvalModel(name, name, {"stand_in": name}, lambda: _StandIn(fn))


def _blurred(frames):
    return np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in frames])


def test_gt_stand_in_scores_maximal_and_wins_every_clip_blurred_gt_loses_every_clip(evalset_dir, tmp_path):
    from regdpo.evaluation.models import classical_model

    evalset = es.load_evalset(evalset_dir)
    clips = evalset.split("test")
    models = [classical_model("base", "inpaint"), _stand_in("gt", lambda f: f.copy()), _stand_in("blurred", _blurred)]
    results = EvalRunner(evalset, clips, models, tmp_path / "o", progress=False).run()
    doc = build_document(evalset, "test", clips, models, results, PIXEL_SPECS, backend="test", seed=0)
    best = {"psnr": 100.0, "ssim": 1.0, "hole_psnr": 100.0, "hole_ssim": 1.0, "hole_l1": 0.0, "boundary_psnr": 100.0,
            "hole_temporal_deviation": 0.0}
    for row in doc["clips"]:
        assert row["gt"] == pytest.approx(best)
    gt_vs_base, blurred_vs_base = doc["comparisons"]
    for spec in PIXEL_SPECS:
        s = gt_vs_base["metrics"][spec.name]
        assert (s["wins"], s["losses"], s["verdict"]) == (3, 0, "better"), spec.name
    # the blurred GT against the GT itself: loses every clip on every metric
    models2 = [models[1], models[2]]
    doc2 = build_document(evalset, "test", clips, models2, results, PIXEL_SPECS, backend="test", seed=0)
    for spec in PIXEL_SPECS:
        s = doc2["comparisons"][0]["metrics"][spec.name]
        assert (s["losses"], s["wins"], s["verdict"]) == (3, 0, "worse"), spec.name


def test_every_model_gets_the_same_seed_per_clip(evalset_dir, tmp_path):
    evalset = es.load_evalset(evalset_dir)
    clips = evalset.split("test")
    seen: dict[str, list] = {"a": [], "b": []}

    class Recording:
        def __init__(self, name):
            self.name = name

        def inpaint(self, clip):
            seen[self.name].append((clip.name, clip.seed))
            return clip.frames.copy()

        def close(self):
            pass

    models = [EvalModel(n, n, {"n": n}, lambda n=n: Recording(n)) for n in ("a", "b")]
    EvalRunner(evalset, clips, models, tmp_path / "o", seed=5, progress=False).run()
    assert seen["a"] == seen["b"] and len({s for _, s in seen["a"]}) == len(clips)
    EvalRunner(evalset, clips, models, tmp_path / "o2", seed=6, progress=False).run()
    assert seen["a"][len(clips):] != seen["a"][:len(clips)]  # --seed changes them


def test_a_clip_that_fails_fails_alone_and_is_reported(evalset_dir, tmp_path):
    evalset = es.load_evalset(evalset_dir)
    clips = evalset.split("test")
    bad = clips[1].name

    def fill(frames):
        if frames.shape and np.array_equal(frames, evalset.read_clip(clips[1])[0]):
            raise RuntimeError("boom")
        return frames.copy()

    models = [_stand_in("a", lambda f: f.copy()), _stand_in("b", fill)]
    results = EvalRunner(evalset, clips, models, tmp_path / "o", progress=False, log=lambda line: None).run()
    doc = build_document(evalset, "test", clips, models, results, PIXEL_SPECS, backend="test", seed=0)
    assert doc["failed"] == [{"model": "b", "clip": bad, "error": "RuntimeError: boom"}]
    row = next(r for r in doc["clips"] if r["name"] == bad)
    assert row["b"]["hole_psnr"] is None and row["not_measured"]["b"]["hole_psnr"].startswith("failed")
    assert doc["comparisons"][0]["metrics"]["psnr"]["n"] == 2


def test_a_metric_that_cannot_be_measured_is_null_with_a_reason():
    gt = _textured(3, 24, 32, seed=3)
    values = PixelMetrics().measure(gt, gt.copy(), np.zeros(gt.shape[:3], bool))
    from regdpo.evaluation.metrics import NotMeasured, split_values

    assert isinstance(values["hole_psnr"], NotMeasured)
    plain, reasons = split_values(values)
    assert plain["hole_psnr"] is None and plain["psnr"] == 100.0
    assert reasons["hole_temporal_deviation"] == "no frame transition has a hole pixel"


def test_paired_statistics_directions_ties_and_verdicts():
    up = MetricSpec("x", True, 0.01, "dB", "")
    down = MetricSpec("y", False, 0.01, "", "")
    names = [f"c{i}" for i in range(6)]
    base = [10.0] * 6
    better = [10.5, 10.4, 10.6, 10.5, 10.3, 10.005]
    s = compare(up, base, better, names)
    assert (s["wins"], s["ties"], s["losses"], s["verdict"]) == (5, 1, 0, "better")
    assert s["p_delta_gt_0"] == 1.0 and s["p_better"] == 1.0
    s = compare(down, base, better, names)  # the same numbers on a lower-is-better metric: worse
    assert (s["wins"], s["losses"], s["verdict"]) == (0, 5, "worse") and s["p_better"] == 0.0
    noisy = [10.5, 9.5, 10.4, 9.6, 10.1, 9.9]
    assert compare(up, base, noisy, names)["verdict"] == "no significant difference"
    assert compare(up, [10.0], [12.0], ["c0"])["verdict"] == "no significant difference"  # one clip
    s = compare(up, [10.0, None, 10.0], [11.0, 12.0, None], ["a", "b", "c"])
    assert s["n"] == 1 and list(s["deltas"]) == ["a"]
    again = compare(up, base, noisy, names)
    assert again == compare(up, base, noisy, names)  # fixed bootstrap seed


# --------------------------------------------------------------------------- refusals


def _eval(evalset_dir, out, *extra):
    return main(["eval", str(evalset_dir), "--output_dir", str(out), "--no_progress", *extra])


def test_a_changed_file_is_refused_naming_it(evalset_dir, tmp_path, capsys):
    copy = tmp_path / "set"
    shutil.copytree(evalset_dir, copy)
    data = json.loads((copy / es.EVALSET_FILE).read_text())
    clip = data["clips"][2]["name"]
    target = copy / "clips" / clip / "masks" / "00003.png"
    m = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    m[0, 0] = 255 - m[0, 0]
    cv2.imwrite(str(target), m)
    before = tree_files(tmp_path)
    assert _eval(copy, tmp_path / "out", "--model", "a=inpaint") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(target) in err[0] and "changed" in err[0]
    assert tree_files(tmp_path) == before


@pytest.mark.parametrize("case", ["no_equals", "missing_folder", "other_protocol", "empty_split", "unknown_split",
                                  "classical_spec"])
def test_bad_input_is_one_line_and_writes_nothing(case, evalset_dir, video_root, tmp_path, capsys):
    copy = tmp_path / "set"
    shutil.copytree(evalset_dir, copy)
    out = tmp_path / "out"
    if case == "no_equals":
        rc, code = _eval(copy, out, "--model", "base"), 2
    elif case == "missing_folder":
        rc, code = _eval(copy, out, "--backend", "models", "--model", f"base={tmp_path / 'nope'}"), 2
    elif case == "other_protocol":
        data = json.loads((copy / es.EVALSET_FILE).read_text())
        data["protocol"]["name"] = "someone-else"
        (copy / es.EVALSET_FILE).write_text(json.dumps(data))
        rc, code = _eval(copy, out, "--model", "a=inpaint"), 1
    elif case == "empty_split":
        rc, code = main(_evalset_args(video_root, tmp_path / "new", "--split", "test:0")), 2
    elif case == "unknown_split":
        rc, code = _eval(copy, out, "--model", "a=inpaint", "--split", "nosuch"), 2
    else:
        rc, code = _eval(copy, out, "--model", "a=weights/diffuEraser", "--backend", "classical"), 2
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code and len(err) == 1 and "error" in err[0] and "Traceback" not in err[0], err
    assert not out.exists() and not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- --exclude_evalset


def test_generate_exclude_evalset_never_uses_an_eval_source(evalset_dir, video_root, tmp_path, capsys):
    out = tmp_path / "dpo"
    rc = main(["generate", "--video_root", str(video_root), "--output_dir", str(out), "--nframes", "5",
               "--resolution", "48", "--fps", "30", "--neg_types", "blur", "--no_progress",
               "--exclude_evalset", str(evalset_dir)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "excluded 4 of 5 source(s)" in err
    eval_ids = {c.source["id"] for c in es.load_evalset(evalset_dir).clips}
    made = {fmt.read_video_meta(out, n).source["id"] for n in fmt.complete_videos(out)}
    assert made and not made & eval_ids


def test_trainer_data_selection_drops_eval_sources(evalset_dir, video_root, tmp_path):
    from regdpo.evaluation.exclude import evalset_source_keys, manifest_without_sources
    from regdpo.train.loop import build_parser, check_args

    out = tmp_path / "dpo"
    assert main(["generate", "--video_root", str(video_root), "--output_dir", str(out), "--nframes", "5",
                 "--resolution", "48", "--fps", "30", "--neg_types", "blur", "--no_progress"]) == 0
    manifest, excluded, unknown = manifest_without_sources(out, None, evalset_source_keys(evalset_dir))
    eval_ids = {c.source["id"] for c in es.load_evalset(evalset_dir).clips}
    assert sorted(excluded) == sorted(f"video_{i}" for i in eval_ids) and not unknown
    assert [v.name for v in manifest.videos] == [f"video_src{k}" for k in range(SOURCES) if f"src{k}" not in eval_ids]
    args = build_parser().parse_args(["--base_model_name_or_path", "x", "--vae_path", "x", "--diffueraser_path", "x",
                                      "--dpo_data_root", str(out), "--exclude_evalset", str(tmp_path / "none")])
    with pytest.raises(Exception, match="--exclude_evalset .*no evalset.json"):
        check_args(args)
    # the training loop's own step: the kept manifest in the run folder, what DPODataset then trains on
    from types import SimpleNamespace

    from regdpo.dataset import DPODataset
    from regdpo.train.loop import manifest_excluding_evalset

    printed = []
    accelerator = SimpleNamespace(is_main_process=True, print=printed.append, wait_for_everyone=lambda: None)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    args.exclude_evalset = str(evalset_dir)
    path = manifest_excluding_evalset(args, accelerator, run_dir)
    assert path == str(run_dir / "manifest.train.json") and "excluded 4 video(s)" in printed[0]
    data = DPODataset(SimpleNamespace(dpo_data_root=str(out), manifest=path, nframes=4, resolution=48),
                      FakeTokenizer())
    assert {p.video for p in data.pairs} == {v.name for v in manifest.videos}


# --------------------------------------------------------------------------- fixtures and the report


@needs_data
def test_evalset_and_eval_on_the_real_fixtures(tmp_path):
    out = tmp_path / "set"
    assert main(["evalset", str(out), "--davis_root", str(DATA / "DAVIS"), "--ytvos_root", str(DATA / "YTBV"),
                 "--split", "dev:1", "--split", "test:2", "--nframes", "8", "--height", "64", "--width", "112",
                 "--no_progress"]) == 0
    data = json.loads((out / es.EVALSET_FILE).read_text())
    assert {c["source"]["dataset"] for c in data["clips"]} <= {"davis", "ytvos"}
    assert len(data["clips"]) == 3
    assert main(["eval", str(out), "--model", "base=inpaint", "--model", "blur=blur", "--output_dir",
                 str(tmp_path / "o"), "--no_progress", "--no_html"]) == 0
    doc = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert doc["comparisons"][0]["metrics"]["hole_psnr"]["n"] == 2


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)")
def test_eval_html_renders_in_headless_chromium(classical_run, tmp_path):
    _, out = classical_run
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", (out / "eval.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-500:]
    assert "blurry vs base" in dom.stdout and "Largest wins" in dom.stdout and "Largest losses" in dom.stdout
    assert "hole_psnr (up)" in dom.stdout and "class=\"delta-plot\"" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,1600", f"--screenshot={shot}", (out / "eval.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1600, 1200)
    assert float(image.std()) > 20  # a table, a plot and frames, not a blank page
