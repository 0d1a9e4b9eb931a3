"""``PackedDPODataset``: the training pairs of a packed dataset (``regdpo pack``), streamed from its shards.

What ``DPODataset(args, tokenizer)`` returns when ``args.dpo_shards`` is set: an ``IterableDataset`` whose
items are exactly the folder reader's (same fields, same tensors for the same pair, seed and epoch: both
build them with ``regdpo.items.ItemBuilder``), plus ``stream_position`` (see ``advance``).

- Shards are split by rank (``torch.distributed``, else ``RANK`` / ``WORLD_SIZE`` as torchrun and accelerate
  set them, or ``args.rank`` / ``args.world_size``) and by DataLoader worker, read as streams (a local path or
  an fsspec URL) and shuffled through a seeded buffer (``regdpo.shard_order``): every pair exactly once per
  epoch across all ranks and workers.
- ``state_dict()`` / ``load_state_dict()``: the position of every (rank, worker) stream in the epoch; a
  restored reader goes on with the rest of the epoch's pairs, none twice, none skipped. With DataLoader
  workers the main process learns the positions from the batches: call ``advance(batch)`` for every batch
  consumed (iterating in the main process records them itself).
- Damaged input never stops a run: a sample missing a member, a frame that does not decode, a truncated or
  unreadable shard: its pairs are skipped, counted (``skipped_pairs``; items carry the count) and logged
  (one line naming the shard); a shard whose SHA-256 differs from ``index.json`` is logged and counted
  (``damaged_shards``; its readable samples are used). Nothing is written anywhere.
"""

from __future__ import annotations

import os
import tarfile
from collections import Counter, OrderedDict
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from .reader_options import (DEFAULT_MAX_UPSCALE, check_tokenizer, dataset_seed, item_options, option,
                             parse_neg_types, upscale_of)
from .errors import FormatError, FrameReadError, UsageError
from .items import ItemBuilder, ItemOptions, PairIndexEntry, full_frame_size
from .progress import logger
from .seeding import derive_seed
from .shard_io import HashingReader, PackedSample, iter_raw_samples, join, open_binary, read_index, shard_locations
from .shard_order import PackedPair, index_pairs, pairs_by_sample, rank_shards, stream_order
from .stream_positions import StreamPositions
from . import packed_format as pf

DEFAULT_SHUFFLE_BUFFER = 16
"""Pairs in the shuffle buffer. A sample stays in memory while one of its pairs is in the buffer."""
DEFAULT_GT_CACHE_MB = 256
"""Decoded GT frames kept per worker: the pairs of one clip share its GT (K masks x negatives)."""


def distributed_rank(args: Any) -> tuple[int, int]:
    """``(rank, world size)``: ``args.rank`` / ``args.world_size``, else ``torch.distributed``, else the
    ``RANK`` / ``WORLD_SIZE`` environment (torchrun, accelerate launch), else ``(0, 1)``."""
    rank, world = getattr(args, "rank", None), getattr(args, "world_size", None)
    if rank is None or world is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
        raise UsageError(f"rank {rank!r} of world size {world!r}: need 0 <= rank < world size")
    return rank, world


class PackedFrames:
    """``regdpo.items.FrameSource`` of a pair in a packed sample: masks and GT decoded from their members,
    the negative restored from its crop (decoded GT frames shared through ``cache``)."""

    def __init__(self, sample: PackedSample, entry: int, pair: PairIndexEntry, cache: "_GTCache"):
        self.sample, self.entry, self.pair, self.cache = sample, entry, pair, cache

    def _check(self, image: np.ndarray, what: str) -> np.ndarray:
        if image.shape[:2] != (self.pair.height, self.pair.width):
            raise FormatError(f"{self.sample.where}: {what} is {image.shape[1]}x{image.shape[0]}, the index says "
                              f"{self.pair.width}x{self.pair.height}")
        return image

    def mask(self, t: int) -> np.ndarray:
        return self._check(self.sample.mask(self.entry, t), pf.mask_member(self.entry, t))

    def gt_bgr(self, t: int) -> np.ndarray:
        key = (self.sample.key, t)
        frame = self.cache.get(key)
        if frame is None:
            frame = self.cache.put(key, self._check(self.sample.gt_bgr(t), pf.gt_member(t)))
        return frame

    def negative_bgr(self, t: int) -> np.ndarray:
        return self.sample.negative_bgr(self.entry, self.pair.stream, t, self.gt_bgr(t))

    def frames_with_hole(self) -> tuple[bool, ...]:
        return tuple(box is not None for box in self.sample.entries[self.entry]["boxes"])


