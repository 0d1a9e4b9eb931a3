"""DPODataset: fields, conventions, augmentation invariants, index, errors, DataLoader."""

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from regdpo import format as fmt
from regdpo.dataset import DEFAULT_PROMPT, DPODataset, collate_fn, plan_augmentation, region_masks, resized_size
from regdpo.errors import FormatError, FrameReadError, UsageError
from regdpo.regions import decompose_regions, decompose_regions_latent
from regdpo.writer import rebuild_manifest, write_video_entry

from helpers import FakeTokenizer

REPO = Path(__file__).resolve().parents[1]


def tokens(text):
    return FakeTokenizer()(text, 77, "max_length", True, "pt")["input_ids"][0]


def make_clip(t, h, w, seed=0):
    """Random GT (channels differ, to catch RGB/BGR swaps) and a moving rectangular hole."""
    r = np.random.default_rng(seed)
    gt = r.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    gt[..., 0] //= 2  # R in [0,127], B in [0,255]: a channel swap changes values
    hole = np.zeros((t, h, w), bool)
    for i in range(t):
        y, x = h // 4 + i % 3, w // 5 + 2 * i
        hole[i, y : y + h // 3, x : x + w // 3] = True
    hole[:, 0, 0] = True  # touches the border: region maths must ignore what lies outside
    return gt, hole


def write_video(root, name, t=10, h=48, w=80, neg_types=("hallucination", "blur", "flicker"), prompt="", seed=0):
    gt, hole = make_clip(t, h, w, seed)
    negatives = {n: (255 - gt if i % 2 == 0 else gt // 3) for i, n in enumerate(neg_types)}
    meta = fmt.VideoMeta(name, t, h, w, list(neg_types), prompt=prompt)
    write_video_entry(root, meta, gt, hole, negatives)
    return gt, hole, negatives


def make_args(root, **kw):
    base = dict(dpo_data_root=str(root), nframes=6, resolution=32, proportion_empty_prompts=0, boundary_dilation=7)
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture
def root(tmp_path):
    write_video(tmp_path, "vid_b", t=10, h=48, w=80, prompt="a dirt road")
    write_video(tmp_path, "vid_a", t=8, h=40, w=32, neg_types=("blur",), seed=1)
    rebuild_manifest(tmp_path)
    return tmp_path


def load_entry(root, name):
    """Stored arrays of a video, read back the way a user would (RGB, bool hole)."""
    from regdpo.frames import read_mask_clip, read_rgb_clip

    d = Path(root) / name
    meta = fmt.read_video_meta(root, name)
    names = fmt.frame_names(meta.num_frames)
    out = {"gt": read_rgb_clip([d / fmt.GT_DIR / n for n in names]), "hole": read_mask_clip([d / fmt.MASK_DIR / n for n in names])}
    for t in meta.neg_types:
        out[t] = read_rgb_clip([d / t / n for n in names])
    return out


def norm(rgb):
    """uint8 [T,H,W,3] -> float [T,3,H,W] in [-1,1]."""
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1


# --------------------------------------------------------------------------- fields and conventions


def test_fields_shapes_dtypes_and_ranges(root):
    ds = DPODataset(make_args(root), FakeTokenizer())
    s = ds[0]
    f, r = 6, 32
    for key in ("pixel_values_pos", "pixel_values_neg", "conditioning_pos", "conditioning_neg"):
        assert s[key].shape == (f, 3, r, r) and s[key].dtype == torch.float32, key
        assert s[key].min() >= -1 and s[key].max() <= 1
    for key in ("masks", "mask_hole", "mask_boundary", "mask_context"):
        assert s[key].shape == (f, 1, r, r) and s[key].dtype == torch.float32, key
        assert set(torch.unique(s[key]).tolist()) <= {0.0, 1.0}
    for key in ("masks_latent", "mask_hole_latent", "mask_boundary_latent", "mask_context_latent"):
        assert s[key].shape == (f, 1, r // 8, r // 8) and s[key].dtype == torch.float32, key
    assert s["input_ids"].shape == (77,) and s["input_ids"].dtype == torch.long
    assert isinstance(s["neg_type"], str) and isinstance(s["video"], str)
    assert s["pixel_values_pos"].is_contiguous() and s["masks"].is_contiguous()


def test_item_matches_stored_data_crop_only(root):
    """Stored short side == resolution: pixels are the stored RGB crop (RGB order, polarity)."""
    stored = load_entry(root, "vid_a")  # 32 wide, 40 high: short side 32 = resolution
    ds = DPODataset(make_args(root, neg_types="blur", dataset_seed=3), FakeTokenizer())
    (i,) = [k for k, p in enumerate(ds.pairs) if p.video == "vid_a"]
    for epoch in range(4):
        ds.set_epoch(epoch)
        aug = ds.augmentation(i)
        s = ds[i]
        (y0, x0), idx = aug.crop_yx, list(aug.frame_indices)
        assert aug.resized_hw == (40, 32) and x0 == 0 and 0 <= y0 <= 8
        gt = stored["gt"][idx, y0 : y0 + 32, x0 : x0 + 32]
        hole = stored["hole"][idx, y0 : y0 + 32, x0 : x0 + 32]
        assert torch.equal(s["pixel_values_pos"], norm(gt))
        assert torch.equal(s["mask_hole"][:, 0], torch.from_numpy(hole).float())  # 1 = hole
        assert torch.equal(s["masks"][:, 0], torch.from_numpy(~hole).float())  # BrushNet: 1 = valid
        neg = stored["blur"][idx, y0 : y0 + 32, x0 : x0 + 32]
        assert torch.equal(s["pixel_values_neg"], norm(neg))


def test_conditioning_is_masked_gt_and_same_for_both_sides(root):
    ds = DPODataset(make_args(root, random_flip=True, random_reverse=True, dataset_seed=0), FakeTokenizer())
    for i in range(len(ds)):
        s = ds[i]
        hole = s["mask_hole"].bool().expand(-1, 3, -1, -1)
        assert hole.any()
        cond = s["conditioning_pos"]
        assert torch.equal(cond, s["conditioning_neg"])
        assert torch.all(cond[hole] == -1.0)
        assert torch.equal(cond[~hole], s["pixel_values_pos"][~hole])
        # blacking out in uint8 then normalising: exactly -1, not the pixel value
        expected = torch.where(hole, torch.tensor(-1.0), s["pixel_values_pos"])
        assert torch.equal(cond, expected)


def test_rgb_normalisation_endpoints(tmp_path):
    gt = np.zeros((4, 16, 16, 3), np.uint8)
    gt[:, :, 8:] = 255
    hole = np.zeros((4, 16, 16), bool)
    hole[:, 4:8, 4:8] = True
    write_video_entry(tmp_path, fmt.VideoMeta("v", 4, 16, 16, ["blur"]), gt, hole, {"blur": gt})
    rebuild_manifest(tmp_path)
    s = DPODataset(make_args(tmp_path, nframes=4, resolution=16, center_crop=True), FakeTokenizer())[0]
    assert set(torch.unique(s["pixel_values_pos"]).tolist()) == {-1.0, 1.0}


# --------------------------------------------------------------------------- augmentation invariants


@pytest.mark.parametrize(
    "h,w,resolution",
    [
        (48, 80, 48),  # crop only, landscape
        (72, 40, 40),  # crop only, portrait
        (30, 52, 48),  # upscale, non-square
        (100, 64, 32),  # downscale, portrait
        (45, 77, 32),  # downscale, odd sizes
        (32, 32, 32),  # exact
    ],
)
def test_negative_equals_positive_outside_hole_after_every_augmentation(tmp_path, h, w, resolution):
    write_video(tmp_path, "v", t=9, h=h, w=w, neg_types=("hallucination", "flicker"))
    rebuild_manifest(tmp_path)
    for center in (False, True):
        args = make_args(tmp_path, nframes=5, resolution=resolution, random_flip=True, random_reverse=True,
                         center_crop=center, dataset_seed=11, max_upscale=2)  # (30, 52) at 48: 1.6x, allowed here
        ds = DPODataset(args, FakeTokenizer())
        seen_flip, seen_reverse = set(), set()
        for epoch in range(6):
            ds.set_epoch(epoch)
            for i in range(len(ds)):
                aug = ds.augmentation(i)
                seen_flip.add(aug.flip)
                seen_reverse.add(aug.frame_indices[0] > aug.frame_indices[-1])
                s = ds[i]
                valid = s["masks"].bool().expand(-1, 3, -1, -1)
                pos, neg = s["pixel_values_pos"], s["pixel_values_neg"]
                assert torch.equal(pos[valid], neg[valid]), (h, w, resolution, epoch, i)
                assert not torch.equal(pos[~valid], neg[~valid])  # the negative is there
                assert torch.equal(s["masks"], 1 - s["mask_hole"])
        assert seen_flip == {False, True} and seen_reverse == {False, True}


def test_flip_and_reverse_transform_the_stored_frames(root):
    stored = load_entry(root, "vid_b")  # 48 x 80
    args = make_args(root, resolution=48, random_flip=True, random_reverse=True, dataset_seed=5, neg_types=["hallucination"])
    ds = DPODataset(args, FakeTokenizer())
    checked = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        aug = ds.augmentation(0)
        s = ds[0]
        y0, x0 = aug.crop_yx
        gt = stored["gt"][list(aug.frame_indices), y0 : y0 + 48, x0 : x0 + 48]
        hole = stored["hole"][list(aug.frame_indices), y0 : y0 + 48, x0 : x0 + 48]
        if aug.flip:
            gt, hole = gt[:, :, ::-1], hole[:, :, ::-1]
        assert torch.equal(s["pixel_values_pos"], norm(np.ascontiguousarray(gt)))
        assert torch.equal(s["mask_hole"][:, 0], torch.from_numpy(hole.copy()).float())
        checked.add((aug.flip, aug.frame_indices[0] > aug.frame_indices[-1]))
    assert len(checked) == 4


def test_resize_matches_opencv_and_masks_stay_binary(tmp_path):
    gt, hole, negs = write_video(tmp_path, "v", t=6, h=60, w=90, neg_types=("blur",))
    rebuild_manifest(tmp_path)
    ds = DPODataset(make_args(tmp_path, nframes=6, resolution=40, center_crop=True), FakeTokenizer())
    aug = ds.augmentation(0)
    assert aug.resized_hw == (40, 60) and aug.crop_yx == (0, 10) and aug.frame_indices == tuple(range(6))
    s = ds[0]
    small = np.stack([cv2.resize(f, (60, 40), interpolation=cv2.INTER_AREA) for f in gt])[:, :, 10:50]
    # shrinking: a pixel is hole when any part of its footprint was (area resize > 0)
    small_hole = np.stack([cv2.resize(m.astype(np.uint8) * 255, (60, 40), interpolation=cv2.INTER_AREA) > 0
                           for m in hole]).astype(np.uint8)
    assert torch.equal(s["pixel_values_pos"], norm(small))
    assert torch.equal(s["mask_hole"][:, 0], torch.from_numpy(small_hole[:, :, 10:50]).float())
    # a plain resize of the negative would differ from the GT next to the hole: re-composited instead
    plain_neg = np.stack([cv2.resize(f, (60, 40), interpolation=cv2.INTER_AREA) for f in negs["blur"]])[:, :, 10:50]
    valid = s["masks"].bool().expand(-1, 3, -1, -1)
    assert not torch.equal(norm(plain_neg)[valid], s["pixel_values_pos"][valid])
    assert torch.equal(s["pixel_values_neg"][valid], s["pixel_values_pos"][valid])


def test_plan_augmentation_bounds_and_coverage():
    rng = np.random.default_rng(0)
    starts, ys, xs = set(), set(), set()
    for _ in range(400):
        a = plan_augmentation(rng, num_frames=9, height=30, width=50, nframes=5, resolution=24)
        assert a.resized_hw == (24, 40) and len(a.frame_indices) == 5
        starts.add(a.frame_indices[0])
        ys.add(a.crop_yx[0])
        xs.add(a.crop_yx[1])
        assert not a.flip and not a.empty_prompt
    assert starts == set(range(5)) and ys == {0} and xs == set(range(17))
    a = plan_augmentation(rng, num_frames=5, height=30, width=50, nframes=5, resolution=24, center_crop=True)
    assert a.frame_indices == (0, 1, 2, 3, 4) and a.crop_yx == (0, 8)
    with pytest.raises(ValueError, match="fewer than nframes"):
        plan_augmentation(rng, num_frames=4, height=30, width=50, nframes=5, resolution=24)
    assert resized_size(240, 432, 512) == (512, 922)
    assert resized_size(640, 360, 512) == (910, 512)
    assert resized_size(512, 512, 512) == (512, 512)


# --------------------------------------------------------------------------- regions


@pytest.mark.parametrize("k", [1, 3, 7, 15])
def test_region_masks_equal_regions_module(k):
    r = np.random.default_rng(k)
    for density in (0.0, 0.003, 0.05, 0.6, 1.0):
        hole = (r.random((3, 1, 40, 56)) < density).astype(np.uint8)
        hole[0, 0, 0, :5] = 1  # on the border
        out = region_masks(hole, k)
        for name, ref in zip(("mask_hole", "mask_boundary", "mask_context"), decompose_regions(hole, k)):
            assert torch.equal(out[name], ref), (name, density)
        for name, ref in zip(("mask_hole", "mask_boundary", "mask_context"), decompose_regions_latent(hole, k)):
            assert torch.equal(out[name + "_latent"], ref), (name, density)
        assert torch.equal(out["masks"], 1 - out["mask_hole"])


def test_item_regions_and_latent_shapes(root):
    ds = DPODataset(make_args(root, resolution=40, boundary_dilation=5, random_flip=True), FakeTokenizer())
    s = ds[1]
    for name, ref in zip(("mask_hole", "mask_boundary", "mask_context"), decompose_regions(s["mask_hole"], 5)):
        assert torch.equal(s[name], ref)
    latent = decompose_regions_latent(s["mask_hole"], 5)
    for name, ref in zip(("mask_hole_latent", "mask_boundary_latent", "mask_context_latent"), latent):
        assert s[name].shape == (6, 1, 5, 5)
        assert torch.equal(s[name], ref)
    assert s["mask_boundary"].sum() > 0


def test_masks_latent_is_diffuerasers_interpolation(root):
    """The exact call of DiffuEraser's train_DiffuEraser_stage2.py on the collated batch."""
    ds = DPODataset(make_args(root, resolution=40, random_flip=True, dataset_seed=3), FakeTokenizer())
    batch = collate_fn([ds[i] for i in range(3)])
    latents_hw = (40 // 8, 40 // 8)
    reference = torch.nn.functional.interpolate(batch["masks"].to(dtype=torch.float16), size=(1, *latents_hw))
    assert batch["masks_latent"].shape == reference.shape == (3, 6, 1, 5, 5)
    assert torch.equal(batch["masks_latent"], reference.float())
    assert torch.equal(batch["masks_latent"], batch["masks"][..., ::8, ::8])  # nearest: each block's corner


def test_masks_latent_differs_from_any_hole_latent_region():
    """Nearest (condition channel) vs any-hole (loss weights): a block partly hole is hole only in the latter."""
    hole = np.zeros((2, 1, 32, 32), np.uint8)
    hole[:, :, 3:13, 3:13] = 1  # covers block (0,0) but not its corner pixel; blocks (1,1) fully
    out = region_masks(hole, 3)
    assert out["masks_latent"][0, 0, 0, 0] == 1 and out["mask_hole_latent"][0, 0, 0, 0] == 1
    assert out["masks_latent"][0, 0, 1, 1] == 0
    hole[:, :, 0, 0] = 1
    assert region_masks(hole, 3)["masks_latent"][0, 0, 0, 0] == 0


# --------------------------------------------------------------------------- index


def test_index_order_len_and_neg_type_filter(root):
    ds = DPODataset(make_args(root), FakeTokenizer())
    assert [(p.video, p.neg_type) for p in ds.pairs] == [
        ("vid_a", "blur"),
        ("vid_b", "hallucination"),
        ("vid_b", "blur"),
        ("vid_b", "flicker"),
    ]
    assert len(ds) == 4 and len(DPODataset(make_args(root), FakeTokenizer())) == 4
    assert [ds[i]["neg_type"] for i in range(4)] == ["blur", "hallucination", "blur", "flicker"]
    only = DPODataset(make_args(root, neg_types=["flicker", "hallucination"]), FakeTokenizer())
    assert [(p.video, p.neg_type) for p in only.pairs] == [("vid_b", "hallucination"), ("vid_b", "flicker")]
    assert len(DPODataset(make_args(root, neg_types="blur"), FakeTokenizer())) == 2
    with pytest.raises(UsageError, match="neg_types.*'sharpen'"):
        DPODataset(make_args(root, neg_types=["blur", "sharpen"]), FakeTokenizer())
    with pytest.raises(IndexError):
        ds[4]


def test_alternative_manifest(root):
    data = json.loads((root / fmt.MANIFEST_FILE).read_text())
    for v in data["videos"]:
        v["neg_types"] = [t for t in v["neg_types"] if t != "blur"]
        v["negatives"] = [n for n in v["negatives"] if n["type"] != "blur"]
    filtered = root / "manifest.filtered.json"
    filtered.write_text(json.dumps(data))
    ds = DPODataset(make_args(root, manifest=str(filtered)), FakeTokenizer())
    assert [(p.video, p.neg_type) for p in ds.pairs] == [("vid_b", "hallucination"), ("vid_b", "flicker")]
    with pytest.raises(FormatError, match="nope.json"):
        DPODataset(make_args(root, manifest=str(root / "nope.json")), FakeTokenizer())


def test_unknown_manifest_version_refused(root):
    path = root / fmt.MANIFEST_FILE
    data = json.loads(path.read_text())
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match="format_version 99"):
        DPODataset(make_args(root), FakeTokenizer())


def test_missing_root_and_manifest(tmp_path):
    with pytest.raises(FormatError, match="does not exist"):
        DPODataset(make_args(tmp_path / "absent"), FakeTokenizer())
    with pytest.raises(FormatError, match="no manifest"):
        DPODataset(make_args(tmp_path), FakeTokenizer())


# --------------------------------------------------------------------------- errors and validation


def test_too_short_video_error_names_it_and_skip_invalid_drops_it(root):
    with pytest.raises(FormatError, match=r"vid_a has 8 frames, fewer than args.nframes=9"):
        DPODataset(make_args(root, nframes=9), FakeTokenizer())
    with pytest.warns(UserWarning, match="vid_a has 8 frames"):
        ds = DPODataset(make_args(root, nframes=9, skip_invalid=True), FakeTokenizer())
    assert {p.video for p in ds.pairs} == {"vid_b"}
    assert ds[0]["pixel_values_pos"].shape[0] == 9
    with pytest.raises(UsageError, match="no \\(video, negative\\) pairs"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DPODataset(make_args(root, nframes=11, skip_invalid=True), FakeTokenizer())


def test_corrupt_and_missing_frames_named(root):
    bad = root / "vid_b" / "blur" / "00003.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ds = DPODataset(make_args(root, nframes=8, neg_types="blur"), FakeTokenizer())  # cheap checks pass
    i = [p.video for p in ds.pairs].index("vid_b")
    with pytest.raises(FrameReadError, match=str(bad)):
        ds[i]
    with pytest.warns(UserWarning, match="vid_b.*00003.png"):
        ok = DPODataset(make_args(root, nframes=8, neg_types="blur", skip_invalid=True), FakeTokenizer())
    assert [p.video for p in ok.pairs] == ["vid_a"]
    gone = root / "vid_a" / "masks" / "00002.png"
    gone.unlink()
    ds = DPODataset(make_args(root, nframes=8, neg_types="blur"), FakeTokenizer())
    with pytest.raises(FrameReadError, match=f"{gone}: file not found"):
        ds[0]


def test_frame_of_wrong_size_named(root):
    path = root / "vid_a" / "gt_frames" / "00001.png"
    cv2.imwrite(str(path), np.zeros((40, 30, 3), np.uint8))
    ds = DPODataset(make_args(root, nframes=8, neg_types="blur"), FakeTokenizer())
    with pytest.raises(FormatError, match=f"{path} is 30x40, the manifest says 32x40"):
        ds[0]


def test_missing_stream_folder_found_at_construction(root):
    import shutil

    shutil.rmtree(root / "vid_b" / "flicker")
    with pytest.raises(FormatError, match="flicker is missing.*skip_invalid"):
        DPODataset(make_args(root), FakeTokenizer())
    assert len(DPODataset(make_args(root, neg_types="blur,hallucination"), FakeTokenizer())) == 3
    with pytest.warns(UserWarning, match="vid_b"):
        assert len(DPODataset(make_args(root, skip_invalid=True), FakeTokenizer())) == 1


@pytest.mark.parametrize(
    "override,pattern",
    [
        (dict(resolution=36), "args.resolution must be a multiple of 8"),
        (dict(boundary_dilation=6), "args.boundary_dilation must be odd"),
        (dict(nframes=0), "args.nframes must be an integer >= 1"),
        (dict(nframes=2.5), "args.nframes"),
        (dict(proportion_empty_prompts=1.5), "args.proportion_empty_prompts"),
        (dict(dpo_data_root=None), "args.dpo_data_root is required"),
    ],
)
def test_bad_options_name_the_arg(root, override, pattern):
    with pytest.raises(UsageError, match=pattern):
        DPODataset(make_args(root, **override), FakeTokenizer())


def test_tokenizer_required(root):
    with pytest.raises(UsageError, match="tokenizer"):
        DPODataset(make_args(root), None)


# --------------------------------------------------------------------------- prompts and randomness


def test_prompts_default_and_empty(root):
    tok = FakeTokenizer()
    ds = DPODataset(make_args(root), tok)
    assert torch.equal(ds[0]["input_ids"], tokens(DEFAULT_PROMPT))  # vid_a has no prompt
    assert torch.equal(ds[1]["input_ids"], tokens("a dirt road"))
    assert tok.calls == [DEFAULT_PROMPT, "a dirt road"]
    custom = DPODataset(make_args(root, default_prompt=""), FakeTokenizer())
    assert torch.equal(custom[0]["input_ids"], tokens(""))
    empty = DPODataset(make_args(root, proportion_empty_prompts=1.0), FakeTokenizer())
    assert all(torch.equal(empty[i]["input_ids"], tokens("")) for i in range(len(empty)))
    half = DPODataset(make_args(root, proportion_empty_prompts=0.5, dataset_seed=1), FakeTokenizer())
    drawn = []
    for epoch in range(40):
        half.set_epoch(epoch)
        drawn.append(torch.equal(half[1]["input_ids"], tokens("")))
    assert 5 < sum(drawn) < 35


def test_seeded_sampling_is_reproducible(root):
    args = make_args(root, random_flip=True, random_reverse=True, dataset_seed=7)
    a, b = DPODataset(args, FakeTokenizer()), DPODataset(args, FakeTokenizer())
    for i in (3, 0, 2):  # order does not matter
        sa, sb = a[i], b[i]
        assert all(torch.equal(sa[k], sb[k]) for k in sa if isinstance(sa[k], torch.Tensor))
    plans = set()
    for epoch in range(8):
        a.set_epoch(epoch)
        plans.add(a.augmentation(3))
    assert len(plans) > 1


def test_unseeded_sampling_follows_torch_seed(root):
    ds = DPODataset(make_args(root, random_flip=True, random_reverse=True), FakeTokenizer())
    torch.manual_seed(0)
    first = [ds.augmentation(3) for _ in range(6)]
    torch.manual_seed(0)
    assert [ds.augmentation(3) for _ in range(6)] == first
    assert len(set(first)) > 1


# --------------------------------------------------------------------------- DataLoader


@pytest.mark.parametrize("collate", [collate_fn, None])
def test_dataloader_with_workers(root, collate):
    ds = DPODataset(make_args(root, random_flip=True, random_reverse=True), FakeTokenizer())
    kwargs = {} if collate is None else {"collate_fn": collate}
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False, **kwargs)
    batches = list(loader)
    assert len(batches) == 2
    b = batches[1]
    assert b["pixel_values_pos"].shape == (2, 6, 3, 32, 32)
    assert b["mask_context_latent"].shape == (2, 6, 1, 4, 4)
    assert b["input_ids"].shape == (2, 77) and b["input_ids"].dtype == torch.long
    assert b["neg_type"] == ["blur", "flicker"] and b["video"] == ["vid_b", "vid_b"]
    valid = b["masks"].bool().expand(-1, -1, 3, -1, -1)
    assert torch.equal(b["pixel_values_pos"][valid], b["pixel_values_neg"][valid])
    assert torch.equal(b["conditioning_pos"], b["conditioning_neg"])


def _collate_and_report_sharing(items):
    """In a worker: collate_fn's batch and, per tensor key, whether collate_fn put it in shared memory
    (the worker's queue copies any other tensor into shared memory once more)."""
    batch = collate_fn(items)
    return batch, {k: v.is_shared() for k, v in batch.items() if isinstance(v, torch.Tensor)}


def test_collate_fn_stacks_into_shared_memory_in_a_worker_and_keeps_one_condition(root):
    ds = DPODataset(make_args(root), FakeTokenizer())
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=_collate_and_report_sharing)
    for batch, shared in loader:
        assert shared and all(shared.values()), shared
        assert batch["conditioning_neg"] is batch["conditioning_pos"]
    items = [ds[0], ds[1]]
    batch = collate_fn(items)  # in this process: plain memory, equal to torch's own collate
    assert not batch["pixel_values_pos"].is_shared()
    reference = torch.utils.data.default_collate(items)
    assert batch.keys() == reference.keys()
    for key, value in items[0].items():  # tensors stacked as torch does; other values listed
        if isinstance(value, torch.Tensor):
            assert torch.equal(batch[key], reference[key]), key
        else:
            assert batch[key] == [item[key] for item in items], key
    assert batch["conditioning_neg"] is batch["conditioning_pos"]
    separate = [dict(items[0], conditioning_neg=items[0]["conditioning_neg"].clone()), items[1]]
    assert collate_fn(separate)["conditioning_neg"] is not collate_fn(separate)["conditioning_pos"]


def test_workers_draw_different_parameters(root):
    """Unseeded: workers must not share one RNG stream (the classic numpy-in-workers bug)."""
    ds = DPODataset(make_args(root, random_flip=True, random_reverse=True), FakeTokenizer())
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, [3] * 8), batch_size=1, num_workers=2, collate_fn=collate_fn
    )
    torch.manual_seed(0)
    firsts = [tuple(b["pixel_values_pos"][0, :, 0, 0, 0].tolist()) for b in loader]
    assert len(set(firsts)) > 2


def test_dpo_dataset_entry_point_from_repo_root(root):
    """The usage of the issue, verbatim, from the repository root (thin re-export in dataset/)."""
    code = textwrap.dedent(
        f"""
        import sys, argparse, torch
        sys.path.insert(1, {str(Path(__file__).parent)!r})
        from test_dataset import FakeTokenizer
        from dataset.dpo_dataset import DPODataset, collate_fn
        args = argparse.Namespace()
        args.dpo_data_root = {str(root)!r}; args.nframes = 8; args.resolution = 32
        args.proportion_empty_prompts = 0; args.boundary_dilation = 7
        dataset = DPODataset(args, FakeTokenizer())
        sample = dataset[0]
        print(len(dataset), tuple(sample["pixel_values_pos"].shape), sample["neg_type"])
        """
    )
    # only this checkout's package on the path (as an install of it would be; an editable install of
    # another checkout must not answer)
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "(8,", "3,", "32,", "32)", "blur"]


