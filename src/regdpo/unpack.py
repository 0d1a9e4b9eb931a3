"""``regdpo unpack OUT ROOT``: a packed dataset back into ``dpo_data/`` video folders.

Every entry of every sample becomes a complete video folder written through ``regdpo.writer`` (staged,
checksummed, ``meta.json`` last, renamed into place): the GT and the mask decoded from their stored PNGs,
each negative restored by compositing its crop onto the GT. Pixels equal the packed dataset's originals,
``meta.json`` records are the originals' (the selection's negatives only), and ``regdpo verify ROOT``
passes. Resumable: a video folder already complete in ``ROOT`` is kept. ``manifest.json`` is rebuilt at the end;
when the packed selection carries ``pair_weight``s (``regdpo select --weights``), they come back in
``manifest.selected.json`` (the same entries, each negative with its weight), as ``select`` wrote it.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import format as fmt
from .errors import FormatError, UsageError
from .progress import Progress, plural
from .safe_io import check_writable, real_dir
from .shard_io import PackedSample, is_url, iter_shard, read_index


def entry_arrays(sample: PackedSample, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(gt uint8 [T,H,W,3] RGB, hole bool [T,H,W], {stream: negative RGB})`` of entry ``k`` of a sample."""
    meta: fmt.VideoMeta = sample.entries[k]["video"]
    gt_bgr = [sample.gt_bgr(t) for t in range(meta.num_frames)]
    gt = np.stack([g[:, :, ::-1] for g in gt_bgr])
    hole = np.stack([sample.mask(k, t) != 0 for t in range(meta.num_frames)])
    negatives = {s.stream: np.stack([sample.negative_bgr(k, s.stream, t, gt_bgr[t])[:, :, ::-1]
                                     for t in range(meta.num_frames)]) for s in meta.streams}
    return gt, hole, negatives


def unpack(location: str, root: Path, progress: bool = True) -> dict:
    from .writer import output_lock, rebuild_manifest, write_video_entry

    index = read_index(location)
    check_writable(root, "dataset root")
    real_dir(root)
    written = kept = 0
    packed_negatives: dict[str, list[dict[str, Any]]] = {}
    bar = Progress(total=index["num_videos"], desc="unpack", unit="video", enabled=progress)
    try:
        with output_lock(root):
            for shard in index["shards"]:
                for sample in iter_shard(location, shard["name"]):
                    for k, entry in enumerate(sample.entries):
                        meta: fmt.VideoMeta = entry["video"]
                        packed_negatives[meta.name] = entry["negatives"]
                        if (root / meta.name / fmt.META_FILE).is_file():
                            kept += 1
                        else:
                            gt, hole, negatives = entry_arrays(sample, k)
                            write_video_entry(root, meta, gt, hole, negatives)
                            written += 1
                        bar.update()
            manifest = rebuild_manifest(root)
            weighted = weighted_manifest(manifest, packed_negatives)
            if weighted is not None:
                fmt.write_json_atomic(root / fmt.SELECTED_MANIFEST_FILE, weighted.to_dict())
    finally:
        bar.close()
    return {"written": written, "kept": kept, "videos": len(manifest.videos),
            "weighted": weighted is not None}


def weighted_manifest(manifest: fmt.Manifest, packed_negatives: dict[str, list[dict[str, Any]]]) -> fmt.Manifest | None:
    """``manifest``'s entries with the packed records' negatives (their ``pair_weight``s), or None when no
    packed negative carries a weight (then ``manifest.json`` says everything)."""
    if not any("pair_weight" in n for negatives in packed_negatives.values() for n in negatives):
        return None
    return replace(manifest, videos=[replace(e, negatives=packed_negatives.get(e.name, e.negatives))
                                     for e in manifest.videos])


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("packed", help="packed dataset folder or URL prefix (holding index.json)")
    parser.add_argument("root", help="dataset folder to write (new, or one a killed unpack left: it goes on)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar / lines")


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not is_url(args.packed) and not Path(args.packed).is_dir():
        raise UsageError(f"packed dataset {args.packed} does not exist or is not a folder")
    try:
        result = unpack(str(args.packed), root, progress=not args.no_progress)
    except (OSError, EOFError, ValueError) as exc:
        if isinstance(exc, (FormatError, UsageError)) or (isinstance(exc, OSError) and exc.filename):
            raise
        raise FormatError(f"{args.packed}: a shard does not read ({exc}); run `regdpo verify {args.packed}`") from None
    print(f"{root}: {plural(result['written'], 'video')} unpacked, {result['kept']} already there, "
          f"{plural(result['videos'], 'video')} in manifest.json"
          + (f"; their pair weights in {fmt.SELECTED_MANIFEST_FILE}" if result["weighted"] else ""))
    return 0
