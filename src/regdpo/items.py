"""Building one training item of a (GT, negative) pair: the single source of truth shared by the folder
reader (``regdpo.dataset.DPODataset``) and the shard reader (``regdpo.packed_dataset``).

The readers differ only in where a frame comes from (a ``FrameSource``: PNG files of a video folder, or
the members of a packed sample); the augmentation draw, the resize, the hole-holding crop, the flip, the
re-composite, the region masks, the tokens and the memory reuse are all here (see ``regdpo.dataset`` for
the fields and conventions of an item).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, replace
from typing import Any, Callable, Protocol

import cv2
import numpy as np
import torch

from . import format as fmt
from .crops import DEFAULT_MIN_HOLE_COVERAGE, choose_crop, choose_window_start, crop_coverage
from .errors import FormatError
from .regions import block_any_np, check_kernel_size, decompose_regions, dilate_mask_np, latent_kernel_size

cv2.setNumThreads(1)  # one thread per DataLoader worker; threads only fight with the workers

DEFAULT_PROMPT = "clean background"
"""Prompt of videos whose manifest entry has none (``args.default_prompt`` overrides it)."""

VAE_SCALE = 8

# --------------------------------------------------------------------------- index


@dataclass(frozen=True)
class PairIndexEntry:
    """One (video, negative stream) pair: what an item of the dataset reads.

    ``stream`` is the negative's folder (``blur``, ``blur_s0.50``, ``inpaint_c1``), ``neg_strength`` its strength,
    ``pair_weight`` the manifest's ``pair_weight`` of it (``regdpo select --weights``; 1.0 when absent)."""

    video: str
    neg_type: str
    num_frames: int
    height: int
    width: int
    prompt: str
    neg_strength: float = 1.0
    stream: str = ""
    pair_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.stream:
            object.__setattr__(self, "stream", fmt.stream_name(self.neg_type, self.neg_strength))


# --------------------------------------------------------------------------- augmentation (pure)


@dataclass(frozen=True)
class Augmentation:
    """Random parameters of one item, shared by every stream of it.

    ``frame_indices`` are the stored frames to read, in output order (reversed when the
    item is temporally reversed); ``resized_hw`` the size after the short-side resize;
    ``crop_yx`` the top-left corner of the ``crop_hw`` crop in the resized frame (``R x R``,
    or the whole resized frame with ``full_frame``); ``flip`` a horizontal flip after the
    crop; ``empty_prompt`` replaces the prompt by ``""``. ``start_draw`` and ``crop_draw`` are
    the uniforms the window start and the crop were drawn from (``regdpo.crops`` draws the
    hole-holding crop from them once the masks are read).
    """

    frame_indices: tuple[int, ...]
    resized_hw: tuple[int, int]
    crop_yx: tuple[int, int]
    flip: bool
    empty_prompt: bool
    crop_hw: tuple[int, int] = (0, 0)
    start_draw: float = 0.0
    crop_draw: tuple[float, float] = (0.0, 0.0)

    def with_start(self, start: int) -> "Augmentation":
        """The same parameters with the window starting at stored frame ``start``."""
        indices = tuple(range(start, start + len(self.frame_indices)))
        reversed_ = len(indices) > 1 and self.frame_indices[0] > self.frame_indices[-1]
        return replace(self, frame_indices=indices[::-1] if reversed_ else indices)


def resized_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """``(h, w)`` after resizing the short side to ``resolution`` (aspect kept, long side rounded)."""
    if height <= width:
        return resolution, max(resolution, round(width * resolution / height))
    return max(resolution, round(height * resolution / width)), resolution


def full_frame_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """``(h, w)`` of a full-frame item: short side ``resolution``, long side rounded to a multiple of 8."""
    rh, rw = resized_size(height, width, resolution)
    return (max(resolution, VAE_SCALE * round(rh / VAE_SCALE)), max(resolution, VAE_SCALE * round(rw / VAE_SCALE)))