class _GTCache:
    """Decoded GT frames, least recently used first out, at most ``limit`` bytes (read-only arrays)."""

    def __init__(self, limit: int):
        self.limit, self.nbytes = limit, 0
        self.frames: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()

    def get(self, key: tuple[str, int]) -> np.ndarray | None:
        frame = self.frames.get(key)
        if frame is not None:
            self.frames.move_to_end(key)
        return frame

    def put(self, key: tuple[str, int], frame: np.ndarray) -> np.ndarray:
        frame.setflags(write=False)
        if frame.nbytes <= self.limit:
            self.frames[key] = frame
            self.nbytes += frame.nbytes
            while self.nbytes > self.limit:
                _, old = self.frames.popitem(last=False)
                self.nbytes -= old.nbytes
        return frame


class PackedDPODataset(torch.utils.data.IterableDataset):
    """Preference pairs of a packed dataset, streamed (see the module docstring).

    ``args``: ``dpo_shards`` (a packed dataset folder or URL prefix holding ``index.json``, or a list / brace
    pattern of its shard paths or URLs), ``nframes``, ``resolution`` and every item option of
    ``DPODataset`` (``neg_types``, ``dataset_seed``, ``random_flip``, ...; ``manifest`` and ``dpo_data_root``
    are not used: pack the selection instead); ``shuffle_buffer`` (16 pairs), ``gt_cache_mb`` (256),
    ``rank`` / ``world_size`` (default: from the environment), ``skip_invalid`` (False: a pair shorter than
    ``nframes`` is an error; True: left out with a warning).
    """

    def __init__(self, args: Any, tokenizer: Callable[..., Any]):
        self.location, names = shard_locations(getattr(args, "dpo_shards"))
        self.index = read_index(self.location)
        listed = [s["name"] for s in self.index["shards"]]
        if names is None:
            names = listed
        unknown = [n for n in names if n not in listed]
        if unknown:
            raise UsageError(f"args.dpo_shards: {unknown[0]} is not listed in {join(self.location, pf.INDEX_FILE)}")
        self.options: ItemOptions = item_options(args)
        for name in ItemOptions.__dataclass_fields__:
            setattr(self, name, getattr(self.options, name))
        self.seed = dataset_seed(args)
        self.order_seed = 0 if self.seed is None else self.seed
        self.neg_types = parse_neg_types(getattr(args, "neg_types", None))
        self.shuffle_buffer = int(option(args, "shuffle_buffer", DEFAULT_SHUFFLE_BUFFER))
        if self.shuffle_buffer < 1:
            raise UsageError(f"args.shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        self.gt_cache_bytes = int(float(option(args, "gt_cache_mb", DEFAULT_GT_CACHE_MB)) * (1 << 20))
        self.rank, self.world_size = distributed_rank(args)
        self.tokenizer = check_tokenizer(tokenizer)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        wanted = set(names)
        pairs = [p for p in index_pairs(self.index, self.neg_types) if p.shard in wanted]
        short = sorted({p.pair.video for p in pairs if p.pair.num_frames < self.nframes})
        if short and not bool(option(args, "skip_invalid", False)):
            raise FormatError(f"{len(short)} video(s) of {self.location} have fewer than args.nframes={self.nframes} "
                              f"frames (first {short[0]}; set args.skip_invalid=True to drop them)")
        pairs = [p for p in pairs if p.pair.num_frames >= self.nframes]
        self.max_upscale = float(option(args, "max_upscale", DEFAULT_MAX_UPSCALE))  # the folder reader's policy
        enlarged = sorted({(upscale_of(p.pair.height, p.pair.width, self.resolution, self.full_frame), p.pair.video)
                           for p in pairs})
        enlarged = [(f, v) for f, v in enlarged if f > self.max_upscale]
        if enlarged and not bool(option(args, "skip_invalid", False)):
            factor, video = enlarged[-1]
            raise UsageError(f"resolution {self.resolution} enlarges {len(enlarged)} video(s) of {self.location} more "
                             f"than max_upscale {self.max_upscale:g} (most: {video}, {factor:.2f}x; an enlarged GT is "
                             "a soft winner): train at a lower resolution or raise max_upscale")
        too_small = {v for _, v in enlarged}
        pairs = [p for p in pairs if p.pair.video not in too_small]
        self.pairs_by_index: dict[int, PackedPair] = {p.pair_index: p for p in pairs}
        self.shard_pairs = pairs_by_sample(self.index, pairs)
        self.shard_records = {s["name"]: s for s in self.index["shards"]}
        self.shards = rank_shards([n for n in listed if n in wanted], self.rank, self.world_size)
        if not self.shards:
            raise UsageError(f"{len(wanted)} shard(s) for {self.world_size} ranks: rank {self.rank} has none; pack "
                             f"with a smaller --shard_size (more shards than ranks x workers)")
        self.length = sum(len(p) for s in self.shards for p in self.shard_pairs[s])
        if self.length == 0:
            raise UsageError(f"no (video, negative) pairs to train on in rank {self.rank}'s shards of {self.location}")
        self.builder = ItemBuilder(self.options, tokenizer)
        self.positions = StreamPositions(self.rank, self.order_seed, self.shuffle_buffer, self.world_size)
        self._damaged = 0

    # -- sizes and epochs
    def __len__(self) -> int:
        """Pairs this rank yields per epoch (all its workers together, none damaged)."""
        return self.length

    def item_size(self, index: int) -> tuple[int, int]:
        pair = self.pairs_by_index[index].pair
        return full_frame_size(pair.height, pair.width, self.resolution) if self.full_frame else (self.resolution,) * 2

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order and draws the next iteration uses (shared with DataLoader workers)."""
        self._epoch.fill_(int(epoch))

    # -- positions (regdpo.stream_positions)
    def advance(self, batch: Mapping[str, Any]) -> None:
        """Record that the items of ``batch`` (or one item) were consumed: from their ``stream_position``."""
        self.positions.advance(batch)

    @property
    def skipped_pairs(self) -> int:
        """Damaged pairs this rank skipped so far this epoch, as reported by the consumed items."""
        return self.positions.skipped_pairs

    @property
    def damaged_shards(self) -> int:
        """Shards of this rank found damaged (truncated, unreadable, hash mismatch): in this process, or as
        reported by the consumed items of its DataLoader workers."""
        return max(self._damaged, self.positions.reported_damaged_shards)

    def state_dict(self) -> dict[str, Any]:
        """The data position: epoch, and per ``"rank/worker"`` stream the next position and the pairs skipped."""
        return self.positions.state_dict(self.epoch)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at ``state`` (call before iterating; ``set_epoch(state["epoch"])`` is done here): each stream
        starts after its recorded position. The same seed, shuffle buffer, world size and number of workers
        are required."""
        self.set_epoch(self.positions.load_state_dict(state))

    def record_positions(self, state: Mapping[str, Any]) -> None:
        """Take ``state``'s positions as the consumed ones (e.g. every rank's, merged) without changing where
        an iteration starts (``load_state_dict`` does that)."""
        self.positions.record(state)

    @staticmethod
    def merge_states(states: list[Mapping[str, Any]]) -> dict[str, Any]:
        """One state of every rank's ``state_dict()`` (``StreamPositions.merge``)."""
        return StreamPositions.merge(states)

    # -- iteration
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        epoch = self.epoch
        start, skipped = self.positions.start(epoch, worker, workers)
        order = stream_order(self.shard_pairs, self.shards, self.order_seed, epoch, self.rank, worker, workers,
                             self.shuffle_buffer)
        tally = [start, skipped]
        for item in self._stream(order, start, skipped, epoch, worker, workers, tally):
            position = item["stream_position"]
            yield item
            if info is None:  # consumed: its consumer came back for the next one
                self.advance({"stream_position": position})
        if info is None:  # in this process: pairs skipped after the last item are counted too
            self.advance({"stream_position": torch.tensor([epoch, self.rank, worker, workers, *tally, self._damaged])})

    def _stream(self, order: list[int], start: int, skipped: int, epoch: int, worker: int, workers: int,
                tally: list[int]) -> Iterator[dict[str, Any]]:
        """The items of positions ``start + 1 ...`` of ``order``; ``tally``: [position, skipped] so far."""
        remaining = [self.pairs_by_index[i] for i in order[start:]]
        need = Counter(p.key for p in remaining)
        needed_shards = {p.shard for p in remaining}
        samples = self._samples([s for s in self._my_shards(epoch, worker, workers) if s in needed_shards], need)
        loaded: dict[str, PackedSample | None] = {}
        cache = _GTCache(self.gt_cache_bytes)
        for position, packed in enumerate(remaining, start + 1):
            while packed.key not in loaded:
                try:
                    key, sample = next(samples)
                except StopIteration:
                    loaded[packed.key] = None
                    break
                loaded[key] = sample
            sample = loaded[packed.key]
            item = None
            if sample is not None:
                try:
                    item = self.builder.build(packed.pair, PackedFrames(sample, packed.entry, packed.pair, cache),
                                              self._rng(packed.pair_index, epoch))
                except (FormatError, FrameReadError, KeyError) as exc:
                    logger.warning("%s: pair %s/%s skipped: %s", packed.shard, packed.pair.video, packed.pair.stream, exc)
            need[packed.key] -= 1
            if need[packed.key] == 0:
                loaded.pop(packed.key, None)
            tally[0] = position
            if item is None:
                skipped += 1
                tally[1] = skipped
                continue
            item["stream_position"] = torch.tensor([epoch, self.rank, worker, workers, position, skipped, self._damaged])
            yield item
        for _ in samples:  # the last shard read to its end: its SHA-256 is checked
            pass

    def _my_shards(self, epoch: int, worker: int, workers: int) -> list[str]:
        from .shard_order import worker_shards

        return worker_shards(self.shards, self.order_seed, epoch, self.rank, worker, workers)

    def _rng(self, pair_index: int, epoch: int) -> np.random.Generator:
        """As the folder reader's ``_rng``: ``(seed, epoch, pair_index)``, or torch's global generator."""
        if self.seed is not None:
            return np.random.default_rng(derive_seed(self.seed, "dpo_dataset", epoch, pair_index))
        return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))

    def _samples(self, shards: list[str], need: Mapping[str, int]) -> Iterator[tuple[str, PackedSample | None]]:
        """``(key, sample)`` of the samples of ``shards`` still needed (``None``: damaged, its pairs skipped)."""
        for name in shards:
            record = self.shard_records[name]
            got: set[str] = set()
            url = join(self.location, name)
            try:
                stream = HashingReader(open_binary(url))
                try:
                    for raw in iter_raw_samples(stream, url):
                        key = str(raw.get("__key__"))
                        got.add(key)
                        if not need.get(key):
                            continue
                        yield key, self._checked(raw, name, record)
                    stream.drain()
                finally:
                    stream.close()
                if stream.nbytes != record["bytes"] or stream.sha256.hexdigest() != record["sha256"]:
                    self._damaged += 1
                    logger.warning("%s: SHA-256 or size differs from index.json (changed or damaged since it was "
                                   "packed; run regdpo verify)", name)
            except (OSError, tarfile.TarError, EOFError, ValueError) as exc:
                self._damaged += 1
                logger.warning("%s: truncated or unreadable (%s); its remaining pairs are skipped",
                               name, str(exc).split(" @ ")[0])
            for sample in record["samples"]:
                if sample["key"] not in got and need.get(sample["key"]):
                    yield sample["key"], None

    def _checked(self, raw: dict[str, Any], name: str, record: Mapping[str, Any]) -> PackedSample | None:
        try:
            sample = PackedSample.from_raw(raw, name)
        except FormatError as exc:
            logger.warning("%s; its pairs are skipped", exc)
            return None
        listed = next((s for s in record["samples"] if s["key"] == sample.key), None)
        if listed is None or pf.index_sample(sample.record) != listed:
            logger.warning("%s: differs from its index.json record; its pairs are skipped", sample.where)
            return None
        return sample

    def __repr__(self) -> str:
        return (f"PackedDPODataset(location={self.location!r}, rank={self.rank}/{self.world_size}, "
                f"shards={len(self.shards)}, pairs={len(self)}, nframes={self.nframes}, resolution={self.resolution})")
