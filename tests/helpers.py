"""Shared by the test modules: where the real-video fixtures are, a tokenizer stand-in, tree listing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
"""The real DAVIS / YouTube-VOS fixtures (../shared/data from the repo root); absent on a user's clone."""

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real-video fixtures not found at {DATA}")


class FakeTokenizer:
    """CLIPTokenizer stand-in: BOS, one id per word (len + 100), EOS, padded with EOS to 77."""

    model_max_length = 77

    def __init__(self):
        self.calls = []

    def __call__(self, text, max_length, padding, truncation, return_tensors):
        assert (padding, truncation, return_tensors) == ("max_length", True, "pt")
        self.calls.append(text)
        ids = [49406] + [100 + len(w) for w in text.split()][: max_length - 2] + [49407]
        ids += [49407] * (max_length - len(ids))
        return {"input_ids": torch.tensor([ids], dtype=torch.long)}


def tree_files(root) -> list[str]:
    """Every file under ``root``, as sorted relative POSIX paths."""
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())
