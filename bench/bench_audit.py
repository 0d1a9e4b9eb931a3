"""Audit throughput: videos per minute at 22 frames, with 1 and 2 worker processes.

Builds a synthetic dataset from the real DAVIS fixtures (../shared/data) with the writer
(three clear negatives per video), then times, in one run and on the same data:

- baseline: only reading every stream of every video (PNG decode: the I/O floor of any audit);
- ``regdpo audit`` (``runner.run_audit``) with ``--workers 1`` and ``--workers 2``.

Prints videos/minute and the ratio of audit time to the read-only baseline.

    python bench/bench_audit.py                       # 12 videos, 22 frames, 512x512
    python bench/bench_audit.py --videos 8 --height 240 --width 432
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import sys

from regdpo import format as fmt
from regdpo.audit import synthetic as S
from regdpo.audit.config import AuditConfig
from regdpo.audit.runner import run_audit, select_entries
from regdpo.frames import read_mask_clip, read_rgb_clip

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import MachineLoad  # noqa: E402


def read_only(root: Path, entries) -> None:
    for e in entries:
        names = fmt.frame_names(e.num_frames)
        read_rgb_clip([root / e.name / fmt.GT_DIR / n for n in names])
        read_mask_clip([root / e.name / fmt.MASK_DIR / n for n in names])
        for t in e.neg_types:
            read_rgb_clip([root / e.name / t / n for n in names])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--frames", type=int, default=22)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--flow-preset", default="medium", choices=("ultrafast", "fast", "medium"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "dpo_data"
        if (DATA / "DAVIS").is_dir():
            clips = S.davis_clips(DATA, args.frames, args.height, args.width)
            source = "DAVIS fixtures"
        else:
            clips = {f"tex{k}": S.textured_clip(args.frames, args.height, args.width, seed=k) for k in range(2)}
            source = "procedural texture (fixtures absent)"
        copies = -(-args.videos // len(clips))
        t0 = time.perf_counter()
        S.build_dataset(root, clips, copies=copies, wrong=False)
        _, entries, _ = select_entries(root, max_videos=args.videos)
        print(f"dataset: {len(entries)} videos x {args.frames} frames, {args.width}x{args.height}, 3 negatives "
              f"({source}; built in {time.perf_counter() - t0:.1f} s)")

        results = {}
        t0 = time.perf_counter()
        read_only(root, entries)
        results["read-only baseline"] = time.perf_counter() - t0
        cfg = AuditConfig(flow_preset=args.flow_preset)
        loads = {}
        for workers in (1, 2):
            with MachineLoad() as load:
                t0 = time.perf_counter()
                doc = run_audit(root, entries, cfg, workers=workers)
                results[f"audit --workers {workers}"] = time.perf_counter() - t0
            loads[workers] = load.summary()
            assert doc["num_items"] == 3 * len(entries)
        base = results["read-only baseline"]
        for label, secs in results.items():
            print(f"{label:<20} {secs:7.2f} s  {60 * len(entries) / secs:7.1f} videos/min  "
                  f"{secs / base:5.2f}x read-only")
        for workers, summary in loads.items():  # a 2-worker run with a busy second core is no faster
            print(f"--workers {workers}: {summary}")


if __name__ == "__main__":
    main()
