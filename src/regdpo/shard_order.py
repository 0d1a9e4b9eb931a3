"""Which pairs a reader of a packed dataset yields, and in what order (pure: from ``index.json`` alone).

- Pairs: one per (entry, negative stream) of every sample, numbered as the folder ``DPODataset`` numbers them
  (videos sorted by name, streams in canonical order): ``pair_index``, which also seeds the pair's
  augmentation draw, so both readers give the same item for the same pair, seed and epoch.
- Ranks: rank ``r`` of ``W`` reads shards ``r, r + W, ...`` of the index, the same every epoch (so its pair
  count is fixed: ``len(dataset)``).
- Workers: each epoch the rank's shards are permuted (seed, epoch, rank), and DataLoader worker ``w`` of
  ``N`` reads the permuted shards ``w, w + N, ...``; a worker streams its shards' samples in order, each
  sample's pairs in order, through a seeded shuffle buffer of ``buffer`` pairs.
Every pair is in exactly one (rank, worker) stream, once: each epoch yields every pair exactly once
across all ranks and workers. A stream is a pure function of (index, seed, epoch, rank, world, worker,
workers, buffer), so a reader resumes a stream by skipping its first ``n`` positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import format as fmt
from .items import PairIndexEntry
from .seeding import derive_seed


@dataclass(frozen=True)
class PackedPair:
    """One pair of a packed dataset: where it is (shard, sample key, entry index) and what it is."""

    pair_index: int
    shard: str
    key: str
    entry: int
    pair: PairIndexEntry


def index_pairs(index: Mapping[str, Any], neg_types: Sequence[str] | None = None) -> list[PackedPair]:
    """Every pair of ``index`` (of ``neg_types`` only, when given), sorted by ``pair_index``: the folder
    reader's order over the packed manifest (its videos in their ``order``, each video's streams in
    canonical order, ``regdpo.format.sort_streams``)."""
    found = []
    for shard in index["shards"]:
        for sample in shard["samples"]:
            for k, entry in enumerate(sample["entries"]):
                weights = {n["stream"]: float(n.get("pair_weight", 1.0)) for n in entry["negatives"]}
                streams = fmt.sort_streams(fmt.NegativeStream.from_dict(n) for n in entry["negatives"])
                for rank, s in enumerate(streams):
                    if neg_types is not None and s.type not in neg_types:
                        continue
                    pair = PairIndexEntry(entry["name"], s.type, sample["num_frames"], sample["height"],
                                          sample["width"], entry["prompt"], s.strength, s.stream,
                                          weights.get(s.stream, 1.0))
                    found.append(((entry.get("order", 0), entry["name"], rank), shard["name"], sample["key"], k, pair))
    found.sort(key=lambda f: f[0])
    return [PackedPair(i, shard, key, k, pair) for i, (_, shard, key, k, pair) in enumerate(found)]


def rank_shards(shards: Sequence[str], rank: int, world: int) -> list[str]:
    """The shards rank ``rank`` of ``world`` reads, every epoch."""
    return list(shards[rank::world])


def worker_shards(shards: Sequence[str], seed: int, epoch: int, rank: int, worker: int, workers: int) -> list[str]:
    """The shards DataLoader worker ``worker`` of ``workers`` reads this epoch, in reading order, from its
    rank's ``shards``."""
    perm = np.random.default_rng(derive_seed(seed, "shards", epoch, rank)).permutation(len(shards))
    return [shards[i] for i in perm][worker::workers]


def shuffle_buffer(stream: Iterable[int], size: int, rng: np.random.Generator) -> list[int]:
    """``stream`` through a shuffle buffer of ``size``: fill it, then emit a random element and put the next
    in its place; at the end emit the rest in random order. ``size`` 1 keeps the stream's order."""
    buffer: list[int] = []
    out: list[int] = []
    for item in stream:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = int(rng.integers(size))
        out.append(buffer[i])
        buffer[i] = item
    rng.shuffle(buffer)
    return out + buffer


def stream_order(pairs_by_sample: Mapping[str, Sequence[Sequence[int]]], shards: Sequence[str], seed: int,
                 epoch: int, rank: int, worker: int, workers: int, buffer: int) -> list[int]:
    """The ``pair_index`` order of one (rank, worker) stream: ``pairs_by_sample[shard]`` lists the pair
    indices of each sample of the shard, in the shard's order; ``shards`` are the rank's."""
    mine = worker_shards(shards, seed, epoch, rank, worker, workers)
    stream = (p for shard in mine for sample in pairs_by_sample[shard] for p in sample)
    rng = np.random.default_rng(derive_seed(seed, "shuffle_buffer", epoch, rank, worker))
    return shuffle_buffer(stream, buffer, rng)


def pairs_by_sample(index: Mapping[str, Any], pairs: Sequence[PackedPair]) -> dict[str, list[list[int]]]:
    """``{shard: [[pair_index of the sample's pairs] per sample in shard order]}`` (entries, then streams in
    canonical order, within a sample)."""
    of_sample: dict[tuple[str, str], list[PackedPair]] = {}
    for p in pairs:
        of_sample.setdefault((p.shard, p.key), []).append(p)
    out: dict[str, list[list[int]]] = {}
    for shard in index["shards"]:
        out[shard["name"]] = [
            [p.pair_index for p in sorted(of_sample.get((shard["name"], s["key"]), []), key=lambda p: (p.entry, p.pair_index))]
            for s in shard["samples"]
        ]
    return out