# --------------------------------------------------------------------------- memory reuse


def test_output_memory_reused_only_when_no_tensor_is_alive(root):
    ds = DPODataset(make_args(root, random_flip=True, dataset_seed=0), FakeTokenizer())
    kept = ds[1]
    snapshot = {k: v.clone() for k, v in kept.items() if isinstance(v, torch.Tensor)}
    mask_view = ds[2]["masks"][0]  # only a view of one field survives
    mask_copy = mask_view.clone()
    other = ds[3]
    for k, v in snapshot.items():
        assert torch.equal(kept[k], v), k  # a sample held by the caller is never overwritten
    assert torch.equal(mask_view, mask_copy)
    ptr = other["pixel_values_pos"].data_ptr()
    del other
    again = ds[3]
    assert again["pixel_values_pos"].data_ptr() == ptr  # freed: its memory is reused
    reference = DPODataset(make_args(root, random_flip=True, dataset_seed=0), FakeTokenizer())[3]
    assert all(torch.equal(again[k], reference[k]) for k in reference if isinstance(reference[k], torch.Tensor))


def test_items_from_threads(root):
    from concurrent.futures import ThreadPoolExecutor

    ds = DPODataset(make_args(root, dataset_seed=0), FakeTokenizer())
    expected = [ds[i]["pixel_values_neg"].clone() for i in range(len(ds))]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: ds[i % len(ds)]["pixel_values_neg"].clone(), range(16)))
    assert all(torch.equal(g, expected[i % len(ds)]) for i, g in enumerate(got))


