"""DPODataset on real frames: DAVIS bmx-trees and a short YouTube-VOS clip from ../shared/data."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from regdpo import format as fmt
from regdpo.dataset import DPODataset
from regdpo.errors import FormatError
from regdpo.frames import read_rgb
from regdpo.writer import rebuild_manifest, write_video_entry
from helpers import DATA as SHARED
from helpers import FakeTokenizer
from test_dataset import norm

BMX = SHARED / "DAVIS" / "JPEGImages" / "480p" / "bmx-trees"
YTBV_SHORT = SHARED / "YTBV" / "train" / "JPEGImages" / "003234408d"

pytestmark = pytest.mark.skipif(not BMX.is_dir(), reason=f"real-video fixtures not found at {SHARED}")


def synthetic_hole(t, h, w):
    """A moving ellipse, True = hole."""
    hole = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        cv2.ellipse(hole[i], (w // 3 + 4 * i, h // 2), (w // 8, h // 5), 0, 0, 360, 1, -1)
    return hole.astype(bool)


def write_real(root, name, folder, limit):
    gt = np.stack([read_rgb(p) for p in sorted(folder.glob("*.jpg"))[:limit]])
    t, h, w, _ = gt.shape
    hole = synthetic_hole(t, h, w)
    negatives = {
        "blur": np.stack([cv2.GaussianBlur(f, (0, 0), 5) for f in gt]),
        "hallucination": np.roll(gt, (h // 3, w // 3), axis=(1, 2)),
    }
    write_video_entry(root, fmt.VideoMeta(name, t, h, w, list(negatives), prompt="bmx rider"), gt, hole, negatives)
    return gt, hole


@pytest.fixture(scope="module")
def bmx_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo_real")
    gt, hole = write_real(root, "davis_bmx-trees", BMX, 24)
    rebuild_manifest(root)
    return root, gt, hole


def args_for(root, **kw):
    return SimpleNamespace(dpo_data_root=str(root), nframes=22, resolution=kw.pop("resolution", 128),
                           proportion_empty_prompts=0, boundary_dilation=7, max_upscale=2, **kw)  # 320 on 240: 1.33x


def test_real_frames_crop_only(bmx_root):
    root, gt, hole = bmx_root  # 432x240 stored, resolution 240: no resize
    ds = DPODataset(args_for(root, resolution=240, random_flip=True, random_reverse=True, dataset_seed=2), FakeTokenizer())
    assert len(ds) == 2
    for i in range(len(ds)):
        aug = ds.augmentation(i)
        s = ds[i]
        y0, x0 = aug.crop_yx
        expected = gt[list(aug.frame_indices), y0 : y0 + 240, x0 : x0 + 240]
        expected_hole = hole[list(aug.frame_indices), y0 : y0 + 240, x0 : x0 + 240]
        if aug.flip:
            expected, expected_hole = expected[:, :, ::-1], expected_hole[:, :, ::-1]
        assert torch.equal(s["pixel_values_pos"], norm(np.ascontiguousarray(expected)))
        assert torch.equal(s["mask_hole"][:, 0], torch.from_numpy(expected_hole.astype(np.float32)))
        valid = s["masks"].bool().expand(-1, 3, -1, -1)
        assert torch.equal(s["pixel_values_pos"][valid], s["pixel_values_neg"][valid])
        assert not torch.equal(s["pixel_values_pos"][~valid], s["pixel_values_neg"][~valid])


@pytest.mark.parametrize("resolution", [128, 320])
def test_real_frames_resized(bmx_root, resolution):
    root, gt, hole = bmx_root
    ds = DPODataset(args_for(root, resolution=resolution, random_flip=True, random_reverse=True, dataset_seed=4),
                    FakeTokenizer())
    for epoch in range(2):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            r = resolution
            assert s["pixel_values_neg"].shape == (22, 3, r, r)
            assert s["mask_hole_latent"].shape == (22, 1, r // 8, r // 8)
            valid = s["masks"].bool().expand(-1, 3, -1, -1)
            assert torch.equal(s["pixel_values_pos"][valid], s["pixel_values_neg"][valid])
            assert torch.all(s["conditioning_neg"][~valid] == -1)
            assert torch.equal(s["conditioning_pos"][valid], s["pixel_values_pos"][valid])
            assert 0.01 < s["mask_hole"].mean() < 0.5


def test_real_short_video_refused_or_skipped(tmp_path):
    if not YTBV_SHORT.is_dir():
        pytest.skip(f"{YTBV_SHORT} not found")
    write_real(tmp_path, "davis_bmx-trees", BMX, 22)
    write_real(tmp_path, "ytvos_003234408d", YTBV_SHORT, 15)  # 15 frames, too short for 22
    rebuild_manifest(tmp_path)
    with pytest.raises(FormatError, match="ytvos_003234408d has 15 frames, fewer than args.nframes=22"):
        DPODataset(args_for(tmp_path), FakeTokenizer())
    with pytest.warns(UserWarning, match="ytvos_003234408d"):
        ds = DPODataset(args_for(tmp_path, skip_invalid=True), FakeTokenizer())
    assert {p.video for p in ds.pairs} == {"davis_bmx-trees"}
    assert ds[0]["pixel_values_pos"].shape == (22, 3, 128, 128)
