"""What one DPO training step holds in memory, counted without running it for real.

Two parts, both in bytes:

- **static** (``static_bytes``): the policy's trained parameters (fp32), their gradients (fp32),
  the optimizer's state (AdamW: two fp32 moments; 8-bit AdamW: two 1-byte moments, plus its
  per-block scales, neglected), the reference (fp32 copies of the trained parameters,
  ``modules.ReferenceWeights``), the frozen parameters of a trained module (fp32: the module is
  one fp32 module) and the frozen modules (VAE, text encoder, BrushNet under ``motion``) in the
  mixed-precision dtype, as ``train_region_reg_dpo.py`` places them.
- **activations** (``SavedBytes``): the bytes autograd saves for the backward pass of the policy
  pass, counted with ``torch.autograd.graph.saved_tensors_hooks`` (each storage once), on tensors
  of the ``meta`` device (shapes and dtypes, no memory). The reference pass runs without gradient
  and saves nothing. With gradient checkpointing a checkpointed block saves only its inputs,
  and the backward pass recomputes one block at a time: ``SavedBytes.recompute_peak`` is the
  largest block's own saved bytes, held on top while that block is recomputed.

Attention is counted as PyTorch's fused scaled-dot-product kernels save it (flash / memory-efficient
attention on CUDA, flash attention on the CPU: query, key, value, output and the per-row
log-sum-exp): on the meta device PyTorch would take its math fallback, which saves the whole
``heads x L x L`` score matrix that the GPU kernels never hold (``fused_attention_on_meta``).
Not counted: the allocator's fragmentation and cache, transient forward buffers (e.g. the VAE
encoding the batch without gradient), CUDA and library workspaces. A GPU's
``torch.cuda.max_memory_allocated`` of one real step measures all of it
(``bench/bench_train.py --memory gpu``).
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

__all__ = ["SavedBytes", "fused_attention_on_meta", "static_bytes", "parameter_split", "policy_saved_bytes",
           "PRECISION_BYTES", "OPTIMIZER_STATE_BYTES"]

PRECISION_BYTES = {"no": 4, "fp16": 2, "bf16": 2}
"""Bytes per frozen-module parameter per ``--mixed_precision`` (frozen modules are cast to it)."""

OPTIMIZER_STATE_BYTES = {"adamw": 8, "adamw8bit": 2}
"""Optimizer state bytes per trained parameter: AdamW's two fp32 moments; bitsandbytes' AdamW8bit's
two 8-bit moments (its per-block scales, 2 x 4 bytes per 2048 values, neglected)."""


CHECKPOINT_OPTIONS = ("use_reentrant", "preserve_rng_state", "context_fn", "determinism_check", "debug")


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


@dataclass
class SavedBytes:
    """Counts the bytes saved for backward inside ``with counter.counting():`` (each storage once).

    ``exclude``: storage keys not counted (the weights: ``excluding``). ``checkpoint_calls``: calls of ``torch.utils.checkpoint.checkpoint`` inside the block; their
    tensor inputs count as saved (the checkpoint keeps them for the recomputation) and the largest
    block's own saved bytes is ``recompute_peak``.
    """

    exclude: set[int] = field(default_factory=set)
    storages: dict[int, int] = field(default_factory=dict)
    checkpoint_calls: int = 0
    recompute_peak: int = 0
    _keep: list = field(default_factory=list, repr=False)

    @property
    def nbytes(self) -> int:
        return sum(self.storages.values())

    @classmethod
    def excluding(cls, *modules: torch.nn.Module) -> "SavedBytes":
        """A counter that leaves out the parameters and buffers of ``modules`` (counted as weights)."""
        keys = {_storage_key(t) for m in modules for t in (*m.parameters(), *m.buffers())}
        return cls(exclude=keys)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in self.exclude:
            self.storages.setdefault(key, t.untyped_storage().nbytes())
        self._keep.append(t)  # a storage key stays unique while its tensor lives
        return t

    @contextlib.contextmanager
    def counting(self) -> Iterator["SavedBytes"]:
        import torch.utils.checkpoint as ckpt

        original = ckpt.checkpoint
        depth = [0]  # checkpoints inside a checkpointed block run as they are

        def checkpoint(function, *args, **kwargs):
            if depth[0]:
                return original(function, *args, **kwargs)
            self.checkpoint_calls += 1
            for a in args:
                if torch.is_tensor(a):
                    self._pack(a)
            own = {k: v for k, v in kwargs.items() if k not in CHECKPOINT_OPTIONS}
            inner = SavedBytes(exclude=self.exclude)
            depth[0] += 1
            try:
                with torch.autograd.graph.saved_tensors_hooks(inner._pack, lambda t: t):
                    function(*args, **own)  # what recomputing this block holds (the output is dropped)
                return original(function, *args, **kwargs)
            finally:
                depth[0] -= 1
                self.recompute_peak = max(self.recompute_peak, inner.nbytes)

        ckpt.checkpoint = checkpoint
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
                yield self
        finally:
            ckpt.checkpoint = original


class _FusedAttention(torch.autograd.Function):
    """The output shape of scaled-dot-product attention, saving what the fused kernels save."""

    @staticmethod
    def forward(ctx, q, k, v):  # type: ignore[override]
        out = q.new_empty((*q.shape[:-1], v.shape[-1]))
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@contextlib.contextmanager
def fused_attention_on_meta() -> Iterator[None]:
    """``torch.nn.functional.scaled_dot_product_attention`` on meta tensors saves what a fused kernel
    saves (q, k, v, output, log-sum-exp), not the math fallback's score matrix."""
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if query.device.type != "meta" or attn_mask is not None or is_causal or dropout_p:
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, **kwargs)
        return _FusedAttention.apply(query, key, value)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def static_bytes(trained: int, frozen_in_trained: int, frozen_modules: int, precision: str,
                 optimizer: str = "adamw") -> dict[str, int]:
    """Bytes of weights, gradients, optimizer state and reference of one process.

    ``trained``: trained parameters; ``frozen_in_trained``: frozen parameters of the modules that hold
    trained ones (fp32 with them); ``frozen_modules``: parameters of the wholly frozen modules (cast
    to ``precision``, one of ``PRECISION_BYTES``); ``optimizer``: one of ``OPTIMIZER_STATE_BYTES``.
    """
    out = {
        "trained_weights": 4 * trained,
        "gradients": 4 * trained,
        "optimizer": OPTIMIZER_STATE_BYTES[optimizer] * trained,
        "reference": 4 * trained,
        "frozen_weights": 4 * frozen_in_trained + PRECISION_BYTES[precision] * frozen_modules,
    }
    out["total"] = sum(out.values())
    return out


