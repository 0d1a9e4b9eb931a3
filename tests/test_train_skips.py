"""A frame damaged after the dataset was built (issue 18, item 17): with ``skip_invalid`` the dataset passes over
the unreadable pair (DataLoader workers included) and says so in the item; training reports each such pair once in
one line naming the file and counts them (``regdpo.train.skips``); without it the error a worker re-raises (its
whole traceback in the message) is one line again. The script itself is run in tests/test_train_contract.py."""

from __future__ import annotations

import argparse

import pytest
import torch

from regdpo import format as fmt
from regdpo.dataset import DPODataset, collate_fn
from regdpo.errors import FrameReadError
from regdpo.train.skips import SkippedPairs, one_line_error
from helpers import FakeTokenizer, write_pair_dataset


@pytest.fixture
def damaged(tmp_path):
    """Three videos with blur and hallucination negatives; ``damage()`` overwrites one blur frame with junk
    (called once the dataset is built: what a long training run meets)."""
    root = write_pair_dataset(tmp_path / "d", videos=(("clip_a", 6), ("clip_b", 6), ("clip_c", 6)),
                              neg_types=("blur", "hallucination"))
    bad = root / "clip_b" / "blur" / "00001.png"
    return root, bad


def damage(bad):
    bad.write_bytes(b"not a png any more")


def dataset(root, **extra):
    args = argparse.Namespace(dpo_data_root=str(root), nframes=6, resolution=64, dataset_seed=0, **extra)
    return DPODataset(args, FakeTokenizer())


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_invalid_passes_over_a_pair_damaged_after_the_build(damaged, workers):
    root, bad = damaged
    ds = dataset(root, skip_invalid=True)
    assert len(ds) == 6
    damage(bad)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_fn, num_workers=workers)
    skips, lines, seen = SkippedPairs(), [], []
    for _ in range(2):  # two epochs: reported once
        for batch in loader:
            lines += skips.add(batch)
            seen += [f"{v}/{s}" for v, s in zip(batch["video"], batch["stream"])]
    assert len(skips) == 1 and list(skips.reasons) == ["clip_b/blur"]
    assert len(lines) == 1 and str(bad) in lines[0] and "\n" not in lines[0] and len(lines[0]) < 300
    assert lines[0].startswith("skipped the unreadable pair clip_b/blur: ")
    assert "clip_b/blur" not in seen and len(seen) == 12  # every batch full, made of readable pairs


def test_without_skip_invalid_a_worker_error_is_one_line(damaged):
    root, bad = damaged
    ds = dataset(root)
    damage(bad)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=collate_fn, num_workers=1)
    with pytest.raises(FrameReadError) as exc:
        for _ in loader:
            pass
    assert "Traceback" in str(exc.value)  # what torch re-raises: the worker's traceback inside the message
    line = one_line_error(exc.value)
    assert line == f"{bad}: corrupt or not an image", line
    assert one_line_error(FrameReadError("a:  b\n c")) == "a: b c"


def test_every_pair_unreadable_is_an_error_naming_one(damaged):
    root, _ = damaged
    ds = dataset(root, skip_invalid=True)
    for video in ("clip_a", "clip_b", "clip_c"):
        (root / video / fmt.GT_DIR / "00000.png").write_bytes(b"junk")
    with pytest.raises(FrameReadError, match="no pair of .* can be read .*00000.png"):
        ds[0]
