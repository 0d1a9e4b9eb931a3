"""Difficulty of the generated negatives on the real fixtures: type x strength -> quality score.

Runs, in one temporary folder, the calibration loop of docs/negatives.md on ../shared/data
(DAVIS + YouTube-VOS) with the classical backend: ``regdpo generate`` (every strength the
generator supports among ``--strengths``, ``--masks_per_clip`` where supported), ``regdpo audit``,
``regdpo select``, ``regdpo prune``. Prints

- the table type x strength -> negatives, mean quality score, share per band, impure count;
- the selection (per type, per band, fallbacks);
- with ``--inpaint_candidates N``: the spread (max - min) of the quality scores of each entry's N inpaint
  candidates, and which one ``regdpo select`` kept;
- the disk footprint per video before and after pruning.

    python bench/bench_negatives.py                                  # 12 frames, 128 px
    python bench/bench_negatives.py --strengths 0.25 0.5 1.0 --masks_per_clip 2
    python bench/bench_negatives.py --neg_types hallucination blur flicker inpaint
    python bench/bench_negatives.py --neg_types hallucination blur flicker inpaint renoise --inpaint_candidates 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

from regdpo.audit.quality import BANDS
from regdpo.cli import build_parser, main as regdpo

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _quiet(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return regdpo(argv)


def _generator_flags() -> set[str]:
    parser = build_parser(["generate"])
    sub = next(a for a in parser._actions if a.dest == "command")
    return {o for a in sub.choices["generate"]._actions for o in a.option_strings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nframes", type=int, default=12)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.6, 1.0])
    ap.add_argument("--masks_per_clip", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--neg_types", nargs="+", default=None, help="passed to the generator (default: its own)")
    ap.add_argument("--inpaint_candidates", type=int, default=1, help="passed to the generator (with inpaint)")
    ap.add_argument("--data", type=Path, default=DATA, help=f"the DAVIS / YTBV fixtures (default {DATA})")
    args = ap.parse_args()

    flags = _generator_flags()
    strengths = sorted(set(args.strengths)) if "--strengths" in flags else [1.0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "dpo_data"
        gen = ["generate", "--davis_root", str(args.data / "DAVIS"), "--ytvos_root", str(args.data / "YTBV"),
               "--output_dir", str(root), "--nframes", str(args.nframes), "--resolution", str(args.resolution),
               "--seed", str(args.seed), "--backend", "classical"]
        if strengths != [1.0]:
            gen += ["--strengths", *map(str, strengths)]
        if args.neg_types:
            gen += ["--neg_types", *args.neg_types]
        if args.masks_per_clip > 1 and "--masks_per_clip" in flags:
            gen += ["--masks_per_clip", str(args.masks_per_clip)]
        if args.inpaint_candidates > 1:
            gen += ["--inpaint_candidates", str(args.inpaint_candidates)]
        assert _quiet(gen) == 0, "generate failed"
        rc = _quiet(["audit", str(root), "--no-progress", "--no-html"])
        assert rc in (0, 1), "audit failed"
        doc = json.loads((root / "audit.json").read_text())
        from regdpo.audit.calibration import band_table

        print(f"regdpo bench_negatives (classical backend, {doc['num_videos']} videos of {args.nframes} frames at "
              f"{args.resolution} px, band {doc['band'][0]:g}-{doc['band'][1]:g}; strengths run: "
              f"{' '.join(f'{s:g}' for s in strengths)})")
        print(f"{'type':<14}{'strength':>9}{'n':>4}{'mean q':>8}" + "".join(f"{b:>10}" for b in BANDS)
              + f"{'impure':>8}")
        for row in band_table(doc["items"]):
            impure = sum(bool(i["impure"]) for i in doc["items"]
                         if i["neg_type"] == row["neg_type"] and i["strength"] == row["strength"])
            shares = "".join(f"{100 * row['shares'][b]:>9.0f}%" if row["shares"][b] is not None else f"{'-':>10}"
                             for b in BANDS)
            mean = f"{row['mean_quality_score']:.3f}" if row["mean_quality_score"] is not None else "-"
            print(f"{row['neg_type']:<14}{row['strength']:>9.2f}{row['count']:>4}{mean:>8}{shares}{impure:>8}")
        assert _quiet(["select", str(root), "--secondary"]) in (0, 1)
        record = json.loads((root / "selection.json").read_text())
        summary = record["summary"]
        print("selection (--secondary): " + ", ".join(
            f"{t} {c['primary']}+{c['secondary']}" for t, c in summary["per_type"].items())
            + f"; per band {summary['per_band']}; fallbacks {len(summary['fallbacks'])}")
        groups = record.get("candidate_groups") or []
        if groups:
            spreads = sorted(g["spread"] for g in groups if g["spread"] is not None)
            kept_index = [g["streams"].index(g["kept"]) for g in groups if g["kept"] is not None]
            print(f"inpaint candidates: {len(groups)} entries x {len(groups[0]['streams'])}; quality-score spread "
                  f"(max - min per entry) min {spreads[0]:.3f}, median {spreads[len(spreads) // 2]:.3f}, mean "
                  f"{sum(spreads) / len(spreads):.3f}, max {spreads[-1]:.3f}; select kept candidate "
                  + ", ".join(f"{k}: {kept_index.count(k)}" for k in range(len(groups[0]["streams"]))))
            for g in groups[:6]:
                print(f"  {g['video']:<28}" + " ".join(f"{s:.3f}" if s is not None else "  -  " for s in g["scores"])
                      + f"  kept {g['kept']}")
        assert _quiet(["prune", str(root)]) in (0, 1)
        pr = json.loads((root / "prune.json").read_text())["summary"]
        print(f"prune: {pr['streams_deleted']} streams deleted, {pr['removed']} entries removed; bytes per video "
              f"{pr['bytes_per_video_before'] / 1024:.0f} KiB -> {pr['bytes_per_video_after'] / 1024:.0f} KiB "
              f"({pr['bytes_after'] / max(1, pr['bytes_before']):.2f} of before)")


if __name__ == "__main__":
    main()
