"""``DPODataset``: the training dataset of Region-Reg-DPO over a ``dpo_data/`` folder.

One item per (video, negative stream) pair of the manifest (a stream is a negative type at one
strength: ``blur``, ``blur_s0.50``). Each item is a window of
``nframes`` consecutive frames of the positive (GT) clip, of one negative of the same
clip and of its mask, with one set of random augmentation parameters for every stream:

- temporal window: random start when the clip is longer than ``nframes``;
- resize so that the short side is ``resolution`` (skipped when it already is: crop only),
  frames with area (down) / bilinear (up) interpolation, masks binary (nearest up, any-hole down);
  the negative is then re-composited onto the positive with the resized mask, so the two
  stay identical outside the hole (a plain resize of the negative would bleed hole
  content into neighbouring valid pixels);
- with ``args.full_frame``: no crop, the whole resized frame (short side ``resolution``, long
  side rounded to a multiple of 8, as DiffuEraser's loader keeps the frame); items of different
  videos then differ in size (batch size 1, or ``regdpo.buckets.SizeBucketBatchSampler``);
- otherwise a ``resolution x resolution`` crop holding at least ``args.min_hole_coverage`` of the window's
  hole pixels (``regdpo.crops``): random among such positions, or the one nearest the centre
  with ``args.center_crop``; a hole-free window of a clip with a hole elsewhere is moved onto it;
- optional horizontal flip (``args.random_flip``) and temporal reversal (``args.random_reverse``).

Fields of an item (float32 tensors unless said; ``F = nframes``, ``R = resolution``; with
``full_frame`` read ``R,R`` as the item's ``H,W`` and ``R/8,R/8`` as ``H/8,W/8``):

- ``pixel_values_pos``, ``pixel_values_neg``: ``[F,3,R,R]`` RGB in ``[-1, 1]`` (``x / 127.5 - 1``);
  identical wherever ``masks`` is 1.
- ``masks``: ``[F,1,R,R]``, BrushNet's convention: 1 = valid, 0 = hole.
- ``conditioning_pos``, ``conditioning_neg``: ``[F,3,R,R]``, the masked GT: hole pixels
  exactly -1, valid pixels equal to ``pixel_values_pos``.
- ``mask_hole``, ``mask_boundary``, ``mask_context``: ``[F,1,R,R]``, the three disjoint
  regions (1 inside), as ``regdpo.regions.decompose_regions(hole, boundary_dilation)``.
- ``masks_latent``: ``[F,1,R/8,R/8]``, 1 = valid: the condition's mask channel, exactly
  DiffuEraser's ``F.interpolate(masks, size=(h, w))`` (nearest); feed it to BrushNet.
- ``mask_hole_latent``, ``mask_boundary_latent``, ``mask_context_latent``: ``[F,1,R/8,R/8]``,
  as ``regdpo.regions.decompose_regions_latent`` (any-hole rule); the loss weights.
- ``input_ids``: ``[77]`` long, the tokenised prompt; ``neg_type``, ``video``: ``str``;
  ``neg_strength``: ``float`` in [0, 1], the negative's strength (1.0 = the PRD's defect); ``stream``:
  ``str``, the negative's folder; ``pair_weight``: ``float``, the manifest's weight of the pair
  (``regdpo select --weights``), 1.0 when it has none.

``conditioning_pos`` and ``conditioning_neg`` are the *same* condition, as DiffuEraser and
BrushNet train on it (the frame with its hole blacked out, then normalised): both sides of
a pair must get the same condition, or the model could tell winner from loser through the
condition alone. Within one item both keys refer to the same tensor object (clone before
editing one in place); a collated batch holds two separate tensors.

Randomness: with ``args.dataset_seed`` set, the parameters of item ``i`` depend only on
``(seed, epoch, i)`` (``set_epoch`` changes them between epochs), whatever the worker or
the order. Without it, each item draws a seed from torch's global generator, which
``DataLoader`` seeds differently in every worker and every epoch (reproducible through
``torch.manual_seed``).

Memory: the float tensors of an item are views of one buffer, which the next item of
the same thread reuses once every tensor of the previous item (and anything derived
from them) is gone, e.g. after the ``DataLoader`` collated it; a sample kept by the
caller is never overwritten.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

from . import format as fmt
from .crops import DEFAULT_MIN_HOLE_COVERAGE, choose_crop, choose_window_start, crop_coverage
from .errors import FormatError, UsageError
from .frames import decode_image
from .regions import block_any_np, check_kernel_size, decompose_regions, dilate_mask_np, latent_kernel_size
from .seeding import derive_seed

cv2.setNumThreads(1)  # one thread per DataLoader worker; threads only fight with the workers

DEFAULT_PROMPT = "clean background"
"""Prompt of videos whose manifest entry has none (``args.default_prompt`` overrides it)."""

VAE_SCALE = 8

__all__ = ["DPODataset", "collate_fn", "PairIndexEntry", "Augmentation", "plan_augmentation",
           "resized_size", "full_frame_size", "region_masks", "masks_latent", "DEFAULT_PROMPT"]


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


# --------------------------------------------------------------------------- options


def _opt(args: Any, name: str, default: Any) -> Any:
    value = getattr(args, name, default)
    return default if value is None else value


def _required(args: Any, name: str) -> Any:
    value = getattr(args, name, None)
    if value is None:
        raise UsageError(f"args.{name} is required by DPODataset")
    return value


def _int_option(args: Any, name: str, value: Any, minimum: int) -> int:
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"args.{name} must be an integer, got {value!r}") from None
    if as_int != value or as_int < minimum:
        raise UsageError(f"args.{name} must be an integer >= {minimum}, got {value!r}")
    return as_int


def _parse_neg_types(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s) for s in value]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in fmt.NEG_TYPES]
    if unknown or not names:
        raise UsageError(
            f"args.neg_types: unknown negative type(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"known: {', '.join(fmt.NEG_TYPES)}"
        )
    return tuple(t for t in fmt.NEG_TYPES if t in names)


def _summarise(problems: Sequence[str], limit: int = 5) -> str:
    shown = "; ".join(problems[:limit])
    return shown + (f"; ... and {len(problems) - limit} more" if len(problems) > limit else "")


# --------------------------------------------------------------------------- frame I/O


# --------------------------------------------------------------------------- dataset


class DPODataset(torch.utils.data.Dataset):
    """Preference pairs of a ``dpo_data/`` folder for DiffuEraser / BrushNet DPO training.

    ``args`` (attributes, e.g. an ``argparse.Namespace``):

    - required: ``dpo_data_root`` (folder), ``nframes`` (frames per item), ``resolution``
      (output side, a multiple of 8);
    - optional (default): ``proportion_empty_prompts`` (0), ``boundary_dilation`` (7, odd),
      ``neg_types`` (all; a list or a comma-separated string), ``manifest`` (``None``: the
      root's ``manifest.json``; else a file with the same schema, e.g. audit-filtered),
      ``center_crop`` (False), ``min_hole_coverage`` (0.5), ``full_frame`` (False), ``random_flip`` (False), ``random_reverse`` (False),
      ``default_prompt`` (``"clean background"``, for videos without prompt), ``dataset_seed``
      (``None``: see the module docstring), ``skip_invalid`` (False).

    ``tokenizer``: a Hugging Face style tokenizer (``model_max_length``, called with
    ``max_length``/``padding``/``truncation``/``return_tensors="pt"``, returns ``input_ids``).

    Validation: construction checks every selected video cheaply (frame count against
    ``nframes``, presence of its stream folders) and raises one ``FormatError`` listing the
    bad ones. ``skip_invalid=True`` instead validates every file header up front
    (``regdpo.format.validate_video_streams``) and drops invalid or too-short videos with a
    warning that lists them. Whatever is not checked up front is checked per item: a
    missing or corrupt frame raises ``FrameReadError`` naming the file, a frame of the
    wrong size ``FormatError`` naming it.
    """

    def __init__(self, args: Any, tokenizer: Callable[..., Any]):
        self.root = Path(_required(args, "dpo_data_root"))
        self.nframes = _int_option(args, "nframes", _required(args, "nframes"), 1)
        self.resolution = _int_option(args, "resolution", _required(args, "resolution"), VAE_SCALE)
        if self.resolution % VAE_SCALE:
            raise UsageError(f"args.resolution must be a multiple of {VAE_SCALE}, got {self.resolution}")
        self.boundary_dilation = _int_option(args, "boundary_dilation", _opt(args, "boundary_dilation", 7), 1)
        if self.boundary_dilation % 2 == 0:
            raise UsageError(f"args.boundary_dilation must be odd (a centred square kernel), got {self.boundary_dilation}")
        self.proportion_empty_prompts = float(_opt(args, "proportion_empty_prompts", 0.0))
        if not 0.0 <= self.proportion_empty_prompts <= 1.0:
            raise UsageError(f"args.proportion_empty_prompts must be in [0, 1], got {self.proportion_empty_prompts}")
        self.center_crop = bool(_opt(args, "center_crop", False))
        self.full_frame = bool(_opt(args, "full_frame", False))
        self.min_hole_coverage = float(_opt(args, "min_hole_coverage", DEFAULT_MIN_HOLE_COVERAGE))
        if not 0.0 <= self.min_hole_coverage <= 1.0:
            raise UsageError(f"args.min_hole_coverage must be in [0, 1], got {self.min_hole_coverage}")
        self.random_flip = bool(_opt(args, "random_flip", False))
        self.random_reverse = bool(_opt(args, "random_reverse", False))
        self.default_prompt = str(_opt(args, "default_prompt", DEFAULT_PROMPT))
        # its own attribute: a training script's `args.seed` must not switch seeded sampling on
        # (with it, an epoch without `set_epoch` would repeat the previous epoch's augmentations)
        seed = getattr(args, "dataset_seed", None)
        self.seed = None if seed is None else _int_option(args, "dataset_seed", seed, 0)
        self.neg_types = _parse_neg_types(getattr(args, "neg_types", None))
        self.skip_invalid = bool(_opt(args, "skip_invalid", False))
        manifest_path = getattr(args, "manifest", None)
        self.manifest_path = Path(manifest_path) if manifest_path else self.root / fmt.MANIFEST_FILE
        if tokenizer is None or not callable(tokenizer) or not hasattr(tokenizer, "model_max_length"):
            raise UsageError("DPODataset needs a tokenizer (callable, with model_max_length), e.g. CLIPTokenizer")
        self.tokenizer = tokenizer
        # in shared memory, so that set_epoch reaches DataLoader workers, persistent ones included
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.pairs: list[PairIndexEntry] = self._build_index()
        self._buffers = _Buffers()
        self._hole_frames: dict[str, tuple[bool, ...]] = {}

    def __getstate__(self) -> dict[str, Any]:  # for DataLoader workers: buffers stay behind
        state = self.__dict__.copy()
        del state["_buffers"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._buffers = _Buffers()

    # -- index
    def _build_index(self) -> list[PairIndexEntry]:
        manifest = fmt.load_manifest(self.root, self.manifest_path)
        seen: set[str] = set()
        selected: list[tuple[fmt.ManifestEntry, list[fmt.NegativeStream]]] = []
        for entry in manifest.videos:
            if entry.name in seen:
                raise FormatError(f"{self.manifest_path}: video {entry.name!r} is listed twice")
            seen.add(entry.name)
            streams = [s for s in fmt.sort_streams(entry.streams) if self.neg_types is None or s.type in self.neg_types]
            if streams:
                selected.append((entry, streams))

        problems: list[tuple[str, str]] = []  # (video, reason)
        for entry, streams in selected:
            names = [s.stream for s in streams]
            reason = self._cheap_problem(entry, names)
            if reason is None and self.skip_invalid:
                try:
                    fmt.validate_video_streams(self.root, entry, names)
                except FormatError as exc:
                    reason = str(exc)
            if reason is not None:
                problems.append((entry.name, reason))

        if problems:
            reasons = [r for _, r in problems]
            if not self.skip_invalid:
                raise FormatError(
                    f"{len(problems)} invalid video(s) in {self.manifest_path}: {_summarise(reasons)} "
                    "(set args.skip_invalid=True to drop them)"
                )
            warnings.warn(
                f"DPODataset: skipping {len(problems)} invalid video(s): {_summarise(reasons, 20)}",
                stacklevel=3,
            )
        bad = {name for name, _ in problems}
        pairs = [
            PairIndexEntry(e.name, s.type, e.num_frames, e.height, e.width, e.prompt, s.strength, s.stream,
                           float(e.negatives[e.stream_names.index(s.stream)].get("pair_weight", 1.0)))
            for e, streams in selected
            if e.name not in bad
            for s in streams
        ]
        if not pairs:
            what = f" of type(s) {', '.join(self.neg_types)}" if self.neg_types else ""
            raise UsageError(f"no (video, negative) pairs{what} to train on in {self.manifest_path}")
        return pairs

    def _cheap_problem(self, entry: fmt.ManifestEntry, streams: Sequence[str]) -> str | None:
        """Problems found from the manifest and a few ``stat`` calls, or ``None``."""
        try:  # before anything is sized by them (a manifest may claim 10**12 frames)
            fmt.check_dimensions(entry.num_frames, entry.height, entry.width, f"video {entry.name}")
        except FormatError as exc:
            return str(exc)
        if entry.num_frames < self.nframes:
            return (
                f"video {entry.name} has {entry.num_frames} frames, fewer than args.nframes={self.nframes}"
            )
        if min(entry.height, entry.width) < 1:
            return f"video {entry.name}: size {entry.width}x{entry.height} in the manifest"
        video_dir = self.root / entry.name
        for stream in fmt.stream_dirs(streams):
            if not (video_dir / stream).is_dir():
                return f"video {entry.name}: stream folder {video_dir / stream} is missing"
        return None

    # -- sizes and randomness
    def __len__(self) -> int:
        return len(self.pairs)

    def item_size(self, index: int) -> tuple[int, int]:
        """``(h, w)`` of item ``index``'s frames: ``(R, R)``, or with ``full_frame`` the video's
        full-frame size (``full_frame_size``), from the manifest alone (no file read)."""
        pair = self.pairs[index]
        if self.full_frame:
            return full_frame_size(pair.height, pair.width, self.resolution)
        return self.resolution, self.resolution

    def item_sizes(self) -> list[tuple[int, int]]:
        """``item_size`` of every item, e.g. for ``regdpo.buckets.SizeBucketBatchSampler``."""
        return [self.item_size(i) for i in range(len(self))]

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Change every item's random parameters when ``args.dataset_seed`` is set (call before each
        epoch). The epoch lives in shared memory: workers, persistent ones included, see it."""
        self._epoch.fill_(int(epoch))

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is not None:
            return np.random.default_rng(derive_seed(self.seed, "dpo_dataset", self.epoch, index))
        return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))

    def augmentation(self, index: int, rng: np.random.Generator | None = None) -> Augmentation:
        """The parameters of item ``index`` (drawn from ``rng`` or the item's own generator),
        its crop chosen to hold the hole (this reads the window's masks)."""
        return self._plan(index, rng)[0]

    def _plan(self, index: int, rng: np.random.Generator | None = None) -> tuple[Augmentation, np.ndarray]:
        """The item's parameters and its window's resized hole masks ``uint8 [F, rh, rw]`` in {0, 1}."""
        pair = self.pairs[index]
        if pair.num_frames < self.nframes:
            raise FormatError(f"video {pair.video} has {pair.num_frames} frames, fewer than args.nframes={self.nframes}")
        aug = plan_augmentation(
            self._rng(index) if rng is None else rng,
            num_frames=pair.num_frames,
            height=pair.height,
            width=pair.width,
            nframes=self.nframes,
            resolution=self.resolution,
            center_crop=self.center_crop,
            random_flip=self.random_flip,
            random_reverse=self.random_reverse,
            proportion_empty_prompts=self.proportion_empty_prompts,
            full_frame=self.full_frame,
        )
        holes = self._read_holes(pair, aug)
        if not holes.any() and pair.num_frames > self.nframes:
            # a hole-free window of a clip with a hole elsewhere: move the window onto the hole
            start = choose_window_start(self._frames_with_hole(pair), self.nframes, aug.start_draw)
            if start != min(aug.frame_indices):
                aug = aug.with_start(start)
                holes = self._read_holes(pair, aug)
        if aug.crop_hw != aug.resized_hw and self.min_hole_coverage > 0:
            count = holes.sum(axis=0, dtype=np.int32)
            coverage = crop_coverage(count, aug.crop_hw)
            crop = choose_crop(coverage, int(count.sum()), self.min_hole_coverage, aug.crop_draw, self.center_crop)
            aug = replace(aug, crop_yx=crop)
        return aug, holes

    def _read_holes(self, pair: PairIndexEntry, aug: Augmentation) -> np.ndarray:
        """The window's masks, resized as the frames are, as hole ``uint8 [F, rh, rw]`` in {0, 1}."""
        rh, rw = aug.resized_hw
        resize = (rh, rw) != (pair.height, pair.width)
        upscale = rh > pair.height or rw > pair.width
        holes = self._buffers.work("holes", (len(aug.frame_indices), rh, rw))
        mask_dir = self.root / pair.video / fmt.MASK_DIR
        for k, t in enumerate(aug.frame_indices):
            mask = self._read(mask_dir / fmt.frame_name(t), cv2.IMREAD_GRAYSCALE, pair)
            if resize:
                mask = _resize_hole(mask, (rw, rh), upscale)
            np.greater(mask, 127, out=holes[k].view(bool))
        return holes

    def _frames_with_hole(self, pair: PairIndexEntry) -> tuple[bool, ...]:
        """Whether each stored mask frame of ``pair``'s video has a hole (read once per process)."""
        cached = self._hole_frames.get(pair.video)
        if cached is None:
            mask_dir = self.root / pair.video / fmt.MASK_DIR
            cached = tuple(
                bool((self._read(mask_dir / fmt.frame_name(t), cv2.IMREAD_GRAYSCALE, pair) > 127).any())
                for t in range(pair.num_frames)
            )
            self._hole_frames[pair.video] = cached
        return cached

    # -- items
    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for DPODataset of {len(self)} items")
        index %= len(self)
        pair = self.pairs[index]
        aug, holes = self._plan(index)
        pos, neg, hole = self._load_window(pair, aug, holes)

        arena = self._buffers.output_arena(3 * pos.size + 4 * hole.size)
        pixel_values_pos = arena.normalised(pos)
        pixel_values_neg = arena.normalised(neg)
        np.multiply(pos, 1 - hole, out=pos)  # black out the hole: it normalises to exactly -1
        conditioning = arena.normalised(pos)
        regions = region_masks(hole, self.boundary_dilation, arena)

        prompt = pair.prompt or self.default_prompt
        if aug.empty_prompt:
            prompt = ""
        return {
            "pixel_values_pos": pixel_values_pos,
            "pixel_values_neg": pixel_values_neg,
            "conditioning_pos": conditioning,
            "conditioning_neg": conditioning,
            **regions,
            "input_ids": self._tokenize(prompt),
            "neg_type": pair.neg_type,
            "neg_strength": pair.neg_strength,
            "stream": pair.stream,
            "pair_weight": pair.pair_weight,
            "video": pair.video,
        }

    def _tokenize(self, prompt: str) -> torch.Tensor:
        tokens = self.tokenizer(
            prompt,
            max_length=self.tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )["input_ids"]
        return torch.as_tensor(tokens, dtype=torch.long).reshape(-1)

    def _load_window(
        self, pair: PairIndexEntry, aug: Augmentation, holes: np.ndarray
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
        video_dir = self.root / pair.video
        dirs = (video_dir / fmt.GT_DIR, video_dir / pair.stream)

        pos = self._buffers.work("pos", (f, 3, ch, cw))
        neg = self._buffers.work("neg", (f, 3, ch, cw))
        hole = self._buffers.work("hole", (f, 1, ch, cw))
        rgb_from_bgr = [2, 0, 1, 1, 0, 2]  # mixChannels pairs: HWC BGR -> CHW RGB planes
        crop = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        for k, t in enumerate(aug.frame_indices):
            name = fmt.frame_name(t)
            gt_bgr = self._read(dirs[0] / name, cv2.IMREAD_COLOR, pair)
            neg_bgr = self._read(dirs[1] / name, cv2.IMREAD_COLOR, pair)
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

    def _read(self, path: Path, flags: int, pair: PairIndexEntry) -> np.ndarray:
        image = decode_image(path, flags)
        if image.shape[:2] != (pair.height, pair.width):
            raise FormatError(
                f"video {pair.video}: {path} is {image.shape[1]}x{image.shape[0]}, the manifest says "
                f"{pair.width}x{pair.height} (all streams must be pixel-aligned)"
            )
        return image

    def __repr__(self) -> str:
        counts = {t: sum(p.neg_type == t for p in self.pairs) for t in fmt.NEG_TYPES}
        return (
            f"DPODataset(root={str(self.root)!r}, pairs={len(self)}, per_type={counts}, "
            f"nframes={self.nframes}, resolution={self.resolution})"
        )


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


def collate_fn(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items for a ``DataLoader``: tensors stacked along a new first dim, strings listed.

    A plain module-level function, so it pickles into ``num_workers > 0`` workers.
    ``torch.utils.data.default_collate`` gives the same result.
    """
    if not items:
        raise ValueError("collate_fn got an empty batch")
    batch: dict[str, Any] = {}
    for key, value in items[0].items():
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if isinstance(value, torch.Tensor) else list(values)
    return batch
