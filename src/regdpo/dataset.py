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
editing one in place), and so do they in a batch of ``collate_fn``.

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

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

from . import format as fmt
from .errors import FormatError, FrameReadError, RegdpoError, UsageError
from .frames import decode_image
from .items import (DEFAULT_PROMPT, VAE_SCALE, Augmentation, ItemBuilder, ItemOptions, PairIndexEntry,
                    full_frame_size, masks_latent, plan_augmentation, region_masks, resized_size)
from .reader_options import (DEFAULT_MAX_UPSCALE, check_tokenizer, dataset_seed, item_options,
                             option, parse_neg_types, required_option, summarise_problems, upscale_of)
from .seeding import derive_seed

cv2.setNumThreads(1)  # one thread per DataLoader worker; threads only fight with the workers

__all__ = ["DPODataset", "collate_fn", "PairIndexEntry", "Augmentation", "plan_augmentation",
           "resized_size", "full_frame_size", "region_masks", "masks_latent", "DEFAULT_PROMPT"]


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
      (``None``: see the module docstring), ``skip_invalid`` (False), ``max_upscale`` (1.25, the
      generator's: a ``resolution`` enlarging a video more is refused, see ``_refuse_upscaling``).
    - ``dpo_shards``: read a packed dataset (``regdpo pack``) instead: the constructor returns a
      ``regdpo.packed_dataset.PackedDPODataset`` (an ``IterableDataset`` with the same items).

    ``tokenizer``: a Hugging Face style tokenizer (``model_max_length``, called with
    ``max_length``/``padding``/``truncation``/``return_tensors="pt"``, returns ``input_ids``).

    Validation: construction checks every selected video cheaply (frame count against
    ``nframes``, presence of its stream folders) and raises one ``FormatError`` listing the
    bad ones. ``skip_invalid=True`` instead validates every file header up front
    (``regdpo.format.validate_video_streams``) and drops invalid or too-short videos with a
    warning that lists them. Whatever is not checked up front is checked per item: a
    missing or corrupt frame raises ``FrameReadError`` naming the file, a frame of the
    wrong size ``FormatError`` naming it. With ``skip_invalid``, such a pair (damaged after the dataset was
    built) is passed over for the next one and the item says so in ``"skipped"`` (see ``__getitem__``;
    ``train_region_reg_dpo.py --skip_invalid`` reports and counts them).
    """

    def __new__(cls, args: Any = None, tokenizer: Any = None):
        """With ``args.dpo_shards`` set: the shard reader (``regdpo.packed_dataset.PackedDPODataset``, an
        ``IterableDataset`` over a packed dataset) instead of the folder reader."""
        if cls is DPODataset and getattr(args, "dpo_shards", None):
            from .packed_dataset import PackedDPODataset

            return PackedDPODataset(args, tokenizer)
        return super().__new__(cls)

    def __init__(self, args: Any, tokenizer: Callable[..., Any]):
        self.root = Path(required_option(args, "dpo_data_root"))
        self.options = item_options(args)
        for name in ItemOptions.__dataclass_fields__:  # self.nframes, self.resolution, ...
            setattr(self, name, getattr(self.options, name))
        self.seed = dataset_seed(args)
        self.neg_types = parse_neg_types(getattr(args, "neg_types", None))
        self.skip_invalid = bool(option(args, "skip_invalid", False))
        self.max_upscale = float(option(args, "max_upscale", DEFAULT_MAX_UPSCALE))
        if not (self.max_upscale >= 1.0 and math.isfinite(self.max_upscale)):
            raise UsageError(f"args.max_upscale must be a number >= 1, got {self.max_upscale}")
        manifest_path = getattr(args, "manifest", None)
        self.manifest_path = Path(manifest_path) if manifest_path else self.root / fmt.MANIFEST_FILE
        self.tokenizer = check_tokenizer(tokenizer)
        # in shared memory, so that set_epoch reaches DataLoader workers, persistent ones included
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.pairs: list[PairIndexEntry] = self._build_index()
        self.builder = ItemBuilder(self.options, tokenizer)
        self._hole_frames: dict[str, tuple[bool, ...]] = {}

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
        enlarged: list[tuple[float, fmt.ManifestEntry]] = []  # (factor, entry) beyond max_upscale
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
            elif (factor := upscale_of(entry.height, entry.width, self.resolution, self.full_frame)) > self.max_upscale:
                enlarged.append((factor, entry))
        self._refuse_upscaling(enlarged, problems)

        if problems:
            reasons = [r for _, r in problems]
            if not self.skip_invalid:
                raise FormatError(
                    f"{len(problems)} invalid video(s) in {self.manifest_path}: {summarise_problems(reasons)} "
                    "(set args.skip_invalid=True to drop them)"
                )
            warnings.warn(
                f"DPODataset: skipping {len(problems)} invalid video(s): {summarise_problems(reasons, 20)}",
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

    def _refuse_upscaling(self, enlarged: list[tuple[float, fmt.ManifestEntry]],
                          problems: list[tuple[str, str]]) -> None:
        """The generator's ``--max_upscale`` policy: videos stored too small for ``resolution`` are refused
        (``UsageError`` with the figure), or with ``skip_invalid`` dropped (added to ``problems``, warned)."""
        if not enlarged:
            return
        factor, worst = max(enlarged, key=lambda fe: (fe[0], fe[1].name))
        short = min(min(e.height, e.width) for _, e in enlarged)
        fits = VAE_SCALE * math.floor(short * self.max_upscale / VAE_SCALE)
        what = (f"resolution {self.resolution} enlarges {len(enlarged)} video(s) more than max_upscale "
                f"{self.max_upscale:g} (most: {worst.name}, stored {worst.width}x{worst.height}, {factor:.2f}x; an "
                f"enlarged GT is a soft winner)")
        if not self.skip_invalid:
            raise UsageError(f"{what}: train at resolution {fits} or lower, or allow it with max_upscale "
                             f"{math.ceil(factor * 100) / 100:g} (train_region_reg_dpo.py --max_upscale)")
        problems.extend((e.name, f"video {e.name}: {f:.2f}x upscale, more than max_upscale {self.max_upscale:g}")
                        for f, e in enlarged)

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

    def _source(self, pair: PairIndexEntry) -> "FolderFrames":
        return FolderFrames(self, pair)

    def _plan(self, index: int, rng: np.random.Generator | None = None) -> tuple[Augmentation, np.ndarray]:
        """The item's parameters and its window's resized hole masks ``uint8 [F, rh, rw]`` in {0, 1}."""
        pair = self.pairs[index]
        return self.builder.plan(pair, self._source(pair), self._rng(index) if rng is None else rng)

    # -- items
    def __getitem__(self, index: int) -> dict[str, Any]:
        """Item ``index``. With ``skip_invalid``, a pair whose files cannot be read now (damaged after the
        dataset was built) is passed over for the next one (``index + 1``, ...) and the item carries
        ``"skipped"``: ``[{"pair": "video/stream", "reason": one line naming the file}]`` of the pairs passed
        over (empty mostly), for the training loop to report and count."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for DPODataset of {len(self)} items")
        index %= len(self)
        if not self.skip_invalid:
            return self._item(index)
        skipped: list[dict[str, str]] = []
        for offset in range(len(self)):
            at = (index + offset) % len(self)
            try:
                item = self._item(at)
            except RegdpoError as exc:  # an unreadable or wrong frame (FrameReadError, FormatError)
                pair = self.pairs[at]
                skipped.append({"pair": f"{pair.video}/{pair.stream}", "reason": " ".join(str(exc).split())[:500]})
                continue
            item["skipped"] = skipped
            return item
        raise FrameReadError(f"no pair of {self.manifest_path} can be read (first: {skipped[0]['reason']})")

    def _item(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        return self.builder.build(pair, self._source(pair), self._rng(index))

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


class FolderFrames:
    """``regdpo.items.FrameSource`` of a pair of a ``dpo_data/`` folder: its PNG files, decoded per frame."""

    def __init__(self, dataset: DPODataset, pair: PairIndexEntry):
        self.dataset, self.pair = dataset, pair
        self.folder = dataset.root / pair.video

    def mask(self, t: int) -> np.ndarray:
        return self.dataset._read(self.folder / fmt.MASK_DIR / fmt.frame_name(t), cv2.IMREAD_GRAYSCALE, self.pair)

    def gt_bgr(self, t: int) -> np.ndarray:
        return self.dataset._read(self.folder / fmt.GT_DIR / fmt.frame_name(t), cv2.IMREAD_COLOR, self.pair)

    def negative_bgr(self, t: int) -> np.ndarray:
        return self.dataset._read(self.folder / self.pair.stream / fmt.frame_name(t), cv2.IMREAD_COLOR, self.pair)

    def frames_with_hole(self) -> tuple[bool, ...]:
        """Read once per process and video."""
        cached = self.dataset._hole_frames.get(self.pair.video)
        if cached is None:
            cached = tuple(bool((self.mask(t) > 127).any()) for t in range(self.pair.num_frames))
            self.dataset._hole_frames[self.pair.video] = cached
        return cached


def collate_fn(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items for a ``DataLoader``: tensors stacked along a new first dim, strings listed.

    A plain module-level function, so it pickles into ``num_workers > 0`` workers. Tensors go through
    ``torch.utils.data.default_collate``, which in a worker stacks straight into shared memory (one copy of
    the batch instead of two on its way to the main process). A key whose tensor is, in every item, the
    same object as an earlier key's (``conditioning_neg`` is ``conditioning_pos``) gets that key's batch
    tensor: the same condition stays one tensor (clone before editing one in place), not a second copy.
    """
    if not items:
        raise ValueError("collate_fn got an empty batch")
    batch: dict[str, Any] = {}
    keys = list(items[0])
    for position, key in enumerate(keys):
        values = [item[key] for item in items]
        if not isinstance(values[0], torch.Tensor):
            batch[key] = list(values)
            continue
        same_as = next((earlier for earlier in keys[:position] if isinstance(batch[earlier], torch.Tensor)
                        and all(item[earlier] is value for item, value in zip(items, values))), None)
        batch[key] = batch[same_as] if same_as is not None else torch.utils.data.default_collate(values)
    return batch
