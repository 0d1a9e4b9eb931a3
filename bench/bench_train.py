"""Region-Reg-DPO training step: seconds and peak memory per step, and the reference's memory.

Tiny randomly initialised DiffuEraser modules (``regdpo.backends.models_tiny``, the real
classes from a DiffuEraser checkout), on CPU, one synthetic ``DPODataset``-shaped batch.
For each ``--train_modules`` (motion, spatial, both), in one run:

- seconds per optimizer step (DPO step + backward + AdamW), mean over ``--steps`` after one warm-up;
- peak resident memory of the process (Linux VmHWM; each configuration in a fresh process);
- the reference's bytes (frozen copies of only the trained parameters) against a full copy of
  BrushNet + the motion UNet; ``motion+full_reference`` trains the motion modules with a frozen
  copy of every BrushNet and UNet parameter instead, to measure what the small copy saves.

    REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser python bench/bench_train.py
    python bench/bench_train.py --batch 2 --nframes 4 --resolution 64 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from regdpo.backends.models_source import import_source
from regdpo.backends.models_tiny import build_tiny_weights
from regdpo.dataset import region_masks
from regdpo.train.config import DPOStepConfig
from regdpo.train.modules import ReferenceWeights, module_nbytes
from regdpo.train.step import DiffuEraserDPOStep
from regdpo.train.weights import load_modules


def synthetic_batch(batch: int, frames: int, size: int, seed: int = 0) -> dict:
    """Tensors with the keys, shapes and conventions of a collated DPODataset batch."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(batch):
        hole = np.zeros((frames, 1, size, size), np.uint8)
        hole[:, :, size // 4: size // 2, size // 4: 3 * size // 4] = 1
        pos = torch.from_numpy(rng.uniform(-1, 1, (frames, 3, size, size)).astype(np.float32))
        neg = torch.where(torch.from_numpy(hole).bool(), -pos, pos)
        regions = region_masks(hole)
        items.append({"pixel_values_pos": pos, "pixel_values_neg": neg,
                      "conditioning_pos": torch.where(torch.from_numpy(hole).bool(), torch.tensor(-1.0), pos),
                      **regions})
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(args: argparse.Namespace) -> dict:
    """One configuration in this (fresh) process: its seconds per step and peak resident memory."""
    torch.manual_seed(0)
    source = import_source(args.repo)
    m = load_modules(source, base_model_path=str(args.weights / "sd15"), vae_path=str(args.weights / "sd-vae-ft-mse"),
                     diffueraser_path=str(args.weights / "diffuEraser"))
    batch = synthetic_batch(args.batch, args.nframes, args.resolution)
    batch["input_ids"] = m.tokenizer("", padding="max_length", max_length=77,
                                     return_tensors="pt").input_ids.repeat(args.batch, 1)
    mode, _, full = args.measure.partition("+")
    step = DiffuEraserDPOStep(vae=m.vae, text_encoder=m.text_encoder, brushnet=m.brushnet, unet_main=m.unet_main,
                              noise_scheduler=m.noise_scheduler, config=DPOStepConfig(train_modules=mode))
    if full:  # what a frozen copy of the whole denoiser costs: every BrushNet and UNet parameter
        step.reference = ReferenceWeights.copy_of(m.unet_main, m.brushnet, "both")
    opt = torch.optim.AdamW(step.trainable, lr=1e-5)
    generator = torch.Generator().manual_seed(0)
    times = []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        loss, _ = step(batch, generator)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms up (allocator, lazy inits, optimizer state)
            times.append(time.perf_counter() - t0)
    return {"seconds": float(np.mean(times)), "peak_mib": rss_kib("VmHWM") / 1024,
            "ref_bytes": step.reference.nbytes(), "denoiser_bytes": module_nbytes(m.unet_main, m.brushnet),
            "model_bytes": module_nbytes(m.unet_main, m.brushnet, m.vae, m.text_encoder)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=os.environ.get("REGDPO_DIFFUERASER_REPO"))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--nframes", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one configuration per process
    ap.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        build_tiny_weights(Path(tmp), import_source(args.repo))
        print(f"{time.strftime('%Y-%m-%d')}: tiny DiffuEraser on CPU ({torch.get_num_threads()} threads), "
              f"batch {args.batch} pairs x {args.nframes} frames x {args.resolution}^2 "
              f"({2 * args.batch * args.nframes} latents per pass), {args.steps} steps after one warm-up")
        print(f"{'configuration':>22} {'s/step':>7} {'peak RSS MiB':>13} {'reference MiB':>14} {'denoiser/ref':>13}")
        results = {}
        for config in ("motion", "motion+full_reference", "spatial", "both"):
            cmd = [sys.executable, __file__, "--measure", config, "--weights", tmp, "--batch", str(args.batch),
                   "--nframes", str(args.nframes), "--resolution", str(args.resolution), "--steps", str(args.steps)]
            if args.repo:
                cmd += ["--repo", args.repo]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = results[config] = json.loads(out)
            print(f"{config:>22} {r['seconds']:7.2f} {r['peak_mib']:13.1f} {r['ref_bytes'] / 2**20:14.2f} "
                  f"{r['denoiser_bytes'] / r['ref_bytes']:13.2f}")
        a, b = results["motion"], results["motion+full_reference"]
        print(f"motion-only reference: {b['ref_bytes'] / a['ref_bytes']:.2f}x fewer reference bytes than a full "
              f"denoiser copy ({(b['model_bytes']) / a['ref_bytes']:.2f}x fewer than a copy of the whole model); "
              f"peak RSS {a['peak_mib']:.1f} vs {b['peak_mib']:.1f} MiB (ratio {b['peak_mib'] / a['peak_mib']:.3f})")


if __name__ == "__main__":
    main()
