"""Train / eval mode of DiffuEraser's modules during DPO training.

``torch.nn.Module.train()`` changes two things in DiffuEraser's classes (diffusers 0.29.2):

- **gradient checkpointing**: every down / mid / up block of ``UNetMotionModel`` and
  ``BrushNetModel`` checkpoints only when ``self.training and self.gradient_checkpointing``, so
  ``enable_gradient_checkpointing()`` does nothing on a module in eval mode (what
  ``from_pretrained`` returns);
- **dropout**: every ``Dropout`` becomes active. In Stable Diffusion 1.5's UNet, BrushNet (built from
  it) and the AnimateDiff motion modules every dropout probability is 0 (diffusers' default
  ``dropout=0.0`` of the resnets, attention and feed-forward blocks, which these configs keep), so
  train mode adds no noise: a forward pass in train mode equals one in eval mode bit for bit
  (``tests/test_train_contract.py`` checks it on the real classes). A module with a dropout
  probability above 0 is reported by ``active_dropout``.

The modules holding trained parameters are in train mode (as DiffuEraser's stage-2 script, whose
motion UNet is built in train mode); with ``--train_modules motion`` that is ``unet_main``, whose
frozen 2-D layers then run in train mode too (the same as stage 2). Frozen modules (VAE, text
encoder, BrushNet under ``motion``) and every reference pass run in eval mode.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch

__all__ = ["set_modes", "eval_mode", "active_dropout", "enable_gradient_checkpointing",
           "disable_gradient_checkpointing", "CHECKPOINT_SCOPES"]


def set_modes(trained: Iterable[torch.nn.Module], frozen: Iterable[torch.nn.Module]) -> None:
    """``train()`` the modules holding trained parameters, ``eval()`` the frozen ones."""
    for module in frozen:
        module.eval()
    for module in trained:
        module.train()


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Every submodule of ``modules`` in eval mode inside the block; each one's own mode restored after."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training


def active_dropout(*modules: torch.nn.Module) -> list[str]:
    """Names of the dropout layers of ``modules`` with a probability above 0 (train mode would add noise)."""
    out = []
    for module in modules:
        for name, m in module.named_modules():
            if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0:
                out.append(f"{type(module).__name__}.{name} (p={m.p})")
    return out


CHECKPOINT_SCOPES = ("all", "blocks")


def enable_gradient_checkpointing(unet_main: torch.nn.Module, brushnet: torch.nn.Module, train_modules: str,
                                  scope: str = "all") -> None:
    """Gradient checkpointing of the modules ``train_modules`` trains (BrushNet only when it is trained: a
    frozen BrushNet runs in eval mode and saves nothing for backward).

    ``scope="blocks"``: diffusers' ``enable_gradient_checkpointing()`` alone, which in DiffuEraser's
    classes reaches only the down / up blocks (their resnets and motion modules): the spatial
    transformers and the mid block keep every activation. ``"all"`` (the training script's): every
    submodule that can checkpoint (has diffusers' ``gradient_checkpointing`` switch) does: the blocks,
    the spatial transformers (per transformer layer), the mid block and the motion transformers.
    """
    if scope not in CHECKPOINT_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(CHECKPOINT_SCOPES)}, got {scope!r}")
    for module in [unet_main] + ([brushnet] if train_modules != "motion" else []):
        module.enable_gradient_checkpointing()
        if scope == "all":
            for sub in module.modules():
                if sub is not module and hasattr(sub, "gradient_checkpointing"):
                    sub.gradient_checkpointing = True


def disable_gradient_checkpointing(*modules: torch.nn.Module) -> None:
    """Every checkpointing switch of ``modules`` off."""
    for module in modules:
        for sub in module.modules():
            if hasattr(sub, "gradient_checkpointing"):
                sub.gradient_checkpointing = False
