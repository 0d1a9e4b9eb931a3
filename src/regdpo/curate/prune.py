"""``regdpo prune ROOT``: delete the candidate negatives that ``regdpo select`` left out.

Only the videos the selection considered are touched (``selection.json``'s ``considered``): of
each, the negative streams that were not picked are deleted (their ``meta.json`` rewritten first,
atomically, so the entry stays complete; their lines of ``checksums.sha256`` dropped), and an entry left without any selected negative is
removed whole. The GT and masks of an entry with a selected negative are never touched. Only a folder that
regdpo provably wrote is touched (``outputs.owned_video``: no links, no foreign files); any other
is left alone and reported. Then ``manifest.json`` is rebuilt. ``--dry-run`` reports without deleting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import format as fmt
from ..errors import FormatError, UsageError
from ..json_io import read_object, string_item
from ..outputs import TRASH_PREFIX, clear_trash, owned_video, remove_leftover_temps
from ..safe_read import read_input_text
from .select_cli import SELECTION_FILE

PRUNE_REPORT_FILE = fmt.PRUNE_REPORT_FILE


@dataclass
class VideoPlan:
    """What pruning does to one video: ``action`` is ``keep``, ``prune`` (some streams), ``remove``
    (the whole entry), ``gone`` (removed by an earlier prune) or ``skip`` (left alone, ``reason`` says why).
    Rerunning prune after an interrupted one finishes it."""

    video: str
    action: str
    delete_streams: list[str] = field(default_factory=list)
    keep_streams: list[str] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (``lstat``: links count as themselves, never followed)."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size if os.path.lexists(path) else 0
    total = 0
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def read_selection(path: Path) -> tuple[list[str], dict[str, set[str]]]:
    """``(considered videos, video -> selected streams)`` from a ``selection.json``."""
    record = read_object(path)  # every field used checked, naming the file and the field
    considered = record.array("considered", item=string_item)
    picked: dict[str, set[str]] = {}
    for p in record.objects("picks"):
        picked.setdefault(p.string("video"), set()).add(p.string("stream"))
    stray = sorted(set(picked) - set(considered))
    if stray:
        raise FormatError(f"{path}: picks video {stray[0]!r} that is not among 'considered'")
    return considered, picked


def plan_video(root: Path, name: str, selected: set[str]) -> VideoPlan:
    """The plan for one considered video (reads only its meta.json and file sizes)."""
    try:
        fmt.check_video_name(name)
    except ValueError as exc:
        return VideoPlan(name, "skip", reason=str(exc))
    folder = root / name
    if not os.path.lexists(folder) and not selected:  # an earlier (maybe interrupted) prune removed it
        return VideoPlan(name, "gone")
    if folder.is_symlink() or not folder.is_dir():
        what = "a symbolic link" if folder.is_symlink() else "missing"
        return VideoPlan(name, "skip", reason=f"{folder} is {what}: left alone")
    meta = owned_video(folder)
    leftovers: list[str] = []
    if meta is None:  # an interrupted prune rewrote meta.json but had not yet deleted these unselected streams
        leftovers = [c.name for c in sorted(folder.iterdir()) if c.is_dir() and not c.is_symlink()
                     and _is_stream(c.name) and c.name not in selected]
        meta = owned_video(folder, extra_streams=leftovers) if leftovers else None
    if meta is None:
        return VideoPlan(name, "skip", reason=f"{folder} holds links, files or folders that regdpo did not write "
                         "(or an unreadable meta.json): left alone")
    streams = stream_names(meta)
    leftovers = [s for s in leftovers if s not in streams]
    unknown = sorted(selected - set(streams))
    before = tree_bytes(folder)
    if unknown:
        return VideoPlan(name, "skip", bytes_before=before, bytes_after=before,
                         reason=f"the selection picks stream {unknown[0]!r} that {folder / fmt.META_FILE} does "
                         "not list (selection older than the data?): select again")
    keep = [s for s in streams if s in selected]
    delete = [s for s in streams if s not in selected] + leftovers
    if not keep:
        return VideoPlan(name, "remove", delete_streams=delete, bytes_before=before, bytes_after=0)
    if not delete:
        return VideoPlan(name, "keep", keep_streams=keep, bytes_before=before, bytes_after=before)
    after = before - sum(tree_bytes(folder / s) for s in delete)
    return VideoPlan(name, "prune", delete_streams=delete, keep_streams=keep, bytes_before=before,
                     bytes_after=after)


def _is_stream(name: str) -> bool:
    try:
        fmt.parse_stream(name)
    except ValueError:
        return False
    return True


def stream_names(meta: fmt.VideoMeta) -> list[str]:
    """The negative stream folders of a video (format v1: one per type, named after it)."""
    return [s.stream for s in meta.streams]


def _discard(path: Path, trash_dir: Path) -> None:
    """Delete the folder ``path``: first moved into ``trash_dir`` (one rename: it disappears at once,
    and an interrupted run leaves it where the next run clears it), then removed."""
    trash_dir.mkdir(parents=True, exist_ok=True)
    trash = trash_dir / uuid.uuid4().hex[:8]
    os.rename(path, trash)
    shutil.rmtree(trash)


def apply_plan(root: Path, plan: VideoPlan) -> None:
    """Carry out one video's plan (meta.json first, so the entry is complete at every moment)."""
    folder = root / plan.video
    staging = root / fmt.STAGING_DIR
    if staging.is_symlink():
        raise FormatError(f"{staging} is a symbolic link; regdpo never writes through links (remove it)")
    trash_dir = staging / f"{TRASH_PREFIX}{uuid.uuid4().hex[:8]}"
    if plan.action == "remove":
        _discard(folder, trash_dir)
    elif plan.action == "prune":
        meta = fmt.read_video_meta(root, plan.video)
        meta.negatives = [n for n in meta.negatives if n["stream"] in plan.keep_streams]
        meta.neg_types = fmt.types_of(meta.streams)
        fmt.write_json_atomic(folder / fmt.META_FILE, meta.to_dict())
        for stream in plan.delete_streams:
            _discard(folder / stream, trash_dir)
        _drop_checksums(folder, plan.delete_streams)
    for folder in (trash_dir, staging):
        try:
            folder.rmdir()
        except OSError:  # not empty (a running generator's staging) or never made
            break