def parameter_split(unet_main: Any, brushnet: Any, vae: Any, text_encoder: Any, train_modules: str) -> dict[str, int]:
    """``{"trained", "frozen_in_trained", "frozen_modules"}`` parameter counts for ``train_modules``
    (``static_bytes``'s inputs), by the rule of ``modules.trained_parameters``."""
    from .modules import trained_parameters

    chosen = trained_parameters(unet_main, brushnet, train_modules)
    n = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
    trained = n(p for g in chosen.values() for p in g.values())
    holders = [unet_main] + ([brushnet] if chosen["brushnet"] else [])
    frozen = [text_encoder, vae] + ([] if chosen["brushnet"] else [brushnet])
    return {"trained": trained, "frozen_in_trained": n(p for m in holders for p in m.parameters()) - trained,
            "frozen_modules": n(p for m in frozen for p in m.parameters())}


def meta_inputs(frames: int, side: int, dtype: torch.dtype, text_dim: int = 768):
    """``StepInputs`` of one pair (two videos of ``frames``) at ``side``, on the meta device."""
    from .step import StepInputs

    h = side // 8
    m = lambda *shape, d=dtype: torch.empty(*shape, device="meta", dtype=d)  # noqa: E731
    return StepInputs(noisy=m(2 * frames, 4, h, h), target=m(2 * frames, 4, h, h, d=torch.float32),
                      condition=m(2 * frames, 5, h, h), timesteps=torch.zeros(2, dtype=torch.long, device="meta"),
                      text=m(2, 77, text_dim), weights=m(1, frames, 1, h, h, d=torch.float32), batch_size=1,
                      num_frames=frames)


def policy_saved_bytes(models: dict[str, Any], train_modules: str, checkpointing: str, frames: int, side: int,
                       dtype: torch.dtype) -> dict[str, Any]:
    """Bytes saved for backward by one pair's policy pass of ``DiffuEraserDPOStep`` on the meta device
    (``models``: ``unet_main`` and ``brushnet`` on meta; ``checkpointing``: off, or a scope of
    ``modes.enable_gradient_checkpointing``): ``{"saved", "recompute", "calls"}``. The modules are cast
    to ``dtype`` (no autocast on meta: half-precision activations stand for mixed precision's)."""
    from diffusers import DDPMScheduler

    from .config import DPOStepConfig
    from .modes import disable_gradient_checkpointing, enable_gradient_checkpointing
    from .step import DiffuEraserDPOStep

    unet_main, brushnet = models["unet_main"].to(dtype), models["brushnet"].to(dtype)
    vae = torch.nn.Module()
    vae.config = types.SimpleNamespace(scaling_factor=0.18215)
    step = DiffuEraserDPOStep(vae=vae, text_encoder=torch.nn.Identity(), brushnet=brushnet, unet_main=unet_main,
                              noise_scheduler=DDPMScheduler(), config=DPOStepConfig(train_modules=train_modules),
                              weight_dtype=dtype)
    step._autocast = contextlib.nullcontext  # the modules are in the activation dtype already (no autocast on meta)
    disable_gradient_checkpointing(unet_main, brushnet)
    if checkpointing != "off":
        enable_gradient_checkpointing(unet_main, brushnet, train_modules, scope=checkpointing)
    counter = SavedBytes.excluding(unet_main, brushnet)
    with counter.counting(), fused_attention_on_meta():
        mse_w, mse_l = step.policy_mse(meta_inputs(frames, side, dtype, int(unet_main.config.cross_attention_dim)))
    disable_gradient_checkpointing(unet_main, brushnet)
    return {"saved": counter.nbytes, "recompute": counter.recompute_peak, "calls": counter.checkpoint_calls}
