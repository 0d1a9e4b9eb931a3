"""DiffuEraser, driven in memory through its pipeline object.

``DiffuEraser.forward()`` takes file paths (and reads with ``torchvision.io.read_video``,
writes lossy mp4v, deletes the prior file, needs >= 22 frames and a prior). This module
loads the same models the way ``DiffuEraser.__init__`` does, with the user's PCM LoRA path,
and calls ``StableDiffusionDiffuEraserPipeline`` with in-memory frames, masks and start
latents, following the steps ``forward()`` takes inside:

* masked frames = frames with the hole set to black; masks = L-mode 255 = hole (the
  pipeline turns them into BrushNet masks, 1 = valid). The mask is exactly the stored one:
  no threshold-erode-dilate and no feathered blend (the generator composites onto the GT).
* start latents, with a prior: ``vae.encode(prior).latent_dist.sample() * scaling_factor``
  noised by DiffuEraser's ``add_noise(latents, noise, t=0)`` call on an un-stepped UniPC
  scheduler, which is the t=999 noise level; ``noise`` is one ``nframes`` window of seeded
  Gaussian noise tiled over the clip, as forward() makes it.
  Without a prior: full-length unit Gaussian latents ``[T, 4, H/8, W/8]`` from the seeded
  generator (no VAE scaling: the scheduler's ``init_noise_sigma`` is 1).
* renoise (``renoise_timesteps``): the start latents are the GT's VAE latents noised to the first
  of those timesteps by the PCM scheduler's own forward process (``scheduler.add_noise``, the DDPM
  formula), with the same seeded noise window the standard start uses, and the pipeline denoises
  over exactly those timesteps (its ``timesteps`` argument) instead of the standard schedule.
* clips longer than ``2 * nframes`` first get DiffuEraser's key-frame pass on ``nframes``
  evenly spaced frames, whose results then count as known (mask cleared) in the main pass.
* each denoising call covers ``min(nframes, T)`` frames; the pipeline slides that window.

Determinism: one ``torch.Generator`` seeded with the run's seed serves the noise and the
scheduler steps (as in forward()); the VAE's ``sample()`` draws from the global RNG, which
is seeded with the same seed inside ``torch.random.fork_rng`` so other code is unaffected.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..safe_read import read_input_text
from .models_config import PCM_CHECKPOINTS, PCM_MODE


@dataclass
class DiffuEraserRun:
    """Details of one DiffuEraser run, for the meta."""

    seed: int
    num_frames: int
    window: int
    with_prior: bool
    key_frames: list[int]


def key_frame_indices(num_frames: int, window: int) -> list[int]:
    """Frames of DiffuEraser's key-frame pass (only for clips longer than ``2 * window``)."""
    if num_frames <= 2 * window:
        return []
    step = num_frames / window
    return [int(i * step) for i in range(window)]


def tile_window(window: torch.Tensor, length: int) -> torch.Tensor:
    """Repeat a ``[n, ...]`` noise window along dim 0 to ``length`` frames (DiffuEraser's tiling)."""
    reps = math.ceil(length / window.shape[0])
    return window.repeat(reps, *([1] * (window.dim() - 1)))[:length]