def _drop_checksums(folder: Path, streams: Sequence[str]) -> None:
    """Rewrite ``checksums.sha256`` without the lines of the deleted ``streams`` (an interrupted prune leaves
    them: ``regdpo verify`` checks only the streams ``meta.json`` lists). A damaged file is left as it is."""
    from ..safe_io import write_text_atomic

    path = folder / fmt.CHECKSUMS_FILE
    if path.is_symlink() or not path.is_file():
        return
    try:
        digests = fmt.parse_checksums(read_input_text(path, "checksums file", follow_links=False), path)
    except (FormatError, OSError, UnicodeDecodeError):
        return
    kept = {rel: digest for rel, digest in digests.items() if rel.split("/", 1)[0] not in streams}
    write_text_atomic(path, fmt.format_checksums(kept))


def summarise(plans: Sequence[VideoPlan]) -> dict[str, Any]:
    acted = [p for p in plans if p.action not in ("skip", "gone")]
    before = sum(p.bytes_before for p in acted)
    after = sum(p.bytes_after for p in acted)
    return {
        "videos": len(plans),
        "kept": sum(p.action == "keep" for p in plans),
        "pruned": sum(p.action == "prune" for p in plans),
        "removed": sum(p.action == "remove" for p in plans),
        "skipped": sum(p.action == "skip" for p in plans),
        "already_removed": sum(p.action == "gone" for p in plans),
        "streams_deleted": sum(len(p.delete_streams) for p in acted),
        "bytes_before": before,
        "bytes_after": after,
        "bytes_per_video_before": before / len(acted) if acted else 0,
        "bytes_per_video_after": after / len(acted) if acted else 0,
    }


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder on which `regdpo select` ran")
    parser.add_argument("--selection", default=None, metavar="FILE",
                        help=f"selection record of `regdpo select` (default ROOT/{SELECTION_FILE})")
    parser.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    parser.add_argument("--report", default=None, metavar="FILE",
                        help=f"where the JSON report goes (default ROOT/{PRUNE_REPORT_FILE}; not written with --dry-run "
                        "unless given)")


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def run(args: argparse.Namespace) -> int:
    from ..writer import output_lock, rebuild_manifest

    root = Path(args.root)
    if not root.is_dir():
        raise UsageError(f"dataset root {root} does not exist or is not a folder")
    sel_path = Path(args.selection) if args.selection else root / SELECTION_FILE
    if not sel_path.is_file():
        raise UsageError(f"{sel_path}: no selection; run `regdpo select {root}` first")
    considered, picked = read_selection(sel_path)
    with output_lock(root):
        clear_trash(root)  # what an interrupted prune (or --overwrite) was deleting
        if not args.dry_run:
            remove_leftover_temps(root)  # its .prune.json.*.tmp, .manifest.json.*.tmp (never a live writer's)
        plans = [plan_video(root, name, picked.get(name, set())) for name in considered]
        if not args.dry_run:
            for plan in plans:
                if plan.action in ("prune", "remove"):
                    apply_plan(root, plan)
            rebuild_manifest(root)
    summary = summarise(plans)
    verb = "would delete" if args.dry_run else "deleted"
    for p in plans:
        if p.action == "skip":
            print(f"  SKIP {p.video}: {p.reason}")
        elif p.action not in ("keep", "gone"):
            what = "the whole entry" if p.action == "remove" else ", ".join(p.delete_streams)
            print(f"  {p.video}: {verb} {what} ({_mib(p.bytes_before)} -> {_mib(p.bytes_after)})")
    print(f"{'dry run: ' if args.dry_run else ''}{summary['videos']} videos considered: {summary['kept']} kept as "
          f"they are, {summary['pruned']} pruned, {summary['removed']} removed, {summary['skipped']} skipped"
          f"{f', {n} removed before' if (n := summary['already_removed']) else ''}; "
          f"{summary['streams_deleted']} streams; {_mib(summary['bytes_before'])} -> {_mib(summary['bytes_after'])} "
          f"({_mib(summary['bytes_per_video_before'])} -> {_mib(summary['bytes_per_video_after'])} per video)")
    report = {"selection": str(sel_path), "dry_run": bool(args.dry_run), "summary": summary,
              "videos": [p.to_dict() for p in plans]}
    if args.report or not args.dry_run:
        path = Path(args.report) if args.report else root / PRUNE_REPORT_FILE
        fmt.write_json_atomic(path, report)
        print(f"wrote {path}" + ("" if args.dry_run else f" and {root / fmt.MANIFEST_FILE}"))
    if not args.dry_run and (root / fmt.AUDIT_JSON).is_file():
        print(f"note: {root / fmt.AUDIT_JSON} (and any filtered manifest) still list the deleted streams; the "
              f"selected manifest stays valid")
    return 1 if summary["skipped"] else 0