def test_set_epoch_reaches_persistent_workers(root):
    """The epoch lives in shared memory: persistent DataLoader workers see set_epoch too."""
    ds = DPODataset(make_args(root, random_flip=True, random_reverse=True, dataset_seed=5), FakeTokenizer())
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    per_epoch = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        per_epoch.append([float(item["pixel_values_pos"].sum()) for item in loader])
    assert per_epoch[0] != per_epoch[1] and per_epoch[1] != per_epoch[2]
    ds.set_epoch(1)
    assert [float(ds[i]["pixel_values_pos"].sum()) for i in range(len(ds))] == per_epoch[1]


def test_a_training_scripts_seed_does_not_switch_on_seeded_sampling(root):
    assert DPODataset(make_args(root, seed=42), FakeTokenizer()).seed is None
    assert DPODataset(make_args(root, dataset_seed=42), FakeTokenizer()).seed == 42


def test_a_thin_hole_survives_downscaling(tmp_path):
    """A 1-px hole line must not vanish when the dataset shrinks the clip (nearest would drop it)."""
    gt, _ = make_clip(6, 64, 64)
    hole = np.zeros((6, 64, 64), bool)
    hole[:, 20, :] = True  # a 1-px line on an even row: nearest 64 -> 32 keeps only odd rows... or drops it
    neg = 255 - gt
    write_video_entry(tmp_path, fmt.VideoMeta("thin", 6, 64, 64, ["blur"]), gt, hole, {"blur": neg})
    rebuild_manifest(tmp_path)
    item = DPODataset(make_args(tmp_path, resolution=32, center_crop=True), FakeTokenizer())[0]
    assert item["mask_hole"].sum() > 0
    assert (item["masks"] == 0).sum(dim=(1, 2, 3)).min() >= 32  # the whole line, in every frame
    valid = item["masks"].bool().expand_as(item["pixel_values_pos"])
    assert torch.equal(item["pixel_values_neg"][valid], item["pixel_values_pos"][valid])
    assert not torch.equal(item["pixel_values_neg"], item["pixel_values_pos"])


