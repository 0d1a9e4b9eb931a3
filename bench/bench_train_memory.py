"""Region-Reg-DPO training memory at DiffuEraser's real size (``bench_train.py --memory full|gpu``).

``full`` (any machine, no GPU, no memory): the published sizes (``models_tiny.FULL``: SD 1.5 UNet ->
BrushNet and the motion UNet with the AnimateDiff v1-5-2 motion modules, sd-vae-ft-mse, CLIP ViT-L/14
text encoder) built with the real DiffuEraser classes on the ``meta`` device; for one pair (two videos
of F frames) the real ``DiffuEraserDPOStep.policy_mse`` pass is run on meta tensors and the bytes
autograd saves for backward are counted (``regdpo.train.memory``), without checkpointing, with
diffusers' own (``blocks``) and with the training script's (``all``). Weights, gradients, optimizer
state and reference bytes come from the parameter counts. Printed: markdown tables (the ones in
docs/training.md) and "what fits" in 24 / 48 / 80 GB.

``gpu`` (a CUDA device): one real DPO step (policy + reference passes, backward, AdamW) with random
full-size weights at one frames x resolution, ``torch.cuda.max_memory_allocated`` beside the meta
count of the same configuration.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from regdpo.train.memory import policy_saved_bytes

GB = 10**9
GIB = 2**30
CARDS_GB = (24, 48, 80)
HEADROOM = 0.85
"""Share of a card the count may fill: the rest for what it does not count (the VAE encoding the batch,
autocast's half-precision weight copies, CUDA / cuBLAS workspaces, the allocator's fragmentation)."""
MAX_FRAMES = 32  # the motion modules' motion_max_seq_length
STATIC_HEADER = "| --train_modules | trained M | frozen M | precision | optimizer | weights GiB | gradients GiB | optimizer GiB | reference GiB | total GiB |"
SAVED_HEADER = "| --train_modules | checkpointing | frames x side | activations | saved for backward GiB | + largest recomputed block GiB | checkpoint calls |"
FITS_HEADER = "| --train_modules | checkpointing | side | 24 GB | 48 GB | 80 GB |"


def meta_models(source: Any, sizes: Any = None) -> dict[str, Any]:
    """BrushNet, motion UNet, VAE and text encoder of ``sizes`` (default ``FULL``) on the meta device."""
    from regdpo.backends.models_tiny import FULL, _text_encoder, _unet_models, _vae_model, byte_level_vocab

    sizes = sizes or FULL
    with torch.device("meta"):
        _, brushnet, unet_main = _unet_models(sizes, source)
        vae = _vae_model(sizes.vae)
        text_encoder = _text_encoder(sizes.text, byte_level_vocab())
    return {"brushnet": brushnet, "unet_main": unet_main, "vae": vae, "text_encoder": text_encoder}


def static_rows(models: dict[str, Any]) -> list[dict[str, Any]]:
    from regdpo.train.memory import parameter_split, static_bytes

    rows = []
    for tm in ("motion", "spatial", "both"):
        split = parameter_split(models["unet_main"], models["brushnet"], models["vae"], models["text_encoder"], tm)
        for precision in ("no", "bf16"):
            for optimizer in ("adamw", "adamw8bit"):
                rows.append({"train_modules": tm, "precision": precision, "optimizer": optimizer, **split,
                             "bytes": static_bytes(split["trained"], split["frozen_in_trained"],
                                                   split["frozen_modules"], precision, optimizer)})
    return rows


def frames_that_fit(card_gb: int, static: int, per_frame: float, fixed: float, recompute_per_frame: float) -> int:
    """The most frames (<= MAX_FRAMES) whose count fits ``HEADROOM`` of the card; 0 if none."""
    budget = HEADROOM * card_gb * GB - static
    best = 0
    for f in range(1, MAX_FRAMES + 1):
        if fixed + (per_frame + recompute_per_frame) * f <= budget:
            best = f
    return best


def run_full(source: Any, frames_list: list[int], sides: list[int], sizes: Any = None) -> dict[str, Any]:
    """Every table of ``--memory full`` (``sizes``: default ``FULL``); returns the figures."""
    t0 = time.perf_counter()
    models = meta_models(source, sizes)
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    print(f"{time.strftime('%Y-%m-%d')}: {(sizes.name if sizes else 'full')}-size DiffuEraser on the meta device (regdpo.train.memory): "
          f"unet_main {params['unet_main'] / 1e6:.1f} M, BrushNet {params['brushnet'] / 1e6:.1f} M, "
          f"VAE {params['vae'] / 1e6:.1f} M, text encoder {params['text_encoder'] / 1e6:.1f} M parameters")
    rows = static_rows(models)
    motion = next(r for r in rows if r["train_modules"] == "motion")
    denoiser = params["unet_main"] + params["brushnet"]
    print(f"reference: a motion-only reference holds {denoiser / motion['trained']:.2f}x fewer bytes than a frozen "
          f"copy of BrushNet + the motion UNet ({motion['trained'] / 1e6:.1f} M of {denoiser / 1e6:.1f} M parameters)")
    print("\nWeights, gradients, optimizer state and reference of one process (GiB):\n")
    print(STATIC_HEADER)
    print("|---" * (STATIC_HEADER.count("|") - 1) + "|")
    for r in rows:
        b = r["bytes"]
        print(f"| {r['train_modules']} | {r['trained'] / 1e6:.1f} | {(r['frozen_in_trained'] + r['frozen_modules']) / 1e6:.1f} "
              f"| {r['precision']} | {r['optimizer']} | {(b['trained_weights'] + b['frozen_weights']) / GIB:.2f} "
              f"| {b['gradients'] / GIB:.2f} | {b['optimizer'] / GIB:.2f} | {b['reference'] / GIB:.2f} | {b['total'] / GIB:.2f} |")
    print("\nActivations saved for backward, one pair (2 videos x frames), batch 1 (GiB):\n")
    print(SAVED_HEADER)
    print("|---" * (SAVED_HEADER.count("|") - 1) + "|")
    saved: dict[tuple, dict[str, Any]] = {}
    big_f, big_s = max(frames_list), max(sides)
    cases = [(tm, ck, f, s, "bf16") for tm in ("motion", "spatial", "both") for ck in ("off", "all")
             for s in sides for f in frames_list]
    cases += [(tm, "blocks", big_f, big_s, "bf16") for tm in ("motion", "spatial", "both")]
    cases += [(tm, ck, big_f, big_s, "fp32") for tm in ("motion", "spatial", "both") for ck in ("off", "all")]
    for tm, ck, f, s, act in sorted(cases, key=lambda c: (c[0], ("off", "blocks", "all").index(c[1]), c[3], c[2], c[4])):
        r = saved[(tm, ck, f, s, act)] = policy_saved_bytes(models, tm, ck, f, s,
                                                            torch.bfloat16 if act == "bf16" else torch.float32)
        print(f"| {tm} | {ck} | {f} x {s} | {act} | {r['saved'] / GIB:.2f} | {r['recompute'] / GIB:.2f} | {r['calls']} |")
    print(f"\nWhat fits (bf16 activations, AdamW, --mixed_precision bf16, batch 1): the most frames per pair (at most "
          f"{MAX_FRAMES}) whose weights + gradients + optimizer + reference + saved activations + largest recomputed "
          f"block stay within {HEADROOM:.0%} of the card; 0: not even one frame:\n")
    print(FITS_HEADER)
    print("|---" * (FITS_HEADER.count("|") - 1) + "|")
    fits = {}
    lo, hi = min(frames_list), max(frames_list)
    for tm in ("motion", "spatial", "both"):
        static = next(r for r in rows if (r["train_modules"], r["precision"], r["optimizer"]) == (tm, "bf16", "adamw"))
        for ck in ("off", "all"):
            for s in sides:
                a, b = saved[(tm, ck, lo, s, "bf16")], saved[(tm, ck, hi, s, "bf16")]
                slope = (b["saved"] - a["saved"]) / (hi - lo) if hi > lo else b["saved"] / hi
                fixed = b["saved"] - slope * hi
                rslope = b["recompute"] / hi
                counts = [frames_that_fit(c, static["bytes"]["total"], slope, fixed, rslope) for c in CARDS_GB]
                fits[(tm, ck, s)] = counts
                print(f"| {tm} | {ck} | {s} | " + " | ".join(str(n) for n in counts) + " |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return {"params": params, "static": rows, "saved": saved, "fits": fits}


def run_gpu(source: Any, frames: int, side: int, train_modules: str, checkpointing: str, precision: str,
            device: str, sizes: Any = None) -> dict[str, Any]:
    """One real DPO step with random weights of ``sizes`` (default ``FULL``) on ``device``: peak
    ``torch.cuda.max_memory_allocated`` beside the meta count of the same configuration (on a CPU the
    peak is not measured: the tests run it at tiny size). Pending a GPU run (docs/training.md)."""
    import numpy as np

    from diffusers import DDPMScheduler

    from regdpo.backends.models_tiny import FULL, _text_encoder, _unet_models, _vae_model, byte_level_vocab
    from regdpo.dataset import region_masks
    from regdpo.train.config import DPOStepConfig
    from regdpo.train.modes import enable_gradient_checkpointing
    from regdpo.train.step import DiffuEraserDPOStep

    sizes = sizes or FULL
    dev = torch.device(device)
    dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    with torch.device(dev):
        _, brushnet, unet_main = _unet_models(sizes, source)
        vae = _vae_model(sizes.vae).to(dtype)
        text_encoder = _text_encoder(sizes.text, byte_level_vocab()).to(dtype)
    step = DiffuEraserDPOStep(vae=vae, text_encoder=text_encoder, brushnet=brushnet, unet_main=unet_main,
                              noise_scheduler=DDPMScheduler(), config=DPOStepConfig(train_modules=train_modules),
                              weight_dtype=dtype)
    if not step.reference.covers("brushnet"):
        brushnet.to(dtype)
    if checkpointing != "off":
        enable_gradient_checkpointing(unet_main, brushnet, train_modules, scope=checkpointing)
    optimizer = torch.optim.AdamW(step.trainable, lr=1e-6)
    hole = np.zeros((frames, 1, side, side), np.uint8)
    hole[:, :, side // 4: side // 2, side // 4: 3 * side // 4] = 1
    pos = torch.rand(1, frames, 3, side, side) * 2 - 1
    batch = {"pixel_values_pos": pos, "pixel_values_neg": -pos, "conditioning_pos": pos,
             **{k: v[None] for k, v in region_masks(hole).items()},
             "input_ids": torch.zeros(1, 77, dtype=torch.long)}
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    loss, _ = step(batch, torch.Generator(device=dev).manual_seed(0))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev) if cuda else None
    meta = policy_saved_bytes(meta_models(source, sizes), train_modules, checkpointing, frames, side,
                      torch.float32 if precision == "no" else torch.bfloat16)
    print(f"{time.strftime('%Y-%m-%d')}: one real DPO step, random full-size weights, {device}, --train_modules "
          f"{train_modules}, checkpointing {checkpointing}, --mixed_precision {precision}, 1 pair x {frames} x {side}: "
          f"{seconds:.1f} s; peak allocated "
          + (f"{peak / GIB:.2f} GiB" if peak is not None else "not measured (no CUDA)")
          + f"; meta count: saved {meta['saved'] / GIB:.2f} GiB + recompute {meta['recompute'] / GIB:.2f} GiB")
    return {"peak": peak, "seconds": seconds, "meta": meta}
