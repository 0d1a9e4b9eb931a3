"""``regdpo select ROOT``: keep, per source clip, the negative(s) of medium difficulty.

Reads ``audit.json`` (and ``score.json`` when present: ``ref_margin`` per (video, stream)),
chooses with ``curate.select`` and writes ``manifest.selected.json`` (the manifest schema: load it
with ``DPODataset(args.manifest=...)``) and ``selection.json`` (settings, picks, summary).
Exit status: 0, 1 when nothing could be selected, 2 for bad input.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import format as fmt
from ..audit.quality import BANDS
from ..cli_types import integer, real
from ..errors import FormatError, UsageError
from ..json_io import Fields, read_object, string_item
from .candidates import PICKS, pick_candidates, spread_summary
from .select import DEFAULT_TARGET, Selection, SelectSettings, select, summarise
from .weights import pair_weights

SELECTION_FILE = fmt.SELECTION_FILE
SCORE_FILE = "score.json"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder (e.g. dpo_data), audited with `regdpo audit`")
    parser.add_argument("--audit", default=None, metavar="FILE", help="audit.json to read (default ROOT/audit.json)")
    parser.add_argument("--score", default=None, metavar="FILE",
                        help=f"score.json of `regdpo score` (default ROOT/{SCORE_FILE} when it exists): its "
                        "ref_margin filters (--max_ref_margin) and breaks ties (smaller = harder first)")
    parser.add_argument("--manifest", default=None, metavar="FILE",
                        help="manifest of the candidates (default ROOT/manifest.json)")
    parser.add_argument("--target", type=real(), default=DEFAULT_TARGET,
                        help=f"quality score aimed at inside the band (default {DEFAULT_TARGET})")
    parser.add_argument("--secondary", action="store_true",
                        help="also pick a second eligible negative per source clip (another type where possible)")
    parser.add_argument("--max_ref_margin", type=real(), default=None, metavar="M",
                        help="exclude candidates whose reference margin is above M (already easy for the "
                        "reference model); candidates without a margin are kept")
    parser.add_argument("--pure_only", action="store_true", help="never pick a negative flagged impure by the audit")
    parser.add_argument("--no_fallback", action="store_true",
                        help="skip a clip without an eligible candidate (default: take the closest, noting why)")
    parser.add_argument("--pick", choices=PICKS, default="target",
                        help="which of several candidates of one negative (--inpaint_candidates) to keep: target = "
                        "the one nearest --target inside the band, worst = the lowest quality score inside the band "
                        "(outside it when none is in it) (default: %(default)s)")
    parser.add_argument("--round", type=integer(0, None), default=None, metavar="R",
                        help="consider only negatives generated with --round R (the audit records each video's round)")
    parser.add_argument("--weights", action="store_true",
                        help="write a pair_weight per selected negative into the selected manifest, from its "
                        "quality score and reference margin (docs/negatives.md; train_region_reg_dpo.py "
                        "--use_pair_weights uses it)")
    parser.add_argument("--weight_alpha", type=real(), default=1.0, metavar="A",
                        help="exponent of the quality term of --weights (0: margins only) (default: %(default)s)")
    parser.add_argument("--weight_margin_scale", type=real(), default=1.0, metavar="S",
                        help="reference-margin scale of --weights: a pair with margin S weighs 2 sigmoid(-1) = 0.54 "
                        "of one with margin 0 (default: %(default)s)")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help=f"selected manifest (default ROOT/{fmt.SELECTED_MANIFEST_FILE})")
    parser.add_argument("--summary", default=None, metavar="FILE",
                        help=f"selection record and summary (default ROOT/{SELECTION_FILE})")


def read_margins(path: Path) -> dict[tuple[str, str], float | None]:
    """``(video, stream) -> ref_margin`` from a score.json (SCHEMA 5)."""
    out: dict[tuple[str, str], float | None] = {}
    for item in read_object(path).objects("items"):  # each field used checked, naming file and field
        stream = item.string("stream", None, nullable=True) or item.string("neg_type")
        out[(item.string("video"), stream)] = item.number("ref_margin", default=None, nullable=True)
    return out


def read_audit(path: Path) -> dict[str, Any]:
    """An ``audit.json`` with the fields ``regdpo select`` uses checked (``video``, ``stream`` / ``neg_type``,
    ``strength``, ``quality_score``, ``band``, ``impure``, ``failures`` of each item; ``band``)."""
    audit = read_object(path)
    if audit.has("band"):
        audit.array("band", item=lambda v, where: Fields({"band": v}, where).number("band", 0.0, 1.0))
        if len(audit.data["band"]) != 2:
            raise audit.error("band", "must be two numbers LO HI")
    for item in audit.objects("items"):
        item.string("video")
        item.string("neg_type", choices=fmt.NEG_TYPES)
        item.string("stream", None, nullable=True)
        item.number("strength", 0.0, 1.0, 1.0)
        item.number("quality_score", 0.0, 1.0, None, nullable=True)
        item.string("band", None, choices=BANDS, nullable=True)
        item.array("impure", None, item=string_item, nullable=True)
        item.array("failures", None, nullable=True)
    data = dict(audit.data)
    if data["items"] and "quality_score" not in data["items"][0]:
        raise FormatError(f"{path}: items have no quality_score (audit_version "
                          f"{data.get('audit_version')}); audit again with this regdpo")
    return data


def candidates_from(
    audit: Mapping[str, Any], manifest: fmt.Manifest, margins: Mapping[tuple[str, str], float | None]
) -> tuple[list[dict[str, Any]], int]:
    """Candidates (see ``curate.select``) of the manifest's streams that the audit measured, and
    the number of audit items left out because the manifest does not list them."""
    listed = {e.name: e for e in manifest.videos}
    out, ignored = [], 0
    for item in audit.get("items", []):
        entry = listed.get(item.get("video"))
        stream = item.get("stream") or item.get("neg_type")
        if entry is None or stream not in entry_streams(entry):
            ignored += 1
            continue
        out.append({
            "video": entry.name,
            "source_clip": source_clip(entry),
            "stream": stream,
            "neg_type": item["neg_type"],
            "strength": float(item.get("strength", 1.0)),
            "quality_score": item.get("quality_score"),
            "band": item.get("band"),
            "impure": list(item.get("impure") or []),
            "valid": not item.get("failures") and item.get("quality_score") is not None,
            "ref_margin": margins.get((entry.name, stream)),
            **({"round": item["round"]} if item.get("round") is not None else {}),
        })
    return out, ignored


def entry_streams(entry: fmt.ManifestEntry) -> list[str]:
    """The negative streams a manifest entry lists (format v1: one per type, named after it)."""
    return list(entry.stream_names)


def source_clip(entry: fmt.ManifestEntry) -> str:
    """The clip an entry's mask was drawn on (SCHEMA 3); defaults to the entry's name."""
    return getattr(entry, "source_clip", None) or entry.name


def selected_manifest(manifest: fmt.Manifest, selection: Selection) -> fmt.Manifest:
    """The manifest's entries with only their selected streams (entries without any dropped); a pick's
    ``pair_weight`` (``--weights``) goes into its negative."""
    chosen: dict[str, dict[str, Mapping[str, Any]]] = {}
    for p in selection.picks:
        chosen.setdefault(p["video"], {})[p["stream"]] = p
    videos = []
    for entry in manifest.videos:
        picks = chosen.get(entry.name, {})
        keep = [{**n, **({"pair_weight": picks[n["stream"]]["pair_weight"]} if "pair_weight" in picks[n["stream"]]
                         else {})} for n in entry.negatives if n["stream"] in picks]
        if keep:
            videos.append(fmt.ManifestEntry(entry.name, entry.num_frames, entry.height, entry.width, [],
                                            entry.prompt, keep, entry.source_clip))
    return fmt.Manifest(videos=videos)


def configure_settings(args: argparse.Namespace) -> SelectSettings:
    if not 0.0 <= args.target <= 1.0 or math.isnan(args.target):
        raise UsageError(f"--target {args.target:g}: must be in [0, 1]")
    if args.max_ref_margin is not None and math.isnan(args.max_ref_margin):
        raise UsageError("--max_ref_margin: must be a number")
    if not (args.weight_alpha >= 0 and math.isfinite(args.weight_alpha)):
        raise UsageError(f"--weight_alpha {args.weight_alpha:g}: must be a finite number >= 0")
    if not (args.weight_margin_scale > 0 and math.isfinite(args.weight_margin_scale)):
        raise UsageError(f"--weight_margin_scale {args.weight_margin_scale:g}: must be a finite number > 0")
    return SelectSettings(target=args.target, secondary=args.secondary, max_ref_margin=args.max_ref_margin,
                          fallback=not args.no_fallback, pure_only=args.pure_only)


def _print_summary(summary: dict[str, Any], band: Sequence[float], out: Path, record: Path) -> None:
    print(f"selected {summary['selected']} of {summary['candidates']} candidate negatives from "
          f"{summary['source_clips']} source clips (band {band[0]:g}-{band[1]:g})")
    print(f"  {'type':<14}{'candidates':>11}{'eligible':>10}{'primary':>9}{'secondary':>11}")
    for t, c in summary["per_type"].items():
        print(f"  {t:<14}{c['candidates']:>11}{c['eligible']:>10}{c['primary']:>9}{c['secondary']:>11}")
    print("  per band: " + ", ".join(f"{b} {n}" for b, n in summary["per_band"].items()))
    print(f"  fallbacks: {len(summary['fallbacks'])}, skipped clips: {len(summary['skipped'])}")
    drawn = summary.get("candidates_drawn")
    if drawn:
        spread = "n/a" if drawn["mean_spread"] is None else f"{drawn['mean_spread']:.3f} (max {drawn['max_spread']:.3f})"
        print(f"  candidates: {drawn['groups']} groups of {drawn['candidates']} drawn negatives, one kept per group "
              f"(--pick {drawn['pick']}); mean quality-score spread {spread}")
    for f in summary["fallbacks"][:10]:
        print(f"  FALLBACK {f['source_clip']}: {f['video']}/{f['stream']} ({f['quality_score']:.3f}): {f['reason']}")
    for s in summary["skipped"][:10]:
        print(f"  SKIPPED {s['source_clip']}: {s['reason']}")
    print(f"wrote {out}, {record}")


def run(args: argparse.Namespace) -> int:
    settings = configure_settings(args)
    root = Path(args.root)
    if not root.is_dir():
        raise UsageError(f"dataset root {root} does not exist or is not a folder")
    audit_path = Path(args.audit) if args.audit else root / fmt.AUDIT_JSON
    if not audit_path.is_file():
        raise UsageError(f"{audit_path}: no audit; run `regdpo audit {root}` first")
    audit = read_audit(audit_path)
    score_path = Path(args.score) if args.score else root / SCORE_FILE
    if args.score and not score_path.is_file():
        raise UsageError(f"--score {score_path}: file not found")
    margins = read_margins(score_path) if score_path.is_file() else {}
    manifest = fmt.load_manifest(root, args.manifest)
    candidates, ignored = candidates_from(audit, manifest, margins)
    other_rounds = 0
    if args.round is not None:
        mine = [c for c in candidates if c.get("round") == args.round]
        other_rounds = len(candidates) - len(mine)
        if candidates and not mine:
            rounds = sorted({c.get("round") for c in candidates}, key=lambda r: (r is None, r or 0))
            raise UsageError(f"--round {args.round}: no audited negative of that round in {audit_path} (rounds "
                             f"there: {', '.join('none' if r is None else str(r) for r in rounds)}; audit again "
                             "with this regdpo if the data records rounds)")
        candidates = mine
    candidates, groups = pick_candidates(candidates, args.pick, settings.target)
    selection = select(candidates, settings)
    if args.weights:
        for p, w in zip(selection.picks, pair_weights(selection.picks, settings.target, args.weight_alpha,
                                                      args.weight_margin_scale)):
            p["pair_weight"] = w
    summary = summarise(selection, candidates)
    summary["audit_items_not_in_manifest"] = ignored
    if args.round is not None:
        summary["round"] = args.round
        summary["other_rounds_left_out"] = other_rounds
    if groups:
        summary["candidates_drawn"] = {**spread_summary(groups), "pick": args.pick}
    out = Path(args.output) if args.output else root / fmt.SELECTED_MANIFEST_FILE
    record_path = Path(args.summary) if args.summary else root / SELECTION_FILE
    chosen = selected_manifest(manifest, selection)
    fmt.write_json_atomic(out, chosen.to_dict())
    record = {
        "selection_version": 1,
        "audit": str(audit_path),
        "score": str(score_path) if margins else None,
        "manifest": str(args.manifest or root / fmt.MANIFEST_FILE),
        "band": audit.get("band"),
        "settings": settings.to_dict(),
        "considered": sorted({c["video"] for c in candidates}),
        "picks": [{**{k: p[k] for k in ("source_clip", "video", "stream", "neg_type", "strength", "quality_score",
                                        "band", "impure", "ref_margin", "role", "reason")},
                   **{k: p[k] for k in ("round", "pair_weight") if k in p}} for p in selection.picks],
        "summary": summary,
    }
    if groups:
        record["candidate_groups"] = groups
    if args.round is not None or args.weights:
        record["settings"] = {**record["settings"], **({"round": args.round} if args.round is not None else {}),
                              **({"weights": {"alpha": args.weight_alpha,
                                              "margin_scale": args.weight_margin_scale}} if args.weights else {})}
    fmt.write_json_atomic(record_path, record)
    _print_summary(summary, audit.get("band") or (0, 1), out, record_path)
    return 0 if selection.picks else 1
