"""The training script's speed and memory switches (DiffuEraser's stage-2 flag names):
the optimizer class (``--use_8bit_adam``), TF32 matmuls (``--allow_tf32``) and the attention
implementation (``--enable_xformers_memory_efficient_attention``).

Attention: diffusers 0.29.2 gives every ``Attention`` layer ``AttnProcessor2_0`` when PyTorch has
``scaled_dot_product_attention`` (torch >= 2.0), i.e. PyTorch's fused SDPA kernels (flash /
memory-efficient attention on CUDA), and DiffuEraser's classes keep diffusers' processors (their
``set_attn_processor`` / ``enable_xformers_memory_efficient_attention`` are diffusers' own). So SDPA
is the default and nothing needs switching; ``attention_processors`` reports what runs.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from typing import Any

__all__ = ["optional_package_problems", "optimizer_class", "allow_tf32", "use_xformers", "attention_processors"]

EIGHT_BIT_HINT = "pip install 'regdpo[train8bit]' (bitsandbytes, which needs a CUDA GPU)"


def optional_package_problems(use_8bit_adam: bool, xformers: bool) -> list[str]:
    """One line per switch whose package is not installed (checked before anything loads)."""
    problems = []
    if use_8bit_adam and importlib.util.find_spec("bitsandbytes") is None:
        problems.append(f"--use_8bit_adam needs bitsandbytes, which is not installed: {EIGHT_BIT_HINT}")
    if xformers and importlib.util.find_spec("xformers") is None:
        problems.append("--enable_xformers_memory_efficient_attention needs xformers, which is not installed "
                        "(pip install xformers; without it attention runs through PyTorch's SDPA kernels)")
    return problems


def optimizer_class(use_8bit_adam: bool) -> Any:
    """``torch.optim.AdamW``, or bitsandbytes' ``AdamW8bit`` (two 8-bit moments instead of two fp32 ones)."""
    if not use_8bit_adam:
        import torch

        return torch.optim.AdamW
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit


def allow_tf32() -> None:
    """TF32 tensor cores for fp32 matmuls and convolutions on Ampere and later GPUs (as DiffuEraser's
    ``--allow_tf32``); no effect on the CPU."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def use_xformers(*modules: Any) -> None:
    """xformers' memory-efficient attention in every attention layer of ``modules`` (diffusers' switch)."""
    for module in modules:
        module.enable_xformers_memory_efficient_attention()


def attention_processors(*modules: Any) -> dict[str, int]:
    """``{processor class name: layers}`` over ``modules`` (e.g. ``{"AttnProcessor2_0": 48}``: PyTorch SDPA)."""
    return dict(Counter(type(p).__name__ for m in modules for p in m.attn_processors.values()))
