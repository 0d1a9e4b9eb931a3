"""``train_region_reg_dpo.py --dpo_shards``: the packed dataset's loader and its data position in the checkpoints.

The shard reader (``regdpo.packed_dataset.PackedDPODataset``) splits shards by rank and DataLoader worker
itself, so its loader is not handed to ``accelerator.prepare`` (which would split the batches across the
ranks a second time); the step moves the tensors to the device. The dataset is registered for
checkpointing (``accelerator.register_for_checkpointing``): ``checkpoint-N/custom_checkpoint_0.pkl`` holds
its ``state_dict()``, every rank's stream positions gathered before rank 0 saves, and
``accelerator.load_state`` restores it on every rank, so a resumed run goes on with the rest of the epoch.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import torch


def shard_loader(dataset: Any, args: argparse.Namespace, collate_fn: Callable[..., Any], accelerator: Any
                 ) -> torch.utils.data.DataLoader:
    """The DataLoader of a packed dataset (no sampler: the dataset orders itself), registered for checkpoints."""
    accelerator.register_for_checkpointing(dataset)
    return torch.utils.data.DataLoader(dataset, batch_size=args.train_batch_size, drop_last=True,
                                       collate_fn=collate_fn, num_workers=args.dataloader_num_workers)


def gather_positions(accelerator: Any, dataset: Any) -> None:
    """Every rank's stream positions into this rank's dataset state (a collective: call on every rank at a
    checkpoint step, before rank 0 saves)."""
    state = dataset.state_dict()
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        states = gather_object([state])
    else:
        states = [state]
    dataset.record_positions(type(dataset).merge_states(states))


def metrics(accelerator: Any, dataset: Any) -> dict[str, int]:
    """What a metrics line reports of the data, summed over the ranks (a collective: call on every rank):
    damaged pairs skipped this epoch, damaged shards seen."""
    counts = torch.tensor([dataset.skipped_pairs, dataset.damaged_shards], device=accelerator.device)
    if accelerator.num_processes > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    skipped, damaged = counts.tolist()
    return {"data_skipped_pairs": int(skipped), "data_damaged_shards": int(damaged)}