def test_strength_variants_are_items_with_their_strength(tmp_path):
    t, h, w = 8, 40, 32
    gt, hole = make_clip(t, h, w)
    negatives = {"blur": 255 - gt, "blur_s0.50": gt // 2, "inpaint": gt // 3}
    meta = fmt.VideoMeta("v", t, h, w, [], negatives={s: {} for s in negatives})
    write_video_entry(tmp_path, meta, gt, hole, negatives)
    rebuild_manifest(tmp_path)
    ds = DPODataset(make_args(tmp_path, dataset_seed=0), FakeTokenizer())
    assert [(p.neg_type, p.neg_strength, p.stream) for p in ds.pairs] == [
        ("blur", 1.0, "blur"), ("blur", 0.5, "blur_s0.50"), ("inpaint", 1.0, "inpaint")]
    items = [ds[i] for i in range(3)]
    assert [(i["neg_type"], i["neg_strength"]) for i in items] == [("blur", 1.0), ("blur", 0.5), ("inpaint", 1.0)]
    # each item reads its own stream: the hole content differs between the variants of one video
    hole_t = items[0]["mask_hole"] > 0.5
    assert not torch.equal(items[0]["pixel_values_neg"][hole_t.expand_as(items[0]["pixel_values_neg"])],
                           items[1]["pixel_values_neg"][hole_t.expand_as(items[1]["pixel_values_neg"])])
    only_blur = DPODataset(make_args(tmp_path, neg_types="blur"), FakeTokenizer())
    assert [p.stream for p in only_blur.pairs] == ["blur", "blur_s0.50"]


def test_a_loop_keeping_the_previous_sample_alternates_two_buffers(root):
    ds = DPODataset(make_args(root, dataset_seed=0), FakeTokenizer())
    previous, pointers = None, []
    for step in range(8):
        sample = ds[step % len(ds)]  # the previous sample is alive while this one is made
        pointers.append(sample["pixel_values_pos"].data_ptr())
        if previous is not None:
            assert previous["pixel_values_pos"].data_ptr() != pointers[-1]
            assert torch.equal(previous["masks"], previous_masks)  # never overwritten
        previous, previous_masks = sample, sample["masks"].clone()
        del sample
    assert len(set(pointers)) == 2  # two buffers alternate: no fresh allocation after the first two
