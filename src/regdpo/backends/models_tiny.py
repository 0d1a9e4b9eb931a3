"""Randomly initialised DiffuEraser / ProPainter weights in the user's folder layout.

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

The sizes are one typed config, ``ModelSizes``: ``TINY`` (above) and ``FULL``, the published
configurations (Stable Diffusion 1.5's UNet, sd-vae-ft-mse, SD 1.5's CLIP ViT-L/14 text encoder,
the AnimateDiff v1-5-2 motion adapter DiffuEraser trains from), so ``build_weights(root, source,
FULL)`` gives random weights of the real sizes for benchmarks (``bench/bench_models_fullsize.py``)
with the same code. ``build_modules`` builds them in memory only (no files).

The outputs are noise, but every loader, adapter and pipeline path runs for real.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
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


# ---------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class TextEncoderSize:
    """CLIP text encoder widths; ``vocab_size=None`` = the byte-level tokenizer's own vocabulary."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    projection_dim: int
    vocab_size: int | None = None


@dataclass(frozen=True)
class VaeSize:
    """AutoencoderKL with four blocks (scale factor 8) and 4 latent channels."""

    block_out_channels: tuple[int, int, int, int]
    layers_per_block: int
    norm_num_groups: int
    sample_size: int


@dataclass(frozen=True)
class UNetSize:
    """The SD-1.5-layout UNet2D (3 cross-attention blocks + 1 plain, each way) BrushNet and the
    motion UNet are built from."""

    block_out_channels: tuple[int, int, int, int]
    layers_per_block: int
    cross_attention_dim: int
    attention_head_dim: int
    norm_num_groups: int
    sample_size: int


@dataclass(frozen=True)
class MotionSize:
    """The ``MotionAdapter`` (AnimateDiff motion modules); its block widths are the UNet's."""

    layers_per_block: int
    mid_block_layers_per_block: int
    num_attention_heads: int
    norm_num_groups: int
    max_seq_length: int
    use_mid_block: bool = True


@dataclass(frozen=True)
class ModelSizes:
    """Every size ``build_modules`` needs. ``published_params``: parameter counts of the published
    models these sizes reproduce (empty for ``TINY``), to check a build against."""

    name: str
    text: TextEncoderSize
    vae: VaeSize
    unet: UNetSize
    motion: MotionSize
    lora_rank: int
    published_params: dict[str, int] = field(default_factory=dict)


TINY = ModelSizes(
    name="tiny",
    text=TextEncoderSize(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         projection_dim=32),
    vae=VaeSize(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=8, sample_size=128),
    unet=UNetSize(block_out_channels=(32, 32, 32, 32), layers_per_block=1, cross_attention_dim=32,
                  attention_head_dim=8, norm_num_groups=32, sample_size=16),
    motion=MotionSize(layers_per_block=1, mid_block_layers_per_block=1, num_attention_heads=2,
                      norm_num_groups=32, max_seq_length=32),
    lora_rank=4,
)
"""Tiny sizes for tests and CPU benches (seconds to build, megabytes on disk)."""

