"""Which parameters a DPO run trains, and the frozen reference copy of only those.

Names follow ``named_parameters()`` of the *unwrapped* modules. ``unet_main`` is DiffuEraser's
``UNetMotionModel``: its motion-module parameters carry ``motion_modules`` in their name (the
rule DiffuEraser's own ``freeze_unet2d_params`` / ``save_motion_modules`` use).

The reference is not a second model: it is a dict of detached copies of the trained
parameters, swapped in for one forward pass with ``torch.func.functional_call``; every
frozen parameter and every buffer is shared with the policy. Motion-only DPO therefore holds
a copy of the motion modules only, not of BrushNet, the 2-D UNet, the VAE or the text encoder.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

MOTION_KEY = "motion_modules"


def is_motion_parameter(name: str) -> bool:
    return MOTION_KEY in name.split(".")


def trained_parameters(unet_main: torch.nn.Module, brushnet: torch.nn.Module,
                       train_modules: str) -> dict[str, dict[str, torch.nn.Parameter]]:
    """``{"unet_main": {name: param}, "brushnet": {name: param}}`` of the parameters ``train_modules`` trains."""
    unet = dict(unet_main.named_parameters())
    if train_modules == "motion":
        return {"unet_main": {n: p for n, p in unet.items() if is_motion_parameter(n)}, "brushnet": {}}
    if train_modules == "spatial":
        return {"unet_main": {n: p for n, p in unet.items() if not is_motion_parameter(n)},
                "brushnet": dict(brushnet.named_parameters())}
    if train_modules == "both":
        return {"unet_main": unet, "brushnet": dict(brushnet.named_parameters())}
    raise ValueError(f"train_modules must be motion, spatial or both, got {train_modules!r}")


def set_trainable(unet_main: torch.nn.Module, brushnet: torch.nn.Module, train_modules: str) -> list[torch.nn.Parameter]:
    """Freeze everything but the ``train_modules`` parameters; return those (the optimizer's list)."""
    chosen = trained_parameters(unet_main, brushnet, train_modules)
    ids = {id(p) for group in chosen.values() for p in group.values()}
    for module in (unet_main, brushnet):
        for p in module.parameters():
            p.requires_grad_(id(p) in ids)
    params = [p for group in chosen.values() for p in group.values()]
    if not params:
        raise ValueError(f"--train_modules {train_modules}: no parameters to train in these modules")
    return params


class ReferenceWeights:
    """Frozen copies of the trained parameters, per module (``unet_main``, ``brushnet``)."""

    def __init__(self, copies: dict[str, dict[str, torch.Tensor]]):
        self.copies = copies

    @classmethod
    def copy_of(cls, unet_main: torch.nn.Module, brushnet: torch.nn.Module, train_modules: str) -> "ReferenceWeights":
        chosen = trained_parameters(unet_main, brushnet, train_modules)
        return cls({key: {n: p.detach().clone() for n, p in group.items()} for key, group in chosen.items()})

    def covers(self, key: str) -> bool:
        """Whether module ``key`` differs between policy and reference (has trained parameters)."""
        return bool(self.copies.get(key))

    def call(self, key: str, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        """``module(*args, **kwargs)`` with the reference weights of ``key`` swapped in."""
        if not self.covers(key):
            return module(*args, **kwargs)
        return torch.func.functional_call(module, self.copies[key], args, kwargs, strict=False)

    def tensors(self) -> Iterator[torch.Tensor]:
        for group in self.copies.values():
            yield from group.values()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def to(self, device: torch.device | str) -> "ReferenceWeights":
        self.copies = {k: {n: t.to(device) for n, t in g.items()} for k, g in self.copies.items()}
        return self


def module_nbytes(*modules: torch.nn.Module) -> int:
    """Bytes of the parameters of ``modules`` (what a full deep copy of them would add)."""
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
