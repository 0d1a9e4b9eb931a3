"""Region-Reg-DPO training step: seconds and peak memory per step, and the reference's memory.

Tiny randomly initialised DiffuEraser modules (``regdpo.backends.models_tiny``, the real
classes from a DiffuEraser checkout), on CPU, one synthetic ``DPODataset``-shaped batch.
For each ``--train_modules`` (motion, spatial, both), in one run:

- seconds per optimizer step (DPO step + backward + AdamW): the median over ``--steps`` after one
  warm-up, wall-clock and the process's CPU seconds (all threads; less sensitive to other jobs on a
  shared machine than the wall clock);
- peak resident memory of the process (Linux VmHWM; each configuration in a fresh process);
- the reference's bytes (frozen copies of only the trained parameters) against a full copy of
  BrushNet + the motion UNet; ``motion+full_reference`` trains the motion modules with a frozen
  copy of every BrushNet and UNet parameter instead, to measure what the small copy saves.

It prints a markdown table (the one in docs/training.md, pasted with the date).

``--memory full``: the memory of a step at DiffuEraser's real size, counted on the meta device (no
GPU, no memory; ``bench_train_memory.py``); ``--memory gpu``: one real full-size step on CUDA.

    REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser python bench/bench_train.py
    python bench/bench_train.py --batch 2 --nframes 4 --resolution 64 --steps 3
    python bench/bench_train.py --memory full
    python bench/bench_train.py --memory gpu --nframes 22 --resolution 512 --train_modules motion
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
    times, cpu = [], []
    for i in range(args.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        loss, _ = step(batch, generator)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms up (allocator, lazy inits, optimizer state)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return {"seconds": float(np.median(times)), "cpu_seconds": float(np.median(cpu)),
            "peak_mib": rss_kib("VmHWM") / 1024,
            "ref_bytes": step.reference.nbytes(), "denoiser_bytes": module_nbytes(m.unet_main, m.brushnet),
            "model_bytes": module_nbytes(m.unet_main, m.brushnet, m.vae, m.text_encoder)}


CONFIGURATIONS = ("motion", "motion+full_reference", "spatial", "both")
SPEED_HEADER = "| configuration | s/step | CPU s/step | peak RSS MiB | reference MiB | full denoiser copy / reference |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=os.environ.get("REGDPO_DIFFUERASER_REPO"))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--nframes", type=int, default=None, help="frames per clip (default 4; --memory gpu: 22)")
    ap.add_argument("--resolution", type=int, default=None, help="side (default 64; --memory gpu: 512)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--memory", choices=("full", "gpu"), default=None,
                    help="full: memory at the real size on the meta device; gpu: one real full-size step on CUDA")
    ap.add_argument("--frames", default="10,22", help="--memory full: frames per pair counted (comma-separated)")
    ap.add_argument("--sides", default="256,512", help="--memory full: crop sides counted (comma-separated)")
    ap.add_argument("--train_modules", default="motion", help="--memory gpu: motion, spatial or both")
    ap.add_argument("--checkpointing", default="all", help="--memory gpu: off, blocks or all")
    ap.add_argument("--mixed_precision", default="bf16", help="--memory gpu: no, fp16 or bf16")
    ap.add_argument("--device", default="cuda", help="--memory gpu: the device")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one configuration per process
    ap.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_train_memory as mem

        source = import_source(args.repo)
        if args.memory == "full":
            mem.run_full(source, [int(v) for v in args.frames.split(",")], [int(v) for v in args.sides.split(",")])
        else:
            mem.run_gpu(source, args.nframes or 22, args.resolution or 512, args.train_modules, args.checkpointing,
                        args.mixed_precision, args.device)
        return
    args.nframes, args.resolution = args.nframes or 4, args.resolution or 64
    if args.measure:
        print(json.dumps(measure(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        build_tiny_weights(Path(tmp), import_source(args.repo))
        print(f"{time.strftime('%Y-%m-%d')}: tiny DiffuEraser on CPU ({torch.get_num_threads()} threads), "
              f"batch {args.batch} pairs x {args.nframes} frames x {args.resolution}^2 "
              f"({2 * args.batch * args.nframes} latents per pass), median of {args.steps} steps after one warm-up, "
              f"each configuration in a fresh process\n")
        print(SPEED_HEADER)
        print("|---" * (SPEED_HEADER.count("|") - 1) + "|")
        results = {}
        for config in CONFIGURATIONS:
            cmd = [sys.executable, __file__, "--measure", config, "--weights", tmp, "--batch", str(args.batch),
                   "--nframes", str(args.nframes), "--resolution", str(args.resolution), "--steps", str(args.steps)]
            if args.repo:
                cmd += ["--repo", args.repo]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = results[config] = json.loads(out)
            print(f"| {config.replace('+', ' + ').replace('_', ' ')} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} "
                  f"| {r['peak_mib']:.1f} | {r['ref_bytes'] / 2**20:.2f} | {r['denoiser_bytes'] / r['ref_bytes']:.2f} |")
        a, b = results["motion"], results["motion+full_reference"]
        print(f"\nmotion-only reference: {b['ref_bytes'] / a['ref_bytes']:.2f}x fewer reference bytes than a full "
              f"denoiser copy ({(b['model_bytes']) / a['ref_bytes']:.2f}x fewer than a copy of the whole model); "
              f"peak RSS {a['peak_mib']:.1f} vs {b['peak_mib']:.1f} MiB (ratio {b['peak_mib'] / a['peak_mib']:.3f})")


if __name__ == "__main__":
    main()
