"""Shared by the test modules: where the real-video fixtures are, a tokenizer stand-in, tree listing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
"""The real DAVIS / YouTube-VOS fixtures (../shared/data from the repo root); absent on a user's clone."""

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real-video fixtures not found at {DATA}")


class FakeTokenizer:
    """CLIPTokenizer stand-in: BOS, one id per word (len + 100), EOS, padded with EOS to 77."""

    model_max_length = 77

    def __init__(self):
        self.calls = []

    def __call__(self, text, max_length, padding, truncation, return_tensors):
        assert (padding, truncation, return_tensors) == ("max_length", True, "pt")
        self.calls.append(text)
        ids = [49406] + [100 + len(w) for w in text.split()][: max_length - 2] + [49407]
        ids += [49407] * (max_length - len(ids))
        return {"input_ids": torch.tensor([ids], dtype=torch.long)}


def audit_clips(frames: int, height: int, width: int) -> dict:
    """Clips the audit tests measure, ``{name: uint8 [T,H,W,3]}``: a synthetic texture, and the DAVIS
    fixtures when present."""
    from regdpo.audit import synthetic

    clips = {"texture": synthetic.textured_clip(frames, height, width, seed=1)}
    if (DATA / "DAVIS").is_dir():
        clips.update(synthetic.davis_clips(DATA, frames, height, width))
    return clips


def tree_files(root) -> list[str]:
    """Every file under ``root``, as sorted relative POSIX paths."""
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())

def dataset_contents(root) -> dict:
    """Every file's bytes but locks and manifest.json, meta.json without its timings (the only field that
    differs between runs with one seed)."""
    import json

    from regdpo import format as fmt

    out = {}
    for rel in tree_files(root):
        if rel.startswith(".lock") or rel == fmt.MANIFEST_FILE:
            continue
        data = (Path(root) / rel).read_bytes()
        if rel.endswith(fmt.META_FILE):
            meta = json.loads(data)
            meta.pop("timings")
            data = json.dumps(meta, sort_keys=True).encode()
        out[rel] = data
    return out


def write_pair_dataset(root, videos=(("clip_a", 7), ("clip_b", 6)), size=64, neg_types=("blur",), seed=0):
    """A small ``dpo_data/`` folder: per video a random panning GT, a moving hole, and negatives that
    differ from the GT only inside it; returns ``root``. ``videos``: ``(name, frames)`` pairs."""
    import numpy as np

    from regdpo import format as fmt
    from regdpo.writer import rebuild_manifest, write_video_entry

    rng = np.random.default_rng(seed)
    for k, (name, frames) in enumerate(videos):
        base = rng.integers(0, 256, (size, size + 4 * frames, 3), dtype=np.uint8)
        gt = np.stack([base[:, 4 * t:4 * t + size] for t in range(frames)])
        hole = np.zeros(gt.shape[:3], bool)
        for t in range(frames):
            hole[t, 16 + t:40 + t, 12 + 2 * k:44 + 2 * k] = True
        negatives = {n: np.where(hole[..., None], (255 - gt) // (i + 1), gt).astype(np.uint8)
                     for i, n in enumerate(neg_types)}
        meta = fmt.VideoMeta(name, frames, size, size, list(neg_types), prompt="a scene")
        write_video_entry(root, meta, gt, hole, negatives)
    rebuild_manifest(root)
    return root


def load_bench(name: str):
    """The module ``bench/{name}.py`` (bench/ on ``sys.path`` while it loads, for its sibling imports)."""
    import importlib.util
    import sys

    path = REPO / "bench" / f"{name}.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module