def mix_unit(a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
    """``sqrt(1 - w) a + sqrt(w) b`` for ``w = weight``: for independent unit-variance ``a`` and ``b``
    the mix has unit variance and correlation ``sqrt(1 - w)`` with ``a`` (0: ``a``, 1: ``b``).
    Computed in fp32, returned in ``a``'s dtype."""
    w = float(weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"mix weight must be in [0, 1], got {weight}")
    out = math.sqrt(1.0 - w) * a.float() + math.sqrt(w) * b.float()
    return out.to(a.dtype)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Pipeline ``np`` output (float in [0, 1]) -> ``uint8``, rounded as ``numpy_to_pil`` does."""
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


class DiffuEraserRunner:
    """DiffuEraser's models, loaded once; ``run`` inpaints one clip or segment."""

    def __init__(self, source: Any, *, base_model_path: str, vae_path: str, diffueraser_path: str,
                 pcm_weights_path: str, pcm_ckpt: str, device: torch.device, dtype: torch.dtype,
                 nframes: int):
        from diffusers import AutoencoderKL, LCMScheduler, UniPCMultistepScheduler
        from diffusers.schedulers import TCDScheduler
        from transformers import AutoTokenizer, CLIPTextModel

        self.device, self.dtype, self.nframes = device, dtype, int(nframes)
        local = {"local_files_only": True}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vae = AutoencoderKL.from_pretrained(vae_path, **local)
            tokenizer = AutoTokenizer.from_pretrained(base_model_path, subfolder="tokenizer", use_fast=False, **local)
            te_config = json.loads(read_input_text(Path(base_model_path) / "text_encoder" / "config.json", "config file"))
            arch = (te_config.get("architectures") or ["?"])[0]
            if arch != "CLIPTextModel":
                raise ValueError(f"--base_model_path {base_model_path}: text encoder {arch} is not supported "
                                 "(DiffuEraser uses Stable Diffusion 1.5's CLIPTextModel)")
            text_encoder = CLIPTextModel.from_pretrained(base_model_path, subfolder="text_encoder", **local)
            brushnet = source.brushnet_cls.from_pretrained(diffueraser_path, subfolder="brushnet", **local)
            unet_main = source.unet_motion_cls.from_pretrained(diffueraser_path, subfolder="unet_main", **local)
            max_len = unet_main.config.get("motion_max_seq_length", 32)
            if self.nframes > max_len:
                raise ValueError(f"--diffueraser_nframes {self.nframes} exceeds the motion modules' "
                                 f"maximum sequence length {max_len}")
            # the base model's scheduler config, re-read as UniPC as DiffuEraser does
            scheduler = UniPCMultistepScheduler.from_config(_base_scheduler_config(base_model_path))
            self.pipeline = source.pipeline_cls(
                vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet_main, brushnet=brushnet,
                scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            ).to(device, dtype)
            self.pipeline.set_progress_bar_config(disable=True)
            self.noise_scheduler = UniPCMultistepScheduler.from_config(self.pipeline.scheduler.config)
            weight_name, steps, kind = PCM_CHECKPOINTS[pcm_ckpt]
            weight_name = weight_name.format(PCM_MODE)
            self.pipeline.load_lora_weights(str(pcm_weights_path), weight_name=weight_name, subfolder=PCM_MODE)
            if kind == "lcm":
                self.pipeline.scheduler = LCMScheduler()
            else:
                self.pipeline.scheduler = TCDScheduler(
                    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                    beta_schedule="scaled_linear", timestep_spacing="trailing",
                )
        self.pcm_file = str(Path(pcm_weights_path) / PCM_MODE / weight_name)
        self.steps = steps
        schedule = type(self.pipeline.scheduler).from_config(self.pipeline.scheduler.config)
        schedule.set_timesteps(steps)
        self.standard_timesteps = [int(t) for t in schedule.timesteps]
        """The standard inference's timesteps (descending), e.g. ``[999, 499]`` for the 2-step PCM."""
        self.weights_files, self.weights_sha256 = weights_digest(diffueraser_path)
        self.guidance_scale = 0.0  # DiffuEraser always runs PCM without classifier-free guidance
        self.vae = vae
        self.scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(vae.config.latent_channels)

    def close(self) -> None:
        for name in ("pipeline", "noise_scheduler", "vae"):
            if hasattr(self, name):
                delattr(self, name)

    # ------------------------------------------------------------------ pieces
    def _encode(self, frames: np.ndarray) -> torch.Tensor:
        """VAE latents (sampled, scaled) of ``uint8 [T, H, W, 3]`` frames, 4 frames per call."""
        latents = []
        for first in range(0, len(frames), 4):
            x = torch.from_numpy(frames[first:first + 4]).to(self.device).permute(0, 3, 1, 2)
            x = (x.float().div(255) * 2 - 1).to(self.dtype)  # as VaeImageProcessor: fp32, then cast
            latents.append(self.vae.encode(x).latent_dist.sample())
        return torch.cat(latents) * self.vae.config.scaling_factor

    def _denoise(self, masked: list[Image.Image], masks: list[Image.Image], latents: torch.Tensor,
                 window: int, generator: torch.Generator, prompt: str, timesteps: list[int] | None = None):
        from diffusers.utils import logging as diffusers_logging

        level = diffusers_logging.get_verbosity()
        if timesteps is not None:  # a renoise schedule: the scheduler warns it does not start at 999
            diffusers_logging.set_verbosity_error()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # diffusers deprecation notes inside the pipeline
                out = self.pipeline(
                    num_frames=window, prompt=prompt, images=masked, masks=masks,
                    num_inference_steps=None if timesteps is not None else self.steps, timesteps=timesteps,
                    generator=generator, guidance_scale=self.guidance_scale, latents=latents, output_type="np",
                )
        finally:
            diffusers_logging.set_verbosity(level)
        return to_uint8(np.asarray(out.frames)), out.latents

    # ------------------------------------------------------------------ run
    def run(self, frames: np.ndarray, hole: np.ndarray, prior: np.ndarray | None, seed: int,
            prompt: str = "", *, fresh_share: float = 0.0, shared_noise: tuple[int, float] | None = None,
            nframes: int | None = None, renoise_timesteps: list[int] | None = None) -> tuple[np.ndarray, DiffuEraserRun]:
        """DiffuEraser on a clip: raw ``uint8 [T, H, W, 3]`` output (not composited) and run details.

        ``prior`` is ProPainter's result (``uint8 [T, H, W, 3]``) or ``None`` for a pure-noise start.
        ``fresh_share`` in [0, 1) (with a prior): the start latents are ``mix_unit(noised prior,
        fresh noise, fresh_share)``, so 0 is the standard start and values towards 1 a start ever less
        tied to the prior (the hallucination strength). ``shared_noise = (seed0, weight)``: the noise
        window is ``mix_unit(noise of seed0, own noise, weight)``, so two runs that share ``seed0`` have
        noises of correlation ``1 - weight`` (the flicker strength). ``nframes``: the denoising window
        instead of the runner's (the backend's reduced settings after an out-of-memory error).
        ``renoise_timesteps`` (with ``prior=None``): the GT ``frames``' latents noised to the first of these
        timesteps and denoised over them (the renoise negative; module doc).
        """
        num, height, width = hole.shape
        if height % self.scale or width % self.scale:
            raise ValueError(f"DiffuEraser needs sizes that are multiples of {self.scale}, got {width}x{height}")
        window = min(self.nframes if nframes is None else int(nframes), num)
        lat_shape = (self.latent_channels, height // self.scale, width // self.scale)
        from diffusers.utils.torch_utils import randn_tensor

        black = Image.new("L", (width, height), 0)
        masks = [Image.fromarray(np.where(h, np.uint8(255), np.uint8(0)), "L") for h in hole]
        masked = [Image.fromarray(np.where(h[..., None], np.uint8(0), f)) for f, h in zip(frames, hole)]
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        cuda = list(range(torch.cuda.device_count())) if self.device.type == "cuda" else []
        t0 = torch.tensor([0], device=self.device).long()
        fresh = None
        schedule = None
        with torch.random.fork_rng(devices=cuda, device_type="cuda"):
            torch.manual_seed(int(seed))  # VAE sample() uses the global RNG
            if renoise_timesteps is not None:
                if prior is not None or fresh_share or shared_noise is not None:
                    raise ValueError("renoise starts from the GT: no prior, fresh share or shared noise")
                schedule = [int(t) for t in renoise_timesteps]
                noise_window = randn_tensor((window, *lat_shape), generator=generator, device=self.device,
                                            dtype=self.dtype)
                noise = tile_window(noise_window, num)
                clean = self._encode(frames)
                level = torch.tensor([schedule[0]], device=self.device).long()

                def noised(latents: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
                    return self.pipeline.scheduler.add_noise(latents, eps, level)
            elif prior is not None:
                noise_window = randn_tensor((window, *lat_shape), generator=generator, device=self.device,
                                            dtype=self.dtype)
                if shared_noise is not None:
                    base = randn_tensor((window, *lat_shape), generator=torch.Generator(device=self.device)
                                        .manual_seed(int(shared_noise[0])), device=self.device, dtype=self.dtype)
                    noise_window = mix_unit(base, noise_window, shared_noise[1])
                noise = tile_window(noise_window, num)
                if fresh_share > 0.0:
                    fresh = randn_tensor((num, *lat_shape), generator=generator, device=self.device, dtype=self.dtype)
                clean = self._encode(prior)
            else:
                noise = randn_tensor((num, *lat_shape), generator=generator, device=self.device, dtype=self.dtype)
                clean = None
            keys = key_frame_indices(num, window)
            if keys:
                if schedule is not None:
                    start = noised(clean[keys].contiguous(), noise_window)
                elif clean is not None:
                    # contiguous like forward()'s torch.stack (the VAE may return channels-last latents,
                    # and the memory format changes fp16 rounding)
                    start = self.noise_scheduler.add_noise(clean[keys].contiguous(), noise_window, t0)
                    if fresh is not None:
                        start = mix_unit(start, fresh[keys], fresh_share)
                else:
                    start = noise[keys]
                key_images, key_latents = self._denoise([masked[i] for i in keys], [masks[i] for i in keys],
                                                        start, window, generator, prompt, schedule)
                for j, i in enumerate(keys):
                    masked[i] = Image.fromarray(key_images[j])
                    masks[i] = black
                    if clean is not None:
                        clean[i] = key_latents[j]
            if schedule is not None:
                start = noised(clean, noise)
            else:
                start = self.noise_scheduler.add_noise(clean, noise, t0) if clean is not None else noise
            if clean is not None and fresh is not None:
                start = mix_unit(start, fresh, fresh_share)
            images, _ = self._denoise(masked, masks, start, window, generator, prompt, schedule)
        return images[:num], DiffuEraserRun(int(seed), num, window, prior is not None, keys)


WEIGHT_FOLDERS = ("brushnet", "unet_main")
"""The folders of ``--diffueraser_path`` the runner loads (train_region_reg_dpo.py writes both)."""


def weights_digest(diffueraser_path: str | Path) -> tuple[list[str], str]:
    """``(files, sha256)``: the files under ``brushnet/`` and ``unet_main/`` of a DiffuEraser weights folder
    (relative paths, sorted) and the SHA-256 of ``path NUL sha256(file) NUL`` over them: which weights made a
    negative (meta ``generator.backend_settings.diffueraser_weights``), the same for a copy of the folder."""
    import hashlib

    root = Path(diffueraser_path)
    files = sorted(p.relative_to(root).as_posix() for folder in WEIGHT_FOLDERS for p in (root / folder).rglob("*")
                   if p.is_file())
    total = hashlib.sha256()
    for rel in files:
        digest = hashlib.sha256()
        with open(root / rel, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
        total.update(rel.encode() + b"\0" + digest.hexdigest().encode() + b"\0")
    return files, total.hexdigest()


def _base_scheduler_config(base_model_path: str) -> dict[str, Any]:
    """The base model's scheduler config as its own class fills it in (DiffuEraser re-reads that)."""
    import diffusers

    config = diffusers.DDPMScheduler.load_config(base_model_path, subfolder="scheduler", local_files_only=True)
    cls = getattr(diffusers, str(config.get("_class_name", "")), None)
    if cls is None or not hasattr(cls, "from_config"):
        cls = diffusers.PNDMScheduler
    return dict(cls.from_config(config).config)