FULL = ModelSizes(
    name="full",
    # SD 1.5 text_encoder/config.json (CLIP ViT-L/14 text tower)
    text=TextEncoderSize(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                         projection_dim=768, vocab_size=49408),
    # sd-vae-ft-mse config.json
    vae=VaeSize(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=256),
    # SD 1.5 unet/config.json
    unet=UNetSize(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                  attention_head_dim=8, norm_num_groups=32, sample_size=64),
    # animatediff-motion-adapter-v1-5-2 config.json (DiffuEraser's stage-2 training starts from it)
    motion=MotionSize(layers_per_block=2, mid_block_layers_per_block=1, num_attention_heads=8,
                      norm_num_groups=32, max_seq_length=32),
    # the PCM LoRA's rank is not read from the published file here (nothing is downloaded); 64 is
    # the rank of the SD 1.5 consistency LoRAs it follows (LCM-LoRA)
    lora_rank=64,
    published_params={"unet2d": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
)
"""The published sizes: SD 1.5 UNet (859.5 M parameters), sd-vae-ft-mse (83.7 M), CLIP ViT-L/14
text encoder (123.1 M), AnimateDiff v1-5-2 motion modules; ProPainter's networks are always real."""

SIZES = {"tiny": TINY, "full": FULL}


@dataclass
class BuiltModels:
    """Randomly initialised modules (CPU, fp32) as ``build_modules`` returns them.

    ``lora_layers``: the PCM-style LoRA in diffusers' naming, as ``save_lora_weights`` takes it.
    ``params``: parameter counts per network (``unet2d`` = the plain UNet before LoRA and motion
    modules; ``motion_modules`` = ``unet_main`` minus the UNet it was built from).
    """

    sizes: ModelSizes
    vocab: dict[str, int]
    text_encoder: Any
    vae: Any
    brushnet: Any
    unet_main: Any
    lora_layers: dict[str, Any]
    raft: Any
    flow_complete: Any
    inpainter: Any
    params: dict[str, int]


def count_params(module: Any) -> int:
    """Number of parameters of a ``torch.nn.Module``."""
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------- building


def build_tiny_weights(root: str | Path, source: Any, *, seed: int = 0,
                       pcm_ckpts: Iterable[str] = ("2-Step",)) -> dict[str, str]:
    """Write tiny weights under ``root``; return the ``ModelsConfig`` path fields pointing at them."""
    return build_weights(root, source, TINY, seed=seed, pcm_ckpts=pcm_ckpts)


def build_weights(root: str | Path, source: Any, sizes: ModelSizes, *, seed: int = 0,
                  pcm_ckpts: Iterable[str] = ("2-Step",), save_dtype: Any = None) -> dict[str, str]:
    """Build modules of ``sizes`` and write them under ``root``; return the ``ModelsConfig`` path
    fields. ``save_dtype`` (e.g. ``torch.float16``) stores the diffusers / CLIP weights in that
    precision (half the disk at full size); ProPainter's networks are stored in fp32."""
    models = build_modules(source, sizes, seed=seed)
    return save_modules(root, models, pcm_ckpts=pcm_ckpts, save_dtype=save_dtype)


def build_modules(source: Any, sizes: ModelSizes = TINY, *, seed: int = 0) -> BuiltModels:
    """Every network the backend loads, randomly initialised with the real classes, in memory."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        vocab = byte_level_vocab()
        text_encoder = _text_encoder(sizes.text, vocab)
        vae = _vae_model(sizes.vae)
        unet, brushnet, unet_main = _unet_models(sizes, source)
        params = {"text_encoder": count_params(text_encoder), "vae": count_params(vae),
                  "unet2d": count_params(unet), "brushnet": count_params(brushnet),
                  "unet_main": count_params(unet_main)}
        params["motion_modules"] = params["unet_main"] - params["unet2d"]
        lora = _pcm_lora_layers(unet, sizes.lora_rank)
        params["pcm_lora"] = sum(v.numel() for v in lora.values())
        del unet
        raft, flow_complete, inpainter = _propainter_models(source)
        params.update(raft=count_params(raft), flow_completion=count_params(flow_complete),
                      propainter_generator=count_params(inpainter))
    return BuiltModels(sizes, vocab, text_encoder, vae, brushnet, unet_main, lora, raft, flow_complete,
                       inpainter, params)


def save_modules(root: str | Path, models: BuiltModels, *, pcm_ckpts: Iterable[str] = ("2-Step",),
                 save_dtype: Any = None) -> dict[str, str]:
    """Write ``models`` in the user's folder layout under ``root``; return the path fields."""
    import torch

    root = Path(root)
    paths = {
        "base_model_path": root / "sd15",
        "vae_path": root / "sd-vae-ft-mse",
        "diffueraser_path": root / "diffuEraser",
        "propainter_model_dir": root / "propainter",
        "pcm_weights_path": root / "PCM_Weights",
    }

    def stored(module: Any) -> Any:
        return module.to(save_dtype) if save_dtype is not None else module

    with torch.no_grad():
        _write_base(paths["base_model_path"], models.vocab)
        stored(models.text_encoder).save_pretrained(str(paths["base_model_path"] / "text_encoder"))
        stored(models.vae).save_pretrained(str(paths["vae_path"]))
        stored(models.brushnet).save_pretrained(str(paths["diffueraser_path"] / "brushnet"))
        stored(models.unet_main).save_pretrained(str(paths["diffueraser_path"] / "unet_main"))
        _save_lora(paths["pcm_weights_path"], models.lora_layers, pcm_ckpts, save_dtype)
        _save_propainter(paths["propainter_model_dir"], models)
    return {k: str(v) for k, v in paths.items()}


def byte_level_vocab() -> dict[str, int]:
    """The vocabulary of the byte-level CLIP tokenizer written with the weights (no merges)."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    return {t: i for i, t in enumerate(tokens)}


def _write_base(base: Path, vocab: dict[str, int]) -> None:
    """SD 1.5's scheduler config, a model_index.json and the byte-level tokenizer under ``base``."""
    from transformers import CLIPTokenizer

    (base / "scheduler").mkdir(parents=True, exist_ok=True)
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER, indent=2))
    # like SD 1.5's model_index.json, listing only what this tiny folder holds (DiffuEraser's own
    # loader calls DiffusionPipeline.from_pretrained on this folder; the backend does not need it)
    (base / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.29.2",
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }, indent=2))
    raw = base / "tokenizer_src"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "vocab.json").write_text(json.dumps(vocab))
    (raw / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(str(base / "tokenizer"))
    for f in raw.iterdir():
        f.unlink()
    raw.rmdir()


def _text_model(base: Path, size: TextEncoderSize = TINY.text) -> None:
    """Write a Stable Diffusion 1.5 folder (scheduler, tokenizer, text encoder) under ``base``."""
    vocab = byte_level_vocab()
    _write_base(base, vocab)
    _text_encoder(size, vocab).save_pretrained(str(base / "text_encoder"))


def _text_encoder(size: TextEncoderSize, vocab: dict[str, int]):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=size.vocab_size or len(vocab), hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size, num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads, max_position_embeddings=77,
        projection_dim=size.projection_dim, bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"],
    )
    return CLIPTextModel(config)


