"""DPODataset with args.full_frame (DiffuEraser's whole-frame loading) and same-size batches."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from regdpo import format as fmt
from regdpo.buckets import SizeBucketBatchSampler
from regdpo.dataset import DPODataset, collate_fn, full_frame_size
from regdpo.writer import rebuild_manifest, write_video_entry
from helpers import FakeTokenizer
from test_dataset import norm


def write(root, name, t, h, w, seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    hole = np.zeros((t, h, w), bool)
    hole[:, h // 4 : h // 2, w // 3 : w // 2] = True
    neg = 255 - gt
    write_video_entry(root, fmt.VideoMeta(name, t, h, w, ["blur"]), gt, hole, {"blur": neg})
    return gt, hole, neg


@pytest.fixture
def root(tmp_path):
    stored = {
        "wide_exact": write(tmp_path, "wide_exact", 6, 32, 56),  # already short side 32, 56 = 7 * 8
        "wide_odd": write(tmp_path, "wide_odd", 6, 48, 80, 1),  # -> 32 x 53.3 -> 32 x 56
        "tall": write(tmp_path, "tall", 6, 90, 40, 2),  # -> 72 x 32
        "wide_exact_2": write(tmp_path, "wide_exact_2", 6, 32, 56, 3),
    }
    rebuild_manifest(tmp_path)
    return tmp_path, stored


def args(root, **kw):
    return SimpleNamespace(dpo_data_root=str(root), nframes=4, resolution=32, full_frame=True, dataset_seed=0, **kw)


def test_full_frame_size_keeps_aspect_and_rounds_to_8():
    assert full_frame_size(48, 80, 32) == (32, 56)
    assert full_frame_size(90, 40, 32) == (72, 32)
    assert full_frame_size(480, 854, 512) == (512, 912)
    assert full_frame_size(240, 432, 512) == (512, 920)
    assert full_frame_size(512, 512, 512) == (512, 512)


def test_items_are_whole_frames_aligned_and_recomposited(root):
    root, stored = root
    ds = DPODataset(args(root, random_flip=True, random_reverse=True), FakeTokenizer())
    sizes = dict(zip((p.video for p in ds.pairs), ds.item_sizes()))
    assert sizes == {"tall": (72, 32), "wide_exact": (32, 56), "wide_exact_2": (32, 56), "wide_odd": (32, 56)}
    for i, pair in enumerate(ds.pairs):
        s = ds[i]
        h, w = sizes[pair.video]
        assert s["pixel_values_pos"].shape == (4, 3, h, w) and s["masks"].shape == (4, 1, h, w)
        assert s["masks_latent"].shape == s["mask_hole_latent"].shape == (4, 1, h // 8, w // 8)
        assert torch.equal(s["masks_latent"], torch.nn.functional.interpolate(s["masks"], size=(h // 8, w // 8)))
        valid = s["masks"].bool().expand(-1, 3, -1, -1)
        assert torch.equal(s["pixel_values_neg"][valid], s["pixel_values_pos"][valid])
        assert not torch.equal(s["pixel_values_neg"][~valid], s["pixel_values_pos"][~valid])
        assert torch.all(s["conditioning_pos"][~valid] == -1)
        assert s["mask_hole"].sum() > 0


def test_stored_at_the_full_frame_size_is_read_unchanged(root):
    root, stored = root
    ds = DPODataset(args(root, random_flip=True), FakeTokenizer())
    gt, hole, neg = stored["wide_exact"]
    (i,) = [k for k, p in enumerate(ds.pairs) if p.video == "wide_exact"]
    for epoch in range(4):
        ds.set_epoch(epoch)
        aug = ds.augmentation(i)
        s = ds[i]
        idx = list(aug.frame_indices)
        g, m = gt[idx], hole[idx]
        if aug.flip:
            g, m = g[:, :, ::-1], m[:, :, ::-1]
        assert aug.crop_yx == (0, 0) and aug.crop_hw == aug.resized_hw == (32, 56)
        assert torch.equal(s["pixel_values_pos"], norm(np.ascontiguousarray(g)))
        assert torch.equal(s["mask_hole"][:, 0], torch.from_numpy(np.ascontiguousarray(m)).float())


def test_resized_full_frame_matches_opencv(root):
    root, stored = root
    ds = DPODataset(args(root), FakeTokenizer())
    gt, _, _ = stored["wide_odd"]
    (i,) = [k for k, p in enumerate(ds.pairs) if p.video == "wide_odd"]
    aug = ds.augmentation(i)
    expected = np.stack([cv2.resize(f, (56, 32), interpolation=cv2.INTER_AREA) for f in gt[list(aug.frame_indices)]])
    assert torch.equal(ds[i]["pixel_values_pos"], norm(expected))


def test_size_buckets_batch_same_sizes_and_cover_every_item(root):
    root, _ = root
    ds = DPODataset(args(root), FakeTokenizer())
    sampler = SizeBucketBatchSampler(ds.item_sizes(), batch_size=2, seed=5)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_fn)
    seen = []
    for batch in loader:
        assert batch["pixel_values_pos"].shape[0] == len(batch["video"])
        seen += batch["video"]
    assert sorted(seen) == sorted(p.video for p in ds.pairs) and len(loader) == len(sampler) == 3
    first = list(sampler)
    assert list(sampler) == first
    orders = set()
    for epoch in range(8):
        sampler.set_epoch(epoch)
        orders.add(tuple(map(tuple, sampler)))
    assert len(orders) > 1
    dropped = SizeBucketBatchSampler(ds.item_sizes(), batch_size=2, drop_last=True)
    assert len(dropped) == len(list(dropped)) == 1
    with pytest.raises(ValueError, match="batch_size"):
        SizeBucketBatchSampler([], batch_size=0)
