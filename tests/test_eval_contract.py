"""Contract test of `regdpo eval --backend models` on the real DiffuEraser / ProPainter classes with tiny random
weights (``models_tiny``), on CPU: the base weights against the output of a 3-step Region-Reg-DPO run.

Needs a DiffuEraser checkout (``REGDPO_DIFFUERASER_REPO``), the ``[models]`` extra (accelerate included) and a
working torchvision; otherwise it skips and says why::

    REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser pytest tests/test_eval_contract.py
"""

from __future__ import annotations

import json

import numpy as np

from helpers import write_pair_dataset
from model_fixtures import DE_REPO, run_flags, run_train, textured_evalset, training_marks

pytestmark = training_marks()
FRAMES, SIZE = 4, 128  # ProPainter's RAFT needs a 128 px short side at the working ratio


def test_base_and_a_three_step_dpo_run_compared_with_the_models_backend(tiny_weights, tmp_path, capsys):
    from skimage.metrics import peak_signal_noise_ratio

    from regdpo import format as fmt
    from regdpo.cli import main
    from regdpo.evaluation.evalset import load_evalset
    from regdpo.evaluation.metrics import PIXEL_SPECS
    from regdpo.frames import read_rgb

    paths = tiny_weights.paths
    # a 3-step DPO run from the tiny base weights (as tests/test_train_contract.py)
    data = write_pair_dataset(tmp_path / "dpo_data", neg_types=("blur", "hallucination"))
    dpo = tmp_path / "dpo_run"
    proc = run_train(paths, "--dpo_data_root", data, "--output_dir", dpo, *run_flags(), "--max_train_steps", "3",
                     "--checkpointing_steps", "100")
    assert proc.returncode == 0, proc.stderr[-3000:]

    evalset = textured_evalset(tmp_path, FRAMES, SIZE)

    out = tmp_path / "eval"
    shared = ["--base_model_path", paths["base_model_path"], "--vae_path", paths["vae_path"],
              "--propainter_model_dir", paths["propainter_model_dir"], "--pcm_weights_path", paths["pcm_weights_path"],
              "--device", "cpu", "--diffueraser_nframes", "4", "--propainter_resize_ratio", "1.0",
              "--propainter_raft_iter", "1"]
    if DE_REPO:
        shared += ["--diffueraser_repo", DE_REPO]
    rc = main(["eval", str(evalset), "--backend", "models", "--model", f"base={paths['diffueraser_path']}",
               "--model", f"dpo={dpo}", "--output_dir", str(out),
               "--save_frames", "--no_progress", "--no_html", *shared])
    assert rc == 0, capsys.readouterr().err[-3000:]
    doc = json.loads((out / "eval.json").read_text())
    names = [s.name for s in PIXEL_SPECS]
    assert [m["name"] for m in doc["models"]] == ["base", "dpo"] and not doc["failed"]
    assert doc["models"][1]["settings"]["weights"] == str(dpo)
    for row in doc["clips"]:
        for model in ("base", "dpo"):
            assert all(isinstance(row[model][n], float) for n in names), (row["name"], model)
    (dpo_vs_base,) = doc["comparisons"]
    for n in names:
        s = dpo_vs_base["metrics"][n]
        assert s["n"] == 2 and s["wins"] + s["ties"] + s["losses"] == 2 and s["verdict"] in (
            "better", "worse", "no significant difference")
    assert any(dpo_vs_base["metrics"][n]["mean_delta"] != 0 for n in names)  # the run changed the model
    # every reported PSNR recomputed from the saved lossless frames
    es = load_evalset(evalset)
    for clip in es.clips:
        gt, hole = es.read_clip(clip)
        row = next(r for r in doc["clips"] if r["name"] == clip.name)
        for model in ("base", "dpo"):
            frames = np.stack([read_rgb(out / "frames" / model / clip.name / fmt.frame_name(i)) for i in range(FRAMES)])
            whole = np.mean([min(100.0, peak_signal_noise_ratio(g, f, data_range=255)) for g, f in zip(gt, frames)])
            assert abs(whole - row[model]["psnr"]) < 1e-3
            assert abs(peak_signal_noise_ratio(gt[hole], frames[hole], data_range=255) - row[model]["hole_psnr"]) < 1e-3
