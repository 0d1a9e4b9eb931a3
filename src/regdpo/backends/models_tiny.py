"""Tiny, randomly initialised weights in the user's folder layout, for tests and benchmarks.

``build_tiny_weights(root, source)`` makes every folder the ``models`` backend loads, with
the real DiffuEraser / ProPainter classes from the user's checkout (``source`` from
``models_source.import_source``) but tiny sizes where the architecture allows it:

- ``sd15/``           Stable Diffusion 1.5 layout: a 2-layer, 32-wide CLIP text encoder, a
                      byte-level CLIP tokenizer (vocab.json + merges.txt, no download) and
                      the SD 1.5 scheduler config;
- ``sd-vae-ft-mse/``  a 4-block AutoencoderKL with 8 channels (scale factor 8, 4 latent channels);
- ``diffuEraser/``    ``brushnet/`` (``BrushNetModel.from_unet``) and ``unet_main/``
                      (``UNetMotionModel.from_unet2d`` with a ``MotionAdapter``) built from a
                      4-block, 32-channel UNet2D with cross-attention width 32;
- ``PCM_Weights/sd15/`` a rank-4 LoRA on the UNet's attention projections, saved with
                      diffusers' ``save_lora_weights`` under the PCM file name of each checkpoint;
- ``propainter/``     ProPainter.pth, recurrent_flow_completion.pth, raft-things.pth: the real
                      architectures (they have no size options), randomly initialised.

The outputs are noise, but every loader, adapter and pipeline path runs for real.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterable

from .models_config import PCM_CHECKPOINTS, PCM_MODE

SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
"""Stable Diffusion 1.5's ``scheduler/scheduler_config.json``."""


def build_tiny_weights(root: str | Path, source: Any, *, seed: int = 0,
                       pcm_ckpts: Iterable[str] = ("2-Step",)) -> dict[str, str]:
    """Write tiny weights under ``root``; return the ``ModelsConfig`` path fields pointing at them."""
    import torch

    root = Path(root)
    torch.manual_seed(seed)
    paths = {
        "base_model_path": root / "sd15",
        "vae_path": root / "sd-vae-ft-mse",
        "diffueraser_path": root / "diffuEraser",
        "propainter_model_dir": root / "propainter",
        "pcm_weights_path": root / "PCM_Weights",
    }
    with torch.no_grad():
        _text_model(paths["base_model_path"])
        _vae(paths["vae_path"])
        unet = _unets(paths["diffueraser_path"], source)
        _pcm_lora(paths["pcm_weights_path"], unet, pcm_ckpts)
        _propainter(paths["propainter_model_dir"], source)
    return {k: str(v) for k, v in paths.items()}


def _text_model(base: Path) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    (base / "scheduler").mkdir(parents=True, exist_ok=True)
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER, indent=2))
    # like SD 1.5's model_index.json, listing only what this tiny folder holds (DiffuEraser's own
    # loader calls DiffusionPipeline.from_pretrained on this folder; the backend does not need it)
    (base / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.29.2",
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }, indent=2))
    chars = list(bytes_to_unicode().values())
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    vocab = {t: i for i, t in enumerate(tokens)}
    raw = base / "tokenizer_src"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "vocab.json").write_text(json.dumps(vocab))
    (raw / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(str(base / "tokenizer"))
    for f in raw.iterdir():
        f.unlink()
    raw.rmdir()
    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    CLIPTextModel(config).save_pretrained(str(base / "text_encoder"))


def _vae(folder: Path) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8), sample_size=128,
    )
    vae.save_pretrained(str(folder))


def _unets(folder: Path, source: Any):
    unet = source.unet2d_cls(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(32, 32, 32, 32), cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    )
    brushnet = source.brushnet_cls.from_unet(unet)
    adapter = source.motion_adapter_cls(
        block_out_channels=(32, 32, 32, 32), motion_layers_per_block=1, motion_num_attention_heads=2,
        motion_norm_num_groups=32, motion_max_seq_length=32,
    )
    unet_main = source.unet_motion_cls.from_unet2d(unet, adapter)
    unet_main.register_to_config(time_cond_proj_dim=None)
    brushnet.save_pretrained(str(folder / "brushnet"))
    unet_main.save_pretrained(str(folder / "unet_main"))
    return unet


def _pcm_lora(folder: Path, unet: Any, ckpts: Iterable[str]) -> None:
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for name, param in unet.named_parameters():
        if "lora_B" in name:  # peft starts B at zero (a no-op LoRA); make it change the UNet
            param.copy_(torch.randn_like(param) * 0.02)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    for ckpt in ckpts:
        name = PCM_CHECKPOINTS[ckpt][0].format(PCM_MODE)
        StableDiffusionPipeline.save_lora_weights(str(folder / PCM_MODE), unet_lora_layers=layers,
                                                  weight_name=name)


def _propainter(folder: Path, source: Any) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(small=False, mixed_precision=False, alternate_corr=False)
    raft = torch.nn.DataParallel(source.raft_cls(args))  # raft-things.pth keys carry "module."
    torch.save(raft.state_dict(), folder / "raft-things.pth")
    torch.save(source.flow_complete_cls().state_dict(), folder / "recurrent_flow_completion.pth")
    torch.save(source.inpainter_cls(init_weights=True).state_dict(), folder / "ProPainter.pth")
