"""Three-region decomposition: invariants over random masks and sizes (hypothesis)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset.region_mask_utils import (
    decompose_regions,
    decompose_regions_latent,
    hole_to_latent,
    latent_kernel_size,
)

odd_kernels = st.sampled_from([1, 3, 5, 7, 9, 15, 17, 25])


@st.composite
def masks(draw, multiple=1, max_side=48):
    h = draw(st.integers(1, max_side // multiple)) * multiple
    w = draw(st.integers(1, max_side // multiple)) * multiple
    lead = draw(st.sampled_from([(), (2,), (3, 1), (2, 2, 1)]))
    density = draw(st.sampled_from([0.0, 0.02, 0.3, 0.9, 1.0]))
    seed = draw(st.integers(0, 2**16))
    r = np.random.default_rng(seed)
    return r.random((*lead, h, w)) < density


def check_partition(hole, boundary, context, expected_hole=None):
    for m in (hole, boundary, context):
        assert m.dtype == torch.float32
        assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
    assert torch.all(hole * boundary == 0) and torch.all(hole * context == 0)
    assert torch.all(boundary * context == 0)
    assert torch.equal(hole + boundary + context, torch.ones_like(hole))
    if expected_hole is not None:
        assert torch.equal(hole, expected_hole)


@settings(max_examples=60, deadline=None)
@given(masks(), odd_kernels)
def test_pixel_partition(mask, k):
    hole, boundary, context = decompose_regions(mask, k)
    assert hole.shape == mask.shape
    check_partition(hole, boundary, context, torch.from_numpy(mask).float())


@settings(max_examples=60, deadline=None)
@given(masks(multiple=8, max_side=64), odd_kernels)
def test_latent_partition(mask, k):
    hole, boundary, context = decompose_regions_latent(mask, k)
    assert hole.shape == (*mask.shape[:-2], mask.shape[-2] // 8, mask.shape[-1] // 8)
    check_partition(hole, boundary, context)
    # any-hole rule: a latent cell is hole iff its 8x8 block holds a hole pixel
    blocks = mask.reshape(*mask.shape[:-2], mask.shape[-2] // 8, 8, mask.shape[-1] // 8, 8)
    assert np.array_equal(hole.numpy().astype(bool), blocks.any(axis=(-3, -1)))


@pytest.mark.parametrize("latent", [False, True])
def test_empty_and_full_holes(latent):
    fn = decompose_regions_latent if latent else decompose_regions
    empty = np.zeros((3, 1, 32, 40), bool)
    hole, boundary, context = fn(empty, 7)
    assert hole.sum() == 0 and boundary.sum() == 0 and torch.all(context == 1)
    hole, boundary, context = fn(~empty, 7)
    assert torch.all(hole == 1) and boundary.sum() == 0 and context.sum() == 0


def test_ring_width_is_three_pixels_for_kernel_seven():
    mask = np.zeros((64, 64), bool)
    mask[30:34, 30:34] = True
    _, boundary, _ = decompose_regions(mask, 7)
    ys, xs = np.nonzero(boundary.numpy())
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (27, 36, 27, 36)
    assert boundary.sum() == 10 * 10 - 4 * 4


def test_thin_hole_survives_latent_downsampling():
    mask = np.zeros((1, 1, 64, 64), np.uint8)
    mask[..., :, 21:23] = 255  # a 2 px wide vertical line: nearest downsampling would drop it
    nearest = mask[..., ::8, ::8]
    assert nearest.sum() == 0
    hole = hole_to_latent(mask)
    assert hole.shape == (1, 1, 8, 8)
    assert hole[..., :, 2].sum() == 8 and hole.sum() == 8


def test_input_types_agree():
    r = np.random.default_rng(0)
    b = r.random((2, 1, 16, 24)) < 0.2
    outs = [
        decompose_regions(x, 5)
        for x in (b, b.astype(np.uint8) * 255, b.astype(np.uint8), b.astype(np.float32), torch.from_numpy(b))
    ]
    for out in outs[1:]:
        for a, c in zip(outs[0], out):
            assert torch.equal(a, c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_input_stays_on_device():
    hole = torch.zeros(2, 1, 16, 16, device="cuda")
    hole[..., 4:8, 4:8] = 1
    for m in decompose_regions(hole) + decompose_regions_latent(hole):
        assert m.is_cuda


def test_latent_kernel_size_rules():
    assert latent_kernel_size(7) == 3
    sizes = [latent_kernel_size(k) for k in range(1, 200)]
    assert all(s % 2 == 1 and s >= 3 for s in sizes)
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert latent_kernel_size(25) == 5 and latent_kernel_size(41) == 7


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="boundary_dilation"):
        decompose_regions(np.zeros((8, 8)), 4)
    with pytest.raises(ValueError, match="multiple of vae_scale"):
        decompose_regions_latent(np.zeros((12, 16)), 7)
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W\]"):
        decompose_regions(np.zeros(8), 7)


@settings(max_examples=40, deadline=None)
@given(masks(multiple=8, max_side=64), odd_kernels)
def test_cpu_path_equals_max_pool_reference(mask, k):
    """The CPU fast path (cv2) is bit-identical to the pooling definition (used on CUDA)."""
    import torch.nn.functional as F

    t = torch.from_numpy(mask).float()
    h, w = t.shape[-2:]
    flat = t.reshape(-1, 1, h, w)
    grown = F.max_pool2d(flat, k, stride=1, padding=k // 2).reshape(t.shape)
    _, boundary, context = decompose_regions(mask, k)
    assert torch.equal(boundary, grown - t) and torch.equal(context, 1 - grown)
    latent = F.max_pool2d(flat, 8, stride=8).reshape(*t.shape[:-2], h // 8, w // 8)
    assert torch.equal(hole_to_latent(mask), latent)


def test_empty_batches_and_read_only_arrays():
    for fn, shape in ((decompose_regions, (0, 1, 16, 16)), (decompose_regions_latent, (0, 1, 2, 2))):
        outs = fn(np.zeros((0, 1, 16, 16), bool), 7)
        assert all(o.shape == shape for o in outs)
    frozen = np.zeros((2, 16, 16), np.uint8)
    frozen[:, 4:6, 4:6] = 255
    frozen.flags.writeable = False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "non-writable array" warning would fail here
        hole, boundary, _ = decompose_regions(frozen, 3)
    assert hole.sum() == 8 and boundary.sum() == 2 * (16 - 4)