def plan_augmentation(
    rng: np.random.Generator,
    *,
    num_frames: int,
    height: int,
    width: int,
    nframes: int,
    resolution: int,
    center_crop: bool = False,
    random_flip: bool = False,
    random_reverse: bool = False,
    proportion_empty_prompts: float = 0.0,
    full_frame: bool = False,
) -> Augmentation:
    """Draw the parameters of one item. Always draws the same six numbers in the same order,
    so switching one option on or off does not change the others' draws.

    ``crop_yx`` is the plain uniform (or centred) crop; ``DPODataset`` replaces it by one that
    holds the hole (``regdpo.crops.choose_crop``) once it has read the window's masks."""
    if num_frames < nframes:
        raise ValueError(f"clip has {num_frames} frames, fewer than nframes={nframes}")
    start_u, y_u, x_u, flip_u, reverse_u, prompt_u = rng.random(6)
    start = min(int(start_u * (num_frames - nframes + 1)), num_frames - nframes)
    indices = tuple(range(start, start + nframes))
    if random_reverse and reverse_u < 0.5:
        indices = indices[::-1]
    if full_frame:
        rh, rw = full_frame_size(height, width, resolution)
        crop_hw, y0, x0 = (rh, rw), 0, 0
    else:
        rh, rw = resized_size(height, width, resolution)
        crop_hw = (resolution, resolution)
        if center_crop:
            y0, x0 = (rh - resolution) // 2, (rw - resolution) // 2
        else:
            y0 = min(int(y_u * (rh - resolution + 1)), rh - resolution)
            x0 = min(int(x_u * (rw - resolution + 1)), rw - resolution)
    return Augmentation(
        frame_indices=indices,
        resized_hw=(rh, rw),
        crop_yx=(y0, x0),
        flip=bool(random_flip and flip_u < 0.5),
        empty_prompt=bool(prompt_u < proportion_empty_prompts),
        crop_hw=crop_hw,
        start_draw=float(start_u),
        crop_draw=(float(y_u), float(x_u)),
    )


# --------------------------------------------------------------------------- region masks


def region_masks(
    hole: np.ndarray, boundary_dilation: int = 7, arena: "_FloatArena | None" = None
) -> dict[str, torch.Tensor]:
    """Region masks of a hole clip ``uint8 [F,1,R,R]`` in {0, 1} (1 = hole; ``R`` a multiple of 8).

    Returns ``masks`` (1 = valid), ``mask_hole``, ``mask_boundary``, ``mask_context`` at
    ``R``, ``masks_latent`` (see ``masks_latent``) and the three ``mask_*_latent`` at ``R/8``,
    all float32 in {0, 1}. Values are
    identical to ``regdpo.regions.decompose_regions`` / ``decompose_regions_latent``:
    the same numpy kernels (``dilate_mask_np``, ``block_any_np``) on the uint8 mask,
    written straight into ``arena`` (default: new arrays) without torch round trips.
    """
    if hole.dtype != np.uint8 or hole.ndim != 4 or hole.shape[1] != 1:
        raise ValueError(f"hole must be uint8 [F,1,H,W] in {{0,1}}, got {hole.dtype} {hole.shape}")
    frames, _, height, width = hole.shape
    if height % VAE_SCALE or width % VAE_SCALE:
        raise ValueError(f"mask size {width}x{height} is not a multiple of {VAE_SCALE}")
    check_kernel_size(boundary_dilation)
    grown = dilate_mask_np(hole, boundary_dilation)
    latent_hole, latent_boundary, latent_context = decompose_regions(
        block_any_np(hole, VAE_SCALE), latent_kernel_size(boundary_dilation, VAE_SCALE)
    )
    arena = arena or _FloatArena(4 * hole.size)
    masks = arena.copy(1 - hole)
    return {
        "masks": masks,
        "masks_latent": masks_latent(masks),
        "mask_hole": arena.copy(hole),
        "mask_boundary": arena.copy(grown - hole),
        "mask_context": arena.copy(1 - grown),
        "mask_hole_latent": latent_hole,
        "mask_boundary_latent": latent_boundary,
        "mask_context_latent": latent_context,
    }


