"""Packed shards (``regdpo pack``) versus the folder format: storage, files, pack time, reading speed.

Data: the real fixtures in ``../shared/data`` (DAVIS bmx-trees and tennis, 30 frames at 432x240, and the
60-frame 640x360 YouTube-VOS driving clip), each given as ``--copies`` sources (hard links: each copy has
its own name, hence its own masks and seeds) to ``regdpo generate`` with the classical backend at
``--nframes`` x ``--resolution`` (default 22 x 512, upscaled: ``--max_upscale 3``), two negatives per entry
(blur, hallucination) and ``--masks_per_clip 4``. The K = 1 dataset is the k = 0 entries of that run (the
entries a K = 1 run writes, byte for byte), selected through a manifest. For K = 1 and K = 4:

- bytes per pair and files per pair of the folders (the entries' folders and the manifest) and of the pack
  (shards and index.json, ``--shard_size 1GB``): the files of this small set, and at a full 1 GB shard
  (one shard file per the pairs that fit 1 GB, from the measured bytes per pair: what a large dataset has);
- pack time per video (mask entry);
- samples per second of the shard reader (``DPODataset`` with ``args.dpo_shards``) and of the folder
  ``DPODataset`` (random window, crop, flip, reversal as in bench_dataset), in one process and through a
  ``DataLoader`` with 2 workers, interleaved run by run so that load on a shared machine hits both alike.
  A reading run is one whole epoch, as training reads it (with workers: a fresh ``DataLoader`` iterator,
  whose workers start, each epoch): every pair once, every clip's GT decoded once, every item made
  consumed. The rate is ``(items - 1) / (time from the first item to the last)``; the start-up (iterator
  made, workers started, first item) is printed apart, as seconds to the first item;
- CPU seconds per item of each reader (this process and its DataLoader workers; less sensitive to other
  work on a shared machine than wall time), the share of it in the main process, and the hand-over of one
  item from a worker to the main process step by step (``collate_fn``, the copy into shared memory that
  the worker's queue makes when it pickles the batch, freeing it), measured in this process: with
  workers every item pays it, whichever reader made it.

Printed as ratios packed / folders; goals at K = 4: bytes per pair <= 0.35x, files per pair <= 0.001x (at a
full shard), reading >= 1.5x as fast (exit status 1 when one is missed).

    python bench/bench_pack.py                          # 2 copies, 2 epochs per reader and mode
    python bench/bench_pack.py --work /tmp/bp --keep    # keep the generated data for the next run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from regdpo.dataset import DPODataset, collate_fn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dataset import WordTokenizer  # noqa: E402
from machine import MachineLoad  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SOURCES = {"bmx": "DAVIS/JPEGImages/480p/bmx-trees", "tennis": "DAVIS/JPEGImages/480p/tennis",
           "drive": "YTBV/train_all_frames/JPEGImages/0a1b2c3d4e"}
SHARD = 10**9


def make_sources(data: Path, folder: Path, copies: int) -> Path:
    for name, rel in SOURCES.items():
        for c in range(copies):
            dst = folder / f"{name}{c}"
            dst.mkdir(parents=True, exist_ok=True)
            for frame in sorted((data / rel).iterdir()):
                if not (dst / frame.name).exists():
                    try:
                        os.link(frame, dst / frame.name)
                    except OSError:
                        shutil.copy(frame, dst / frame.name)
    return folder


def generate(sources: Path, out: Path, nframes: int, resolution: int, masks: int) -> None:
    if (out / fmt.MANIFEST_FILE).is_file():
        return  # kept from an earlier run (--work --keep)
    status = regdpo_main(["generate", "--video_root", str(sources), "--output_dir", str(out), "--nframes",
                          str(nframes), "--resolution", str(resolution), "--max_upscale", "3", "--assumed_fps", "15",
                          "--neg_types", "blur", "hallucination", "--masks_per_clip", str(masks), "--seed", "1",
                          "--no_progress"])
    if status != 0:
        raise SystemExit(f"generate failed ({status})")


def selection(root: Path, k: int, path: Path) -> Path:
    """A manifest of the entries with mask index < k."""
    manifest = json.loads((root / fmt.MANIFEST_FILE).read_text())
    manifest["videos"] = [v for v in manifest["videos"]
                          if fmt.read_video_meta(root, v["name"]).mask_index < k]
    path.write_text(json.dumps(manifest))
    return path


def tree(paths: list[Path]) -> tuple[int, int]:
    """(bytes, files) under these files / folders."""
    nbytes = files = 0
    for p in paths:
        for f in ([p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]):
            nbytes += f.stat().st_size
            files += 1
    return nbytes, files


def reader_args(root: Path, nframes: int, resolution: int, manifest: Path, packed: Path | None) -> SimpleNamespace:
    args = SimpleNamespace(dpo_data_root=str(root), manifest=str(manifest), nframes=nframes, resolution=resolution,
                           proportion_empty_prompts=0.1, boundary_dilation=7, random_flip=True, random_reverse=True,
                           dataset_seed=0)
    if packed is not None:
        args.dpo_shards = str(packed)
    return args


@dataclass
class Reading:
    """One reading run: a whole epoch of a reader (see ``read_epoch``)."""

    items: int
    first_s: float  # from the start of the epoch (iterator made, workers started) to the first item
    steady_s: float  # from the first item to the last
    main_cpu_s: float  # CPU seconds of this process during the run
    worker_cpu_s: float  # CPU seconds of the DataLoader workers (reaped children) during the run

    @property
    def rate(self) -> float:
        """Samples per second after the first item: ``(items - 1) / steady_s``."""
        return (self.items - 1) / max(self.steady_s, 1e-9)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_epoch(dataset, workers: int, epoch: int) -> Reading:
    """Read epoch ``epoch`` of ``dataset`` to its end, batch 1, as training reads it.

    ``workers`` 0: in this process, the items themselves (the shard reader's stream; the folder reader's
    items in a seeded random order), no collate. ``workers`` > 0: a fresh ``DataLoader`` iterator with
    ``collate_fn`` (what training does each epoch without ``persistent_workers``); its workers are joined
    at the epoch's end, so their CPU time is counted (``RUSAGE_CHILDREN``). Every item made is consumed:
    no prefetched item is thrown away at the end of a run.
    """
    torch.set_num_threads(1)
    dataset.set_epoch(epoch)
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    children0, cpu0, t0 = _children_cpu(), time.process_time(), time.perf_counter()
    if workers == 0 and iterable:
        items = iter(dataset)
    elif workers == 0:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(epoch)).tolist()
        items = (dataset[i] for i in order)
    else:
        items = iter(torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=collate_fn,
                                                 shuffle=not iterable,
                                                 generator=torch.Generator().manual_seed(epoch)))
    count, first = 0, None
    for _ in items:
        count += 1
        if first is None:
            first = time.perf_counter()
    last = time.perf_counter()
    cpu1 = time.process_time()
    del items
    if first is None:
        raise SystemExit("a reading run read no item")
    return Reading(count, first - t0, last - first, cpu1 - cpu0, _children_cpu() - children0)


def handover(item: dict) -> dict[str, float]:
    """CPU seconds of handing one item from a ``DataLoader`` worker to the main process, step by step (here,
    in this process): stacking in plain memory (``collate_fn`` outside a worker; a batch of one: every tensor
    copied by ``torch.stack``; in a worker ``collate_fn`` takes the shared-memory path below), moving the
    batch into shared memory (what the worker's queue does when it pickles the batch: a copy into fresh
    shared memory), freeing it (the main process, once the batch is dropped); and, for comparison,
    stacking straight into shared memory as ``torch.utils.data.default_collate`` does in a worker (one
    copy instead of two). ``mb``: megabytes of the collated batch."""
    tensors = [v for v in item.values() if isinstance(v, torch.Tensor)]
    out = {}
    t = time.process_time()
    batch = collate_fn([item])
    out["collate"] = time.process_time() - t
    stacked = [v for v in batch.values() if isinstance(v, torch.Tensor)]
    out["mb"] = sum(v.numel() * v.element_size() for v in stacked) / 1e6
    t = time.process_time()
    for v in stacked:
        v.share_memory_()
    out["share"] = time.process_time() - t
    t = time.process_time()
    del batch, stacked
    out["free"] = time.process_time() - t
    t = time.process_time()
    direct = []
    for v in tensors:  # torch.utils.data.default_collate's path in a worker
        storage = v._typed_storage()._new_shared(v.numel(), device=v.device)
        direct.append(torch.stack([v], 0, out=v.new(storage).resize_(1, *v.shape)))
    out["stack_shared"] = time.process_time() - t
    del direct
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=SHARED, help="folder with DAVIS/ and YTBV/ (default ../shared/data)")
    p.add_argument("--copies", type=int, default=2, help="sources per fixture clip (default 2)")
    p.add_argument("--nframes", type=int, default=22)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--rounds", type=int, default=2, help="interleaved reading runs (epochs) per reader (default 2)")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (the generated data is reused)")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"fixtures not found at {args.data}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_pack_"))
    work.mkdir(parents=True, exist_ok=True)
    failed = []
    try:
        with MachineLoad() as load:
            root = work / "dpo_data"
            t0 = time.perf_counter()
            generate(make_sources(args.data, work / "sources", args.copies), root, args.nframes, args.resolution, 4)
            print(f"data: {len(fmt.complete_videos(root))} entries ({args.copies} copies x {len(SOURCES)} fixture "
                  f"clips x K = 4), {args.nframes} frames, short side {args.resolution}; generated in "
                  f"{time.perf_counter() - t0:.0f} s")
            rows = {}
            for k in (1, 4):
                manifest = selection(root, k, work / f"manifest.k{k}.json")
                videos = json.loads(manifest.read_text())["videos"]
                pairs = sum(len(v["negatives"]) for v in videos)
                folder_bytes, folder_files = tree([root / v["name"] for v in videos] + [root / fmt.MANIFEST_FILE])
                packed = work / f"packed_k{k}"
                shutil.rmtree(packed, ignore_errors=True)
                t0 = time.perf_counter()
                if regdpo_main(["pack", str(root), str(packed), "--manifest", str(manifest), "--shard_size", "1GB",
                                "--no_progress"]) != 0:
                    raise SystemExit("pack failed")
                pack_s = time.perf_counter() - t0
                packed_bytes, packed_files = tree([packed])
                per_shard = max(1, SHARD // max(1, packed_bytes // pairs))  # pairs in a full 1 GB shard
                row = dict(videos=len(videos), pairs=pairs, pack_s_per_video=pack_s / len(videos),
                           bytes_folder=folder_bytes / pairs, bytes_packed=packed_bytes / pairs,
                           files_folder=folder_files / pairs, files_packed=packed_files / pairs,
                           files_packed_full=1 / per_shard)
                # the readers: the same selection packed into at least 6 shards, so 2 workers both have shards
                reading = work / f"reading_k{k}"
                shutil.rmtree(reading, ignore_errors=True)
                if regdpo_main(["pack", str(root), str(reading), "--manifest", str(manifest), "--shard_size",
                                str(max(1, packed_bytes // 6)), "--no_progress"]) != 0:
                    raise SystemExit("pack failed")
                folder = DPODataset(reader_args(root, args.nframes, args.resolution, manifest, None), WordTokenizer())
                shards = DPODataset(reader_args(root, args.nframes, args.resolution, manifest, reading), WordTokenizer())
                for workers in (0, 2):
                    runs = {"folder": [], "packed": []}
                    for r in range(args.rounds):  # interleaved: load hits both alike
                        runs["folder"].append(read_epoch(folder, workers, r))
                        runs["packed"].append(read_epoch(shards, workers, r))
                    for name, readings in runs.items():
                        row[f"read_{name}_w{workers}"] = statistics.median(x.rate for x in readings)
                        row[f"first_{name}_w{workers}"] = statistics.median(x.first_s for x in readings)
                        row[f"cpu_{name}_w{workers}"] = statistics.median(
                            (x.main_cpu_s + x.worker_cpu_s) / x.items for x in readings)
                        row[f"main_cpu_{name}_w{workers}"] = statistics.median(x.main_cpu_s / x.items for x in readings)
                if k == 4:
                    shards.set_epoch(0)
                    stream = iter(shards)
                    handovers = [handover(next(stream)) for _ in range(3)]
                    del stream
                    row["handover"] = {key: statistics.median(h[key] for h in handovers) for key in handovers[0]}
                rows[k] = row
        print()
        print("| K | pairs | bytes/pair folders | packed | ratio | files/pair folders | packed (this set) | "
              "ratio | packed (1 GB shards) | ratio | pack s/video |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for k, r in rows.items():
            print(f"| {k} | {r['pairs']} | {r['bytes_folder'] / 1e6:.2f} MB | {r['bytes_packed'] / 1e6:.2f} MB | "
                  f"**{r['bytes_packed'] / r['bytes_folder']:.3f}** | {r['files_folder']:.1f} | {r['files_packed']:.3f} | "
                  f"{r['files_packed'] / r['files_folder']:.4f} | {r['files_packed_full']:.4f} | "
                  f"**{r['files_packed_full'] / r['files_folder']:.5f}** | {r['pack_s_per_video']:.2f} |")
        print()
        print("| K | reader | folder samples/s | shards samples/s | ratio |")
        print("|---|---|---|---|---|")
        for k, r in rows.items():
            for workers, label in ((0, "one process"), (2, "DataLoader, 2 workers")):
                f, s = r[f"read_folder_w{workers}"], r[f"read_packed_w{workers}"]
                print(f"| {k} | {label} | {f:.2f} | {s:.2f} | **{s / f:.2f}** |")
        print()
        print("| K | reader | CPU s/item folder | shards | ratio | of it in the main process: folder | shards | "
              "first item s: folder | shards |")
        print("|---|---|---|---|---|---|---|---|---|")
        for k, r in rows.items():
            for workers, label in ((0, "one process"), (2, "DataLoader, 2 workers")):
                f, s = r[f"cpu_folder_w{workers}"], r[f"cpu_packed_w{workers}"]
                print(f"| {k} | {label} | {f:.3f} | {s:.3f} | {f / s:.2f} | {r[f'main_cpu_folder_w{workers}']:.3f} | "
                      f"{r[f'main_cpu_packed_w{workers}']:.3f} | {r[f'first_folder_w{workers}']:.2f} | "
                      f"{r[f'first_packed_w{workers}']:.2f} |")
        h, r = rows[4]["handover"], rows[4]
        print()
        print(f"K = 4, CPU s per item with 2 workers minus in one process: folder "
              f"{r['cpu_folder_w2'] - r['cpu_folder_w0']:+.3f}, shards {r['cpu_packed_w2'] - r['cpu_packed_w0']:+.3f}")
        print(f"hand-over of one K = 4 item from a worker ({h['mb']:.0f} MB once stacked), CPU s: stacking "
              f"{h['collate']:.3f} + the queue's copy into shared memory {h['share']:.3f} + freeing "
              f"{h['free']:.3f} = {h['collate'] + h['share'] + h['free']:.3f} (a collate that stacks in plain "
              f"memory; regdpo's collate_fn, through default_collate, stacks straight into shared memory in a "
              f"worker: {h['stack_shared']:.3f})")
        r = rows[4]
        goals = [("bytes/pair <= 0.35x", r["bytes_packed"] / r["bytes_folder"] <= 0.35),
                 ("files/pair <= 0.001x (1 GB shards)", r["files_packed_full"] / r["files_folder"] <= 0.001),
                 ("reading >= 1.5x (one process)", r["read_packed_w0"] / r["read_folder_w0"] >= 1.5),
                 ("reading >= 1.5x (2 workers)", r["read_packed_w2"] / r["read_folder_w2"] >= 1.5)]
        print()
        print("goals at K = 4: " + "; ".join(f"{g}: {'met' if ok else 'MISSED'}" for g, ok in goals))
        failed = [g for g, ok in goals if not ok]
        print(load.summary())
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
