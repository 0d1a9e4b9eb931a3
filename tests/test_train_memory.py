"""regdpo.train.memory: the saved-for-backward counter, fused attention on meta tensors, static bytes
(pure torch, runs in CI)."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from regdpo.train.memory import SavedBytes, fused_attention_on_meta, static_bytes


class Block(torch.nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.a, self.b = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)

    def forward(self, x):
        return x + self.b(F.gelu(self.a(x)))


class Net(torch.nn.Module):
    def __init__(self, checkpointing: bool, depth: int = 4):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block() for _ in range(depth))
        self.checkpointing = checkpointing

    def forward(self, x):
        for block in self.blocks:
            if self.checkpointing:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def count(checkpointing: bool, device: str = "meta") -> SavedBytes:
    with torch.device(device):
        net = Net(checkpointing)
        x = torch.empty(16, 32).requires_grad_()
    counter = SavedBytes.excluding(net)
    with counter.counting():
        net(x).sum()
    return counter


def test_saved_bytes_without_checkpointing_are_the_activations():
    c = count(False)
    # per block: x (a's input), a's output (gelu's input), gelu's output (b's input): 16 x (32 + 128 + 128) floats;
    # the weights are excluded, each storage counted once (a block's output is the next block's input)
    assert c.nbytes == 4 * 16 * (32 + 128 + 128) * 4
    assert c.checkpoint_calls == 0 and c.recompute_peak == 0


def test_checkpointing_keeps_only_block_inputs_and_counts_the_recompute():
    plain, ckpt = count(False), count(True)
    assert ckpt.checkpoint_calls == 4
    assert ckpt.nbytes == 4 * 16 * 32 * 4  # the four blocks' inputs
    assert ckpt.recompute_peak == 16 * (32 + 128 + 128) * 4  # one block's own activations
    assert ckpt.nbytes + ckpt.recompute_peak < plain.nbytes


def test_counts_on_meta_equal_counts_on_cpu():
    for checkpointing in (False, True):
        meta, cpu = count(checkpointing, "meta"), count(checkpointing, "cpu")
        assert (meta.nbytes, meta.recompute_peak) == (cpu.nbytes, cpu.recompute_peak)


def test_fused_attention_on_meta_saves_what_the_fused_kernels_save():
    def saved(device: str, fused: bool) -> int:
        q = torch.empty(2, 4, 256, 16, device=device).requires_grad_()
        counter = SavedBytes()
        with counter.counting(), (fused_attention_on_meta() if fused else contextlib.nullcontext()):
            out = F.scaled_dot_product_attention(q, q, q)
        assert out.shape == q.shape
        return counter.nbytes

    expected = 2 * 4 * 256 * 16 * 4 * 2 + 2 * 4 * 256 * 4  # q (= k = v), output, log-sum-exp
    assert saved("meta", True) == expected
    assert saved("meta", False) > 2 * 4 * 256 * 256 * 4  # the math fallback keeps the score matrix
    assert saved("cpu", False) == expected  # CPU's flash kernel saves the same as counted


def test_static_bytes():
    b = static_bytes(trained=100, frozen_in_trained=50, frozen_modules=30, precision="bf16", optimizer="adamw")
    assert b == {"trained_weights": 400, "gradients": 400, "optimizer": 800, "reference": 400,
                 "frozen_weights": 200 + 60, "total": 400 + 400 + 800 + 400 + 260}
    assert static_bytes(100, 0, 30, "no", "adamw8bit")["optimizer"] == 200
    with pytest.raises(KeyError):
        static_bytes(1, 0, 0, "fp8")
