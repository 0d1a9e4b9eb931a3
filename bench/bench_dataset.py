"""Throughput of ``DPODataset`` next to the pure decode cost of the files it reads.

Writes a small ``dpo_data/`` folder from the real fixtures in ``../shared/data`` (DAVIS
bmx-trees and tennis, 432x240, and a 640x360 YouTube-VOS driving clip), upscaled so that
the short side is ``--resolution`` (the realistic case: data generated with
``regdpo generate --resolution 512``), with DAVIS object masks (or a moving ellipse) and
blur / hallucination negatives written through ``regdpo.writer``. Then, item by item and
interleaved (so that load on a shared machine hits both alike):

- floor:   ``np.fromfile`` + ``cv2.imdecode`` of exactly the PNGs the item reads (GT, mask, negative), nothing else;
- dataset: ``dataset[i]``, the complete item (crop, flip, tensors, conditioning, region masks,
  tokens).

Both run on one thread (``torch.set_num_threads(1)``, as in a ``DataLoader`` worker).
Printed: median wall time per sample of each, median CPU time (``time.process_time``:
less sensitive to other processes on a shared machine), and their ratios.
Target: dataset time per sample <= 1.3x the decode floor (exit status 1 when the wall
ratio is above it).

    python bench/bench_dataset.py                     # 22 frames at 512, 24 samples
    python bench/bench_dataset.py --stored-short-side 240   # also: data stored at 240p, resized on load
    python bench/bench_dataset.py --keep-previous --loader-workers 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch
from PIL import Image

from regdpo import format as fmt
from regdpo.dataset import DPODataset, collate_fn
from regdpo.writer import rebuild_manifest, write_video_entry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import MachineLoad  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


class WordTokenizer:
    """A stand-in for CLIPTokenizer (no download): one id per word, padded to 77."""

    model_max_length = 77

    def __call__(self, text, max_length, padding, truncation, return_tensors):
        ids = [49406] + [1000 + len(w) for w in text.split()][: max_length - 2] + [49407]
        ids += [49407] * (max_length - len(ids))
        return {"input_ids": torch.tensor([ids], dtype=torch.long)}


def _read_dir(folder: Path, limit: int | None = None) -> np.ndarray:
    paths = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))[:limit]
    return np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths])


def _davis_holes(seq: str, shape: tuple[int, int, int]) -> np.ndarray:
    folder = SHARED / "DAVIS" / "Annotations" / "480p" / seq
    paths = sorted(folder.glob("*.png"))[: shape[0]]
    holes = np.stack([np.asarray(Image.open(p)) > 0 for p in paths])  # palette indices: 0 = background
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    return np.stack([cv2.dilate(h.astype(np.uint8), kernel) > 0 for h in holes])


def _ellipse_holes(shape: tuple[int, int, int]) -> np.ndarray:
    t, h, w = shape
    holes = np.zeros(shape, np.uint8)
    for i in range(t):
        cx = int(w * (0.3 + 0.4 * i / max(t - 1, 1)))
        cv2.ellipse(holes[i], (cx, h // 2), (w // 8, h // 5), 0, 0, 360, 1, -1)
    return holes > 0


def _resize_clip(frames: np.ndarray, size: tuple[int, int], interp: int) -> np.ndarray:
    return np.stack([cv2.resize(f, (size[1], size[0]), interpolation=interp) for f in frames])


def write_bench_data(root: Path, short_side: int) -> None:
    clips = [
        ("davis_bmx-trees", SHARED / "DAVIS/JPEGImages/480p/bmx-trees", "bmx-trees"),
        ("davis_tennis", SHARED / "DAVIS/JPEGImages/480p/tennis", "tennis"),
        ("ytvos_0a1b2c3d4e", SHARED / "YTBV/train_all_frames/JPEGImages/0a1b2c3d4e", None),
    ]
    for name, folder, davis_seq in clips:
        gt = _read_dir(folder, limit=30)
        t, h, w, _ = gt.shape
        hole = _davis_holes(davis_seq, (t, h, w)) if davis_seq else _ellipse_holes((t, h, w))
        scale = short_side / min(h, w)
        size = (8 * round(h * scale / 8), 8 * round(w * scale / 8))  # multiples of 8, as the generator writes
        gt = _resize_clip(gt, size, cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        hole = _resize_clip(hole.astype(np.uint8), size, cv2.INTER_NEAREST) > 0
        blur = np.stack([cv2.GaussianBlur(f, (0, 0), 6) for f in gt])
        hallucination = np.roll(gt, shift=(size[0] // 3, size[1] // 3), axis=(1, 2))
        meta = fmt.VideoMeta(name, t, size[0], size[1], ["hallucination", "blur"], prompt="")
        write_video_entry(root, meta, gt, hole, {"hallucination": hallucination, "blur": blur})
    rebuild_manifest(root)


def item_files(dataset: DPODataset, index: int) -> list[tuple[Path, int]]:
    """The files ``dataset[index]`` decodes (under ``args.seed``), with their imdecode flags."""
    pair = dataset.pairs[index]
    aug = dataset.augmentation(index)
    video = dataset.root / pair.video
    files = []
    for t in aug.frame_indices:
        name = fmt.frame_name(t)
        files += [
            (video / fmt.GT_DIR / name, cv2.IMREAD_COLOR),
            (video / fmt.MASK_DIR / name, cv2.IMREAD_GRAYSCALE),
            (video / pair.neg_type / name, cv2.IMREAD_COLOR),
        ]
    return files


def decode_floor(files: list[tuple[Path, int]]) -> None:
    for path, flags in files:
        if cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), flags) is None:
            raise RuntimeError(f"{path}: decode failed")


def measure(root: Path, nframes: int, resolution: int, samples: int, label: str, keep: bool = False,
            full_frame: bool = False) -> float:
    args = SimpleNamespace(
        dpo_data_root=str(root), nframes=nframes, resolution=resolution, proportion_empty_prompts=0.1,
        boundary_dilation=7, random_flip=True, random_reverse=True, dataset_seed=0, full_frame=full_frame,
    )
    dataset = DPODataset(args, WordTokenizer())
    dataset[0]  # warm-up: page cache, allocator, lazy imports
    decode_floor(item_files(dataset, 0))
    floor_s, item_s, floor_cpu, item_cpu = [], [], [], []
    kept = None
    for step in range(samples):
        index = step % len(dataset)
        dataset.set_epoch(step // len(dataset))
        files = item_files(dataset, index)
        c0, t0 = time.process_time(), time.perf_counter()
        decode_floor(files)
        c1, t1 = time.process_time(), time.perf_counter()
        sample = dataset[index]
        c2, t2 = time.process_time(), time.perf_counter()
        kept = sample if keep else None  # --keep-previous: the last sample is alive during the next
        del sample
        floor_s.append(t1 - t0)
        item_s.append(t2 - t1)
        floor_cpu.append(c1 - c0)
        item_cpu.append(c2 - c1)
    floor, item = statistics.median(floor_s), statistics.median(item_s)
    ratio = item / floor
    cpu_ratio = statistics.median(floor_cpu) and statistics.median(item_cpu) / statistics.median(floor_cpu)
    pair_ratio = statistics.median(i / f for i, f in zip(item_s, floor_s))
    del kept
    sizes = sorted({f"{w}x{h}" for h, w in dataset.item_sizes()})
    print(f"[{label}] {len(dataset)} pairs, {samples} samples of {nframes} frames at {', '.join(sizes)}, "
          f"{len(files)} PNGs per sample (medians over samples)")
    print(f"  decode floor : {floor * 1000:7.1f} ms/sample  ({1 / floor:5.2f} samples/s)  "
          f"cpu {statistics.median(floor_cpu) * 1000:7.1f} ms")
    print(f"  DPODataset   : {item * 1000:7.1f} ms/sample  ({1 / item:5.2f} samples/s)  "
          f"cpu {statistics.median(item_cpu) * 1000:7.1f} ms")
    print(f"  ratio dataset / floor: {ratio:.3f} wall, {cpu_ratio:.3f} cpu, {pair_ratio:.3f} median per-sample "
          f"(target <= 1.3)")
    return ratio


def loader_throughput(root: Path, nframes: int, resolution: int, samples: int, workers: int) -> None:
    args = SimpleNamespace(dpo_data_root=str(root), nframes=nframes, resolution=resolution,
                           random_flip=True, random_reverse=True)
    dataset = DPODataset(args, WordTokenizer())
    indices = [i % len(dataset) for i in range(samples + 2 * workers)]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=1,
                                         num_workers=workers, collate_fn=collate_fn)
    it = iter(loader)
    for _ in range(2 * workers):  # start-up and first items
        next(it)
    t0 = time.perf_counter()
    count = sum(1 for _ in it)
    elapsed = time.perf_counter() - t0
    print(f"  DataLoader, {workers} workers, batch 1: {count / elapsed:5.2f} samples/s "
          f"({elapsed / count * 1000:.0f} ms/sample, includes the transfer from the workers)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nframes", type=int, default=22)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--stored-short-side", type=int, default=None,
                        help="also measure data stored at this short side (resized on load)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where to write the data (default: a temp dir)")
    parser.add_argument("--keep-previous", action="store_true",
                        help="also measure with the previous sample still alive (no memory reuse)")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="also report samples/s through a DataLoader with this many workers (batch size 1)")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        print(f"fixtures not found at {SHARED}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="bench_dataset_", dir=args.data_dir) as tmp, MachineLoad() as load:
        cases = [(args.resolution, f"stored short side {args.resolution}: crop only")]
        if args.stored_short_side:
            cases.append((args.stored_short_side, f"stored short side {args.stored_short_side}: resized on load"))
        ratios = []
        for short_side, label in cases:
            root = Path(tmp) / f"dpo_data_{short_side}"
            t0 = time.perf_counter()
            write_bench_data(root, short_side)
            print(f"wrote {root} in {time.perf_counter() - t0:.1f} s")
            ratios.append(measure(root, args.nframes, args.resolution, args.samples, label))
            measure(root, args.nframes, args.resolution, args.samples, label + ", full frames (args.full_frame)",
                    full_frame=True)
            if args.keep_previous:
                measure(root, args.nframes, args.resolution, args.samples, label + ", previous sample alive", keep=True)
            if args.loader_workers:
                loader_throughput(root, args.nframes, args.resolution, args.samples, args.loader_workers)
    print(f"torch {torch.__version__}, opencv {cv2.__version__}, numpy {np.__version__}, 1 thread")
    print(load.summary())
    return 0 if ratios[0] <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