def masks_latent(masks: torch.Tensor) -> torch.Tensor:
    """BrushNet's mask channel: ``masks`` ``[F,1,H,W]`` (1 = valid) at the latent size ``H/8 x W/8``.

    Exactly what DiffuEraser's training loop feeds the condition (``train_DiffuEraser_stage2.py``:
    ``F.interpolate(batch["masks"], size=(1, h, w))``, mode nearest), i.e. the pixel at the top-left
    corner of every 8x8 block. It differs from ``mask_hole_latent`` (any-hole rule, for the loss
    weights) wherever a block is partly hole.
    """
    height, width = masks.shape[-2:]
    return torch.nn.functional.interpolate(masks, size=(height // VAE_SCALE, width // VAE_SCALE))


class _FloatArena:
    """One float32 buffer carved into the outputs of an item (see ``_Buffers``).

    Remembers a weak reference to every view it hands out: each returned tensor keeps its
    view alive (``torch.from_numpy``), so the buffer is free once all of them are dead.
    """

    def __init__(self, size: int):
        self.buffer = np.empty(size, np.float32)
        self.offset = 0
        self.views: list[weakref.ref] = []

    def reset(self) -> "_FloatArena":
        self.offset = 0
        self.views = []
        return self

    def in_use(self) -> bool:
        return any(view() is not None for view in self.views)

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """The next ``shape`` slice of the buffer (uninitialised)."""
        size = int(np.prod(shape))
        out = self.buffer[self.offset : self.offset + size].reshape(shape)
        self.offset += size
        self.views.append(weakref.ref(out))
        return out

    def copy(self, array: np.ndarray) -> torch.Tensor:
        """``array`` (e.g. a uint8 mask) as float32, in the next slice of the buffer."""
        out = self.take(array.shape)
        np.copyto(out, array)
        return torch.from_numpy(out)

    def normalised(self, pixels: np.ndarray) -> torch.Tensor:
        """``uint8`` pixels -> float32 ``x / 127.5 - 1`` in ``[-1, 1]`` (0 -> -1, 255 -> 1 exactly)."""
        out = self.take(pixels.shape)
        np.divide(pixels, np.float32(127.5), out=out, dtype=np.float32)
        np.subtract(out, np.float32(1.0), out=out)
        return torch.from_numpy(out)


class _Buffers(threading.local):
    """Memory reused from item to item, per thread (and so per ``DataLoader`` worker).

    An item returns ~300 MB of float32 at 22 x 512 x 512; the page faults of fresh memory
    for it cost about as much as the arithmetic (and far more on a busy machine). So the
    output buffers of earlier items are reused, but only once nothing refers to them any
    more: every returned tensor keeps alive the numpy view it was made from, so weak
    references to those views tell whether any tensor, or anything derived from one
    (a slice, a ``.numpy()`` array), is still alive. Up to ``POOLED`` buffers are kept, so a
    loop that holds the previous sample while reading the next one (``prev, s = s, ds[i]``)
    alternates between two buffers instead of allocating; a free buffer at least as large
    as needed serves a smaller item (``full_frame`` sizes differ per video).
    A sample kept by the caller is never overwritten: a new buffer is allocated instead.
    The uint8 working arrays never leave ``__getitem__`` and are always reused.
    """

    POOLED = 2

    def __init__(self) -> None:
        self.outputs: list[_FloatArena] = []
        self.scratch: dict[str, np.ndarray] = {}

    def output_arena(self, size: int) -> _FloatArena:
        free = [a for a in self.outputs if a.buffer.size >= size and not a.in_use()]
        if free:
            return min(free, key=lambda a: a.buffer.size).reset()
        arena = _FloatArena(size)
        in_use_first = sorted(self.outputs, key=lambda a: not a.in_use())  # those come back once freed
        self.outputs = [arena, *in_use_first[: self.POOLED - 1]]
        return arena

    def work(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A uint8 ``shape`` working array (uninitialised), a prefix of a buffer that only grows."""
        size = int(np.prod(shape))
        flat = self.scratch.get(name)
        if flat is None or flat.size < size:
            flat = self.scratch[name] = np.empty(size, np.uint8)
        return flat[:size].reshape(shape)

# --------------------------------------------------------------------------- building an item


class FrameSource(Protocol):
    """The stored frames of one pair: masks, GT and negative, at the stored size (``height x width``)."""

    def mask(self, t: int) -> np.ndarray:
        """Frame ``t``'s mask, ``uint8 [H, W]`` (255 = hole)."""

    def gt_bgr(self, t: int) -> np.ndarray:
        """Frame ``t`` of the GT, ``uint8 [H, W, 3]`` BGR (``cv2.imdecode``'s order)."""

    def negative_bgr(self, t: int) -> np.ndarray:
        """Frame ``t`` of the negative, ``uint8 [H, W, 3]`` BGR."""

    def frames_with_hole(self) -> tuple[bool, ...]:
        """Whether each stored mask frame has a hole."""


@dataclass(frozen=True)
class ItemOptions:
    """The item-shaping options of a reader (``DPODataset``'s ``args``, checked)."""

    nframes: int
    resolution: int
    boundary_dilation: int = 7
    proportion_empty_prompts: float = 0.0
    center_crop: bool = False
    full_frame: bool = False
    min_hole_coverage: float = DEFAULT_MIN_HOLE_COVERAGE
    random_flip: bool = False
    random_reverse: bool = False
    default_prompt: str = DEFAULT_PROMPT


class ItemBuilder:
    """Builds items from a pair, its ``FrameSource`` and a generator; reuses memory per thread (``_Buffers``)."""

    def __init__(self, options: ItemOptions, tokenizer: Callable[..., Any]):
        self.options = options
        self.tokenizer = tokenizer
        self.buffers = _Buffers()

    def __getstate__(self) -> dict[str, Any]:  # for DataLoader workers: buffers stay behind
        state = self.__dict__.copy()
        del state["buffers"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.buffers = _Buffers()

    def plan(self, pair: PairIndexEntry, source: FrameSource, rng: np.random.Generator) -> tuple[Augmentation, np.ndarray]:
        """The item's parameters and its window's resized hole masks ``uint8 [F, rh, rw]`` in {0, 1}."""
        o = self.options
        if pair.num_frames < o.nframes:
            raise FormatError(f"video {pair.video} has {pair.num_frames} frames, fewer than args.nframes={o.nframes}")
        aug = plan_augmentation(
            rng,
            num_frames=pair.num_frames,
            height=pair.height,
            width=pair.width,
            nframes=o.nframes,
            resolution=o.resolution,
            center_crop=o.center_crop,
            random_flip=o.random_flip,
            random_reverse=o.random_reverse,
            proportion_empty_prompts=o.proportion_empty_prompts,
            full_frame=o.full_frame,
        )
        holes = self.read_holes(pair, source, aug)
        if not holes.any() and pair.num_frames > o.nframes:
            # a hole-free window of a clip with a hole elsewhere: move the window onto the hole
            start = choose_window_start(source.frames_with_hole(), o.nframes, aug.start_draw)
            if start != min(aug.frame_indices):
                aug = aug.with_start(start)
                holes = self.read_holes(pair, source, aug)
        if aug.crop_hw != aug.resized_hw and o.min_hole_coverage > 0:
            count = holes.sum(axis=0, dtype=np.int32)
            coverage = crop_coverage(count, aug.crop_hw)
            crop = choose_crop(coverage, int(count.sum()), o.min_hole_coverage, aug.crop_draw, o.center_crop)
            aug = replace(aug, crop_yx=crop)
        return aug, holes

    def read_holes(self, pair: PairIndexEntry, source: FrameSource, aug: Augmentation) -> np.ndarray:
        """The window's masks, resized as the frames are, as hole ``uint8 [F, rh, rw]`` in {0, 1}."""
        rh, rw = aug.resized_hw
        resize = (rh, rw) != (pair.height, pair.width)
        upscale = rh > pair.height or rw > pair.width
        holes = self.buffers.work("holes", (len(aug.frame_indices), rh, rw))
        for k, t in enumerate(aug.frame_indices):
            mask = source.mask(t)
            if resize:
                mask = _resize_hole(mask, (rw, rh), upscale)
            np.greater(mask, 127, out=holes[k].view(bool))
        return holes

    def build(self, pair: PairIndexEntry, source: FrameSource, rng: np.random.Generator) -> dict[str, Any]:
        """The item of ``pair`` for the draw of ``rng`` (fields: ``regdpo.dataset``)."""
        aug, holes = self.plan(pair, source, rng)
        pos, neg, hole = self.load_window(pair, source, aug, holes)

        arena = self.buffers.output_arena(3 * pos.size + 4 * hole.size)
        pixel_values_pos = arena.normalised(pos)
        pixel_values_neg = arena.normalised(neg)
        np.multiply(pos, 1 - hole, out=pos)  # black out the hole: it normalises to exactly -1
        conditioning = arena.normalised(pos)
        regions = region_masks(hole, self.options.boundary_dilation, arena)

        prompt = pair.prompt or self.options.default_prompt
        if aug.empty_prompt:
            prompt = ""
        return {
            "pixel_values_pos": pixel_values_pos,
            "pixel_values_neg": pixel_values_neg,
            "conditioning_pos": conditioning,
            "conditioning_neg": conditioning,
            **regions,
            "input_ids": self.tokenize(prompt),
            "neg_type": pair.neg_type,
            "neg_strength": pair.neg_strength,
            "stream": pair.stream,
            "pair_weight": pair.pair_weight,
            "video": pair.video,
        }

    def tokenize(self, prompt: str) -> torch.Tensor:
        tokens = self.tokenizer(
            prompt,
            max_length=self.tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )["input_ids"]
        return torch.as_tensor(tokens, dtype=torch.long).reshape(-1)

    def load_window(
        self, pair: PairIndexEntry, source: FrameSource, aug: Augmentation, holes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read and augment the frames of one item (``holes``: the window's resized masks).

        Returns ``pos``, ``neg``: ``uint8 [F,3,h,w]`` RGB, and ``hole``: ``uint8 [F,1,h,w]``
        in {0, 1}, with ``neg`` equal to ``pos`` wherever ``hole`` is 0 (``h, w = aug.crop_hw``).
        """
        f = len(aug.frame_indices)
        (rh, rw), (y0, x0), (ch, cw) = aug.resized_hw, aug.crop_yx, aug.crop_hw
        resize = (rh, rw) != (pair.height, pair.width)
        upscale = rh > pair.height or rw > pair.width
        interp = cv2.INTER_LINEAR if upscale else cv2.INTER_AREA

        pos = self.buffers.work("pos", (f, 3, ch, cw))
        neg = self.buffers.work("neg", (f, 3, ch, cw))
        hole = self.buffers.work("hole", (f, 1, ch, cw))
        rgb_from_bgr = [2, 0, 1, 1, 0, 2]  # mixChannels pairs: HWC BGR -> CHW RGB planes
        crop = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        for k, t in enumerate(aug.frame_indices):
            gt_bgr = source.gt_bgr(t)
            neg_bgr = source.negative_bgr(t)
            if resize:
                gt_bgr = cv2.resize(gt_bgr, (rw, rh), interpolation=interp)
                neg_bgr = cv2.resize(neg_bgr, (rw, rh), interpolation=interp)
            planes = [pos[k, 0], pos[k, 1], pos[k, 2], neg[k, 0], neg[k, 1], neg[k, 2], hole[k, 0]]
            cv2.mixChannels([gt_bgr[crop]], planes[0:3], rgb_from_bgr)
            cv2.mixChannels([neg_bgr[crop]], planes[3:6], rgb_from_bgr)
            np.copyto(hole[k, 0], holes[k][crop])
            if aug.flip:
                for plane in planes:
                    cv2.flip(plane, 1, dst=plane)
        # re-composite: the negative equals the positive wherever the (resized) mask is valid
        np.copyto(neg, pos, where=hole == 0)
        return pos, neg, hole


def _resize_hole(mask: np.ndarray, size: tuple[int, int], upscale: bool) -> np.ndarray:
    """Resize an L-mode mask (255 = hole) to ``size`` (w, h), keeping it binary (0 / 255).

    Upscaling: nearest neighbour. Downscaling: a pixel is hole when any part of its footprint
    was (area resize, then > 0), so a hole thinner than the scale step shrinks but never
    vanishes (with nearest, a 1-px line can disappear and leave a pair with no difference).
    """
    if upscale:
        return cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST_EXACT)
    binary = np.where(mask > 127, np.uint8(255), np.uint8(0))
    shrunk = cv2.resize(binary, size, interpolation=cv2.INTER_AREA)
    return np.where(shrunk > 0, np.uint8(255), np.uint8(0))

