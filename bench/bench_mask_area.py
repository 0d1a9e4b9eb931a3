"""Measured hole area against ``--mask_area MIN MAX`` (and ``--mask_margin``), random and hard masks.

For each (mode, range, margin) and frame size, draws masks on ``--seeds`` seeds with
``regdpo.generate.masks.make_masks`` and prints the smallest per-frame area as a multiple of MIN and
the largest as a multiple of MAX (1.00 / 1.00 = exactly inside the range), plus the mean centroid
motion. Pure CPU, a few seconds.

    python bench/bench_mask_area.py
    python bench/bench_mask_area.py --seeds 100 --frames 22
"""

from __future__ import annotations

import argparse

import numpy as np

from regdpo.generate.masks import make_masks

CASES = [
    ("random", (0.01, 0.03), None), ("random", (0.15, 0.20), 0.05), ("random", (0.30, 0.40), 0.10),
    ("random", (0.40, 0.50), None), ("random", (0.90, 0.95), None),
    ("hard", (0.10, 0.15), 0.10), ("hard", (0.30, 0.40), None), ("hard", (0.50, 0.60), None),
]
SIZES = [(64, 112), (96, 128), (64, 64)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    print(f"{'mode':6} {'MIN-MAX':10} {'margin':6} | min area / MIN, max area / MAX, motion px/frame "
          f"(over {args.seeds} seeds, {args.frames} frames) at " + ", ".join(f"{h}x{w}" for h, w in SIZES))
    for mode, area, margin in CASES:
        cells = []
        for h, w in SIZES:
            lows, highs, motion = [], [], []
            for seed in range(args.seeds):
                holes, info = make_masks(mode, args.frames, h, w, np.random.default_rng(seed), area_range=area,
                                         margin_fraction=margin, measure_motion=True)
                per_frame = holes.mean(axis=(1, 2))
                lows.append(per_frame.min() / area[0])
                highs.append(per_frame.max() / area[1])
                motion.append(info["motion_px_per_frame"])
            cells.append(f"{min(lows):.2f} {max(highs):.2f} {np.mean(motion):.2f}")
        print(f"{mode:6} {area[0]:.2f}-{area[1]:.2f}  {margin if margin is not None else '-':6} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
