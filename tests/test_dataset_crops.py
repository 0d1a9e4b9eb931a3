"""DPODataset items hold the hole: crop and window chosen over the window's hole pixels
(args.min_hole_coverage), on synthetic wide clips and on the generator's output of the real fixtures."""

from types import SimpleNamespace

import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from regdpo.dataset import DPODataset
from regdpo.writer import rebuild_manifest, write_video_entry
from helpers import DATA, FakeTokenizer, needs_data


def write_clip(root, name, hole, seed=0):
    t, h, w = hole.shape
    gt = np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    write_video_entry(root, fmt.VideoMeta(name, t, h, w, ["blur"]), gt, hole, {"blur": 255 - gt})


def held_shares(ds, epochs):
    """(hole pixels in the item / hole pixels of its window, window hole pixels) over every item and epoch."""
    shares = []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            aug, holes = ds._plan(i)
            item = ds[i]
            total = int(holes.sum())
            inside = int(item["mask_hole"].sum())
            shares.append((inside / total if total else 1.0, total))
    return shares


@pytest.fixture(scope="module")
def wide_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("wide")
    hole = np.zeros((8, 32, 200), bool)
    for i in range(8):
        hole[i, 10:22, 170 + i : 190 + i // 2] = True  # at the right edge of a 200-px wide frame
    write_clip(root, "right_side", hole)
    left = np.zeros((8, 64, 400), bool)
    left[:, 30:50, 4:30] = True  # stored 400x64, resized to 200x32 on load
    write_clip(root, "left_side_resized", left, seed=1)
    rebuild_manifest(root)
    return root


def args(root, **kw):
    return SimpleNamespace(dpo_data_root=str(root), nframes=4, resolution=32, dataset_seed=0, **kw)


@pytest.mark.parametrize("options", [{}, {"random_flip": True, "random_reverse": True}, {"center_crop": True}])
def test_every_item_holds_at_least_the_share_of_its_windows_hole(wide_root, options):
    ds = DPODataset(args(wide_root, **options), FakeTokenizer())
    shares = held_shares(ds, 40)
    assert len(shares) == 80 and all(total > 0 for _, total in shares)
    assert min(share for share, _ in shares) >= 0.5


def test_without_the_rule_wide_frames_give_hole_free_items(wide_root):
    """What the rule prevents: with min_hole_coverage = 0 most crops of these clips miss the hole."""
    ds = DPODataset(args(wide_root, min_hole_coverage=0), FakeTokenizer())
    shares = held_shares(ds, 40)
    assert sum(share == 0 for share, _ in shares) > 40


def test_share_one_holds_the_whole_hole_when_it_fits(wide_root):
    ds = DPODataset(args(wide_root, min_hole_coverage=1.0, random_flip=True), FakeTokenizer())
    assert all(share == 1.0 for share, _ in held_shares(ds, 20))


def test_a_hole_free_window_moves_onto_the_hole(tmp_path):
    hole = np.zeros((12, 32, 96), bool)
    hole[10:, 5:15, 60:80] = True  # only the last two frames of the clip have a hole
    write_clip(tmp_path, "late_hole", hole)
    rebuild_manifest(tmp_path)
    ds = DPODataset(args(tmp_path, random_reverse=True), FakeTokenizer())
    starts = set()
    for epoch in range(30):
        ds.set_epoch(epoch)
        aug = ds.augmentation(0)
        starts.add(min(aug.frame_indices))
        assert ds[0]["mask_hole"].sum() > 0
    assert starts == {7, 8}  # the 4-frame windows holding frame 10 or 11
    ds = DPODataset(args(tmp_path, min_hole_coverage=0), FakeTokenizer())
    assert ds.augmentation(0) == ds.augmentation(0)  # deterministic, and reads the same


def test_min_hole_coverage_is_checked(wide_root):
    from regdpo.errors import UsageError

    with pytest.raises(UsageError, match="args.min_hole_coverage must be in"):
        DPODataset(args(wide_root, min_hole_coverage=1.5), FakeTokenizer())


@needs_data
def test_generator_output_of_the_real_fixtures_every_item_holds_the_hole(tmp_path):
    """The issue's case: data generated at the training resolution from DAVIS / YouTube-VOS, read
    at that resolution (a square crop of a wide frame). Each item holds >= half its window's hole."""
    out = tmp_path / "dpo_data"
    flags = ["generate", "--no_progress", "--davis_root", DATA / "DAVIS", "--ytvos_root", DATA / "YTBV",
             "--output_dir", out, "--nframes", 12, "--resolution", 128, "--seed", 0]
    assert regdpo_main([str(f) for f in flags]) == 0
    make = lambda **kw: DPODataset(  # noqa: E731
        SimpleNamespace(dpo_data_root=str(out), nframes=8, resolution=128, dataset_seed=0, **kw), FakeTokenizer())
    shares = held_shares(make(random_flip=True, random_reverse=True), 4)
    assert len(shares) >= 4 * 12 and min(share for share, _ in shares) >= 0.5
    assert min(share for share, _ in held_shares(make(center_crop=True), 1)) >= 0.5
    assert any(share == 0 for share, _ in held_shares(make(min_hole_coverage=0), 6))  # the bug, without the rule
