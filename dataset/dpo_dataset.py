"""Training dataset of Region-Reg-DPO preference pairs (DiffuEraser / BrushNet).

Thin entry point kept at this path for training scripts run from the repository root;
the implementation is ``regdpo.dataset`` (see its docstring for fields, conventions,
augmentation and randomness).

    from dataset.dpo_dataset import DPODataset, collate_fn
    dataset = DPODataset(args, tokenizer)   # args.dpo_data_root, nframes, resolution, ...
"""

from regdpo.dataset import DPODataset, collate_fn  # noqa: F401

__all__ = ["DPODataset", "collate_fn"]
