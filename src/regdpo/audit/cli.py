"""``regdpo audit ROOT``: measure that every negative shows its defect and obeys the format.

Writes ``audit.json`` and ``audit.html`` (into ROOT unless ``--output-dir``), optionally a
filtered manifest. Exit status: 0 when no invariant failure was found, 1 when some were
(broken data: a CI-style check), and with ``--strict`` also 1 when a negative's verdict is
below ``--min-verdict``; 2 for bad input (missing folder, bad flag).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterable, Iterator

from .. import format as fmt
from ..cli_types import MAX_WORKERS, integer, real
from ..errors import UsageError
from ..progress import plural
from .config import add_config_flags, config_from_args
from .quality import BANDS, DEFAULT_BAND, check_band

MAX_THUMBNAILS = 1000

DEFAULT_FILTERED = fmt.FILTERED_MANIFEST_FILE
MAX_PRINTED_FAILURES = 20


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder (e.g. dpo_data)")
    parser.add_argument("--output-dir", default=None, help="where audit.json / audit.html go (default: ROOT)")
    parser.add_argument("--workers", type=integer(None, MAX_WORKERS),
                        default=1, help="worker processes, one video at a time each (default 1)")
    parser.add_argument("--video", action="append", default=None, metavar="NAME",
                        help="audit only this video (repeatable)")
    parser.add_argument("--max-videos", type=integer(), default=None, metavar="N",
                        help="audit only the first N videos of the manifest (e.g. 200 before a full run)")
    parser.add_argument("--manifest", default=None, metavar="PATH",
                        help="manifest listing the videos to audit (default ROOT/manifest.json; without one, "
                        "every complete video folder)")
    parser.add_argument("--min-verdict", choices=("weak", "clear"), default="weak",
                        help="weakest verdict that still passes (default weak)")
    parser.add_argument("--write-filtered-manifest", nargs="?", const=True, default=None, metavar="PATH",
                        help=f"write a manifest without the failing negatives (default path ROOT/{DEFAULT_FILTERED}); "
                        "load it with DPODataset(args.manifest=PATH)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 also when a negative is below --min-verdict (not only on invariant failures)")
    parser.add_argument("--no-html", action="store_true", help="write audit.json only")
    parser.add_argument("--thumbnails", type=integer(None, MAX_THUMBNAILS), default=6, metavar="K",
                        help="weakest and strongest K examples per type shown in the report (default 6)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--band", nargs=2, type=real(0.0, 1.0), default=list(DEFAULT_BAND), metavar=("LO", "HI"),
                        help="quality-score band of the eligible negatives: below LO too_bad, above HI too_good "
                        f"(default {DEFAULT_BAND[0]} {DEFAULT_BAND[1]}; see docs/negatives.md)")
    add_config_flags(parser)


def _progress(enabled: bool):
    def wrap(stream: Iterator[dict[str, Any]], total: int) -> Iterable[dict[str, Any]]:
        if not enabled:
            return stream
        from ..progress import Progress

        return Progress(total, "audit", "video").wrap(stream)

    return wrap


def run(args: argparse.Namespace) -> int:
    from ..safe_io import check_writable
    from . import report, runner

    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be >= 1")
    if args.max_videos is not None and args.max_videos < 1:
        raise UsageError(f"--max-videos {args.max_videos}: must be >= 1")
    if args.thumbnails < 0:
        raise UsageError(f"--thumbnails {args.thumbnails}: must be >= 0")
    try:
        band = check_band(args.band)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    cfg = config_from_args(args)
    root = Path(args.root)
    if root.is_dir():  # (a missing root is the usage error select_entries gives)
        check_writable(Path(args.output_dir) if args.output_dir else root, "--output-dir")  # before any work
        if isinstance(args.write_filtered_manifest, str):
            check_writable(Path(args.write_filtered_manifest).parent, "--write-filtered-manifest")
    manifest, entries, source = runner.select_entries(root, args.manifest, args.video, args.max_videos)
    if not entries:
        raise UsageError(f"no videos to audit in {source}")
    doc = runner.run_audit(root, entries, cfg, workers=args.workers, min_verdict=args.min_verdict,
                           band=band, progress=_progress(not args.no_progress))
    doc["videos_source"] = source
    out_dir = Path(args.output_dir) if args.output_dir else root
    written = report.write_report(doc, root, out_dir, html_report=not args.no_html, thumbnails=args.thumbnails)

    print(f"audited {plural(doc['num_videos'], 'video')}, {plural(doc['num_items'], 'negative')} ({source})")
    for neg_type, s in doc["summary"].items():
        v = s["verdicts"]
        print(f"  {neg_type:<13} clear {v['clear']:>5}  weak {v['weak']:>5}  none {v['none']:>5}  "
              f"not measured {v['not_measured']:>4}  invariant failures {s['with_invariant_failures']:>4}  "
              f"passing {s['passing']:>5}/{s['count']}")
    print(f"  quality score bands (--band {band[0]:g} {band[1]:g}):")
    for neg_type, s in doc["summary"].items():
        q = s["quality_score"]
        shown = f"median {q['median']:.3f}" if q else "not measured"
        print(f"  {neg_type:<13} " + "  ".join(f"{b} {s['bands'][b]:>5}" for b in BANDS) + f"  ({shown})")
    failures = doc["invariant_failures"]
    for f in failures[:MAX_PRINTED_FAILURES]:
        print(f"  FAIL {f['check']}: {f['message']}")
    if len(failures) > MAX_PRINTED_FAILURES:
        print(f"  ... {len(failures) - MAX_PRINTED_FAILURES} more invariant failures in {written[0]}")
    for item in doc["items"]:
        if not item["failures"] and not item["passes"] and item["neg_type"] in fmt.ON_POLICY_TYPES:
            print(f"  OUTSIDE --band: video {item['video']}, {item['stream']} (on-policy, judged by its band): "
                  f"band {item.get('band') or 'not measured'} (quality score {item.get('quality_score')})")
        elif not item["failures"] and not item["passes"]:
            print(f"  BELOW {args.min_verdict}: video {item['video']}, {item['stream']}: verdict {item['verdict']}"
                  f" ({item.get('score')}) {item.get('note') or ''}".rstrip())
    for item in doc["items"]:
        if item.get("impure"):
            print(f"  IMPURE: video {item['video']}, {item['stream']}: also clearly shows "
                  f"{', '.join(item['impure'])} (see docs/negatives.md)")
    print("wrote " + ", ".join(str(p) for p in written))

    if args.write_filtered_manifest is not None:
        path = root / DEFAULT_FILTERED if args.write_filtered_manifest is True else Path(args.write_filtered_manifest)
        audited = fmt.Manifest(videos=entries, failed=manifest.failed, skipped=manifest.skipped)
        filtered = runner.filtered_manifest(audited, _records(doc))
        fmt.write_json_atomic(path, filtered.to_dict())
        kept = sum(len(v.negatives) for v in filtered.videos)
        print(f"wrote {path}: {plural(len(filtered.videos), 'video')}, {kept} of {doc['num_items']} pairs kept")

    below = any(not i["failures"] and not i["passes"] for i in doc["items"])
    if failures or (args.strict and below):
        return 1
    return 0


def _records(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Group the audit's items back per video, as ``filtered_manifest`` wants them."""
    by_video: dict[str, list[dict[str, Any]]] = {}
    for item in doc["items"]:
        by_video.setdefault(item["video"], []).append(item)
    return [{"name": name, "items": items} for name, items in by_video.items()]

