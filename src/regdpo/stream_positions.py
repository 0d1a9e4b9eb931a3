"""Where each stream of the packed reader stands in its epoch: the data position a checkpoint carries.

A stream is one (rank, DataLoader worker) of ``PackedDPODataset``, keyed ``"rank/worker"``; its position is
``[next position, pairs skipped so far this epoch, damaged shards its process has seen]``. Items carry their
stream's position (``stream_position``, ``POSITION_FIELDS``); the consumer reports every consumed batch
(``advance``), so the main process knows the positions even when workers produce the items.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from .errors import UsageError

STATE_FORMAT = "regdpo-shard-reader"
STATE_VERSION = 1
POSITION_FIELDS = ("epoch", "rank", "worker", "workers", "position", "skipped", "damaged_shards")
"""``stream_position`` of an item: int64 ``[7]`` (``[B, 7]`` in a batch), in this order: the stream, the next
position in it, the pairs it skipped so far this epoch, the damaged shards its process has seen."""


class StreamPositions:
    """The consumed positions of one rank's streams, and the position a restored reader starts from.

    ``rank``, ``seed``, ``shuffle_buffer``, ``world_size``: the reader's; a saved position is only valid for
    the same seed, shuffle buffer, world size and number of DataLoader workers.
    """

    def __init__(self, rank: int, seed: int, shuffle_buffer: int, world_size: int):
        self.rank, self.seed, self.shuffle_buffer, self.world_size = rank, seed, shuffle_buffer, world_size
        self.seen: dict[str, list[int]] = {}  # "rank/worker" -> [position, skipped, damaged], this epoch
        self.seen_epoch = -1
        self.epochs: dict[str, int] = {}  # rank -> epoch, from a merged state
        self.workers: int | None = None
        self.resume: dict[str, Any] | None = None

    def advance(self, batch: Mapping[str, Any]) -> None:
        """Record that the items of ``batch`` (or one item) were consumed: from their ``stream_position``."""
        rows = torch.as_tensor(batch["stream_position"]).reshape(-1, len(POSITION_FIELDS)).tolist()
        for epoch, rank, worker, workers, position, skipped, damaged in rows:
            if epoch != self.seen_epoch:  # a new epoch of this rank: its streams start again
                self.seen = {k: v for k, v in self.seen.items() if k.split("/")[0] != str(rank)}
                self.seen_epoch = epoch
            self.workers = workers
            slot = f"{rank}/{worker}"
            old = self.seen.get(slot, [0, 0, 0])
            self.seen[slot] = [max(old[0], position), max(old[1], skipped), max(old[2] if len(old) > 2 else 0, damaged)]

    def _mine(self) -> list[list[int]]:
        return [v for key, v in self.seen.items() if key.split("/")[0] == str(self.rank)]

    @property
    def skipped_pairs(self) -> int:
        """Damaged pairs this rank skipped so far this epoch, as reported by the consumed items."""
        return sum(v[1] for v in self._mine())

    @property
    def reported_damaged_shards(self) -> int:
        """Damaged shards of this rank as reported by the consumed items of its streams."""
        return sum(v[2] for v in self._mine() if len(v) > 2)

    def state_dict(self, current_epoch: int) -> dict[str, Any]:
        """The data position: epoch, and per ``"rank/worker"`` stream the next position and the pairs skipped."""
        epoch = self.seen_epoch if self.seen else current_epoch
        epochs = dict(self.epochs, **{str(self.rank): epoch})
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "rank": self.rank, "epoch": epoch,
                "epochs": epochs, "seed": self.seed, "shuffle_buffer": self.shuffle_buffer,
                "world_size": self.world_size, "num_workers": self.workers, "positions": dict(self.seen)}

    def load_state_dict(self, state: Mapping[str, Any]) -> int:
        """Resume at ``state``: each stream starts after its recorded position; returns this rank's epoch. The
        same seed, shuffle buffer and world size are required (a clear ``UsageError`` otherwise)."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise UsageError(f"not a {STATE_FORMAT} state (format {state.get('format')!r}, version {state.get('version')!r})")
        for key, mine in (("seed", self.seed), ("shuffle_buffer", self.shuffle_buffer), ("world_size", self.world_size)):
            if state[key] != mine:
                raise UsageError(f"the data position was saved with {key} {state[key]}, this reader has {mine}: "
                                 "resume with the same settings")
        epoch = int(state.get("epochs", {}).get(str(self.rank), state["epoch"]))  # ranks' epochs may differ
        self.resume = {"epoch": epoch, "num_workers": state.get("num_workers"),
                       "positions": {k: list(v) for k, v in state["positions"].items()}}
        self.record(state)
        if state.get("num_workers") is not None:
            self.workers = state["num_workers"]
        return epoch

    def record(self, state: Mapping[str, Any]) -> None:
        """Take ``state``'s positions as the consumed ones (e.g. every rank's, merged) without changing where
        an iteration starts (``load_state_dict`` does that)."""
        self.seen = {k: list(v) for k, v in state["positions"].items()}
        self.epochs = dict(state.get("epochs", {}))
        self.seen_epoch = int(self.epochs.get(str(self.rank), state["epoch"]))

    def start(self, epoch: int, worker: int, workers: int) -> tuple[int, int]:
        """(position, skipped) where stream ``worker`` of ``workers`` starts in ``epoch``: after the restored
        position in the restored epoch, else (0, 0)."""
        resume = self.resume
        if resume is None or resume["epoch"] != epoch:
            return 0, 0
        if resume["num_workers"] is not None and resume["num_workers"] != workers:
            raise UsageError(f"the data position was saved with {resume['num_workers']} DataLoader workers, "
                             f"this loader has {workers}: resume with the same number")
        start, skipped = resume["positions"].get(f"{self.rank}/{worker}", [0, 0])[:2]
        return start, skipped

    @staticmethod
    def merge(states: list[Mapping[str, Any]]) -> dict[str, Any]:
        """One state of every rank's ``state_dict()``: each rank's own streams (``"rank/worker"``) and epoch
        from that rank's state."""
        merged = dict(states[0])
        merged["positions"], merged["epochs"] = {}, {}
        for state in states:
            rank = str(state.get("rank", 0))
            merged["positions"].update({k: v for k, v in state["positions"].items() if k.split("/")[0] == rank})
            merged["epochs"][rank] = state["epoch"]
            if merged.get("num_workers") is None:
                merged["num_workers"] = state.get("num_workers")
        return merged
