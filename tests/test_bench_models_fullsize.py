"""bench/bench_models_fullsize.py: the tiny-size smoke run on CPU writes a complete JSON of figures,
and the full-size config builds the published parameter counts (on the meta device: no memory).

Needs a DiffuEraser checkout and the models packages (as the contract tests); skips otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from model_fixtures import DE_REPO, needs_diffueraser

pytestmark = needs_diffueraser()

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_models_fullsize.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_models_fullsize", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_models_fullsize", module)
    spec.loader.exec_module(module)
    return module


def test_full_sizes_are_the_published_ones():
    import torch

    from regdpo.backends.models_source import import_source
    from regdpo.backends.models_tiny import FULL, build_modules

    with torch.device("meta"):
        models = build_modules(import_source(DE_REPO), FULL)
    for name, count in FULL.published_params.items():
        assert models.params[name] == count, name
    p = models.params
    assert p["motion_modules"] == p["unet_main"] - p["unet2d"] > 400_000_000  # AnimateDiff v1-5-2: ~453 M
    assert p["unet2d"] < p["brushnet"] < 1.1 * p["unet2d"]  # DiffuEraser's BrushNet: a UNet copy + zero convs
    assert p["propainter_generator"] > 39_000_000 and p["raft"] > 5_000_000


def test_tiny_smoke_run_writes_every_figure(tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "figures.json"
    assert bench.main(["--size", "tiny", "--device", "cpu", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert report["size"] == "tiny" and report["dtype"] == "fp32" and report["clip"]["frames"] == 4
    assert report["machine"]["device"] == "cpu" and "gpu" not in report["machine"]
    assert set(report["videos"]) == {"standard", "generator_default"}
    for video in report["videos"].values():
        assert video["seconds"] > 0 and video["peak_gpu_mib"] is None and len(video["seconds_all"]) == 1
    stages = report["stages"]
    for name, *_ in bench.STAGES:
        assert stages[name]["seconds"] > 0 and stages[name]["calls"] >= 1, name
    assert stages["diffueraser.denoising"]["calls"] == stages["diffueraser.brushnet"]["calls"] * 2
    assert stages["diffueraser.brushnet"]["calls"] == report["settings"]["steps"]  # one window of 4 frames
    assert report["params"]["unet_main"] == report["params"]["unet2d"] + report["params"]["motion_modules"]
    assert set(report["ratios"]) >= {"diffueraser_over_propainter", "denoising_share_of_diffueraser"}
    assert "say nothing about GPU speed" in printed and "ratios measured in this run" in printed


def test_bad_clip_size_is_one_line(capsys):
    bench = load_bench()
    assert bench.main(["--size", "tiny", "--device", "cpu", "--height", "100", "--params-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--height 100" in err