def _vae_model(size: VaeSize):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=size.layers_per_block,
        norm_num_groups=size.norm_num_groups, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=size.block_out_channels,
        sample_size=size.sample_size,
    )


def _unet_models(sizes: ModelSizes, source: Any):
    """(UNet2D, BrushNet from it, motion UNet from it + a MotionAdapter), as DiffuEraser's training
    builds them (``BrushNetModel.from_unet``, ``UNetMotionModel.from_unet2d``)."""
    u, m = sizes.unet, sizes.motion
    unet = source.unet2d_cls(
        sample_size=u.sample_size, in_channels=4, out_channels=4, layers_per_block=u.layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=u.block_out_channels, cross_attention_dim=u.cross_attention_dim,
        attention_head_dim=u.attention_head_dim, norm_num_groups=u.norm_num_groups,
    )
    brushnet = source.brushnet_cls.from_unet(unet)
    adapter = source.motion_adapter_cls(
        block_out_channels=u.block_out_channels, motion_layers_per_block=m.layers_per_block,
        motion_mid_block_layers_per_block=m.mid_block_layers_per_block,
        motion_num_attention_heads=m.num_attention_heads, motion_norm_num_groups=m.norm_num_groups,
        motion_max_seq_length=m.max_seq_length, use_motion_mid_block=m.use_mid_block,
    )
    unet_main = source.unet_motion_cls.from_unet2d(unet, adapter)
    unet_main.register_to_config(time_cond_proj_dim=None)
    return unet, brushnet, unet_main


def _pcm_lora_layers(unet: Any, rank: int) -> dict[str, Any]:
    """A rank-``rank`` LoRA on the UNet's attention projections (diffusers naming); adds it to ``unet``."""
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for name, param in unet.named_parameters():
        if "lora_B" in name:  # peft starts B at zero (a no-op LoRA); make it change the UNet
            param.copy_(torch.randn_like(param) * 0.02)
    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))


def _save_lora(folder: Path, layers: dict[str, Any], ckpts: Iterable[str], save_dtype: Any) -> None:
    from diffusers import StableDiffusionPipeline

    if save_dtype is not None:
        layers = {k: v.to(save_dtype) for k, v in layers.items()}
    for ckpt in ckpts:
        name = PCM_CHECKPOINTS[ckpt][0].format(PCM_MODE)
        StableDiffusionPipeline.save_lora_weights(str(folder / PCM_MODE), unet_lora_layers=layers,
                                                  weight_name=name)


def _propainter_models(source: Any):
    """RAFT (things, not small), the recurrent flow completion network and the InpaintGenerator.

    Always built on the CPU, also inside a ``torch.device("meta")`` block (their constructors
    compute index buffers with ``nonzero``, which a meta tensor cannot); they are small."""
    import torch

    args = argparse.Namespace(small=False, mixed_precision=False, alternate_corr=False)
    with torch.device("cpu"):
        return source.raft_cls(args), source.flow_complete_cls(), source.inpainter_cls(init_weights=True)


def _save_propainter(folder: Path, models: BuiltModels) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    raft = torch.nn.DataParallel(models.raft)  # raft-things.pth keys carry "module."
    torch.save(raft.state_dict(), folder / "raft-things.pth")
    torch.save(models.flow_complete.state_dict(), folder / "recurrent_flow_completion.pth")
    torch.save(models.inpainter.state_dict(), folder / "ProPainter.pth")
