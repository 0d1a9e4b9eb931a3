"""``regdpo verify ROOT``: decode every file of every video and check every invariant of the format.

One video at a time, one frame index at a time across its streams (bounded memory). A video passes when
its name is valid, its ``meta.json`` reads, its streams are complete and aligned
(``regdpo.format.validate_video_streams``), every frame file decodes in full (a truncated body, a text
file or a 0-byte file named ``.png`` fails), every mask is 0 / 255, every negative equals the GT outside
the hole, and, when the video holds ``checksums.sha256`` (written by the writer at commit time), every
frame file has the recorded SHA-256. One line per problem names the file; exit 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import format as fmt
from .errors import FormatError, UsageError
from .png_check import UnusablePNG, decode_png
from .progress import plural
from .safe_read import read_input_bytes, read_input_text


@dataclass
class Problem:
    video: str
    file: str
    problem: str

    def line(self) -> str:
        return f"{self.video}: {self.file}: {self.problem}"


@dataclass
class VideoReport:
    name: str
    checksums: bool = False
    problems: list[Problem] = field(default_factory=list)

    def add(self, file: str | Path, problem: str) -> None:
        self.problems.append(Problem(self.name, str(file), problem))


def _read_checksums(folder: Path, report: VideoReport) -> dict[str, str] | None:
    path = folder / fmt.CHECKSUMS_FILE
    if not path.exists() and not path.is_symlink():
        return None
    report.checksums = True
    try:
        if path.is_symlink() or not path.is_file():
            raise FormatError(f"{path}: not a plain file")
        return fmt.parse_checksums(read_input_text(path, "checksums file", follow_links=False), path)
    except (FormatError, OSError, UnicodeDecodeError) as exc:
        report.add(path, f"unreadable checksums ({exc})")
        return {}


def verify_video(root: Path, name: str) -> VideoReport:
    """Every check of one video folder; the problems found, each naming its file."""
    report = VideoReport(name)
    folder = root / name
    if not (folder / fmt.META_FILE).is_file():
        report.add(folder, f"no {fmt.META_FILE}: not a complete video (an interrupted copy, or not regdpo's)")
        return report
    try:
        fmt.check_video_name(name)
        meta = fmt.read_video_meta(root, name)
    except (FormatError, OSError) as exc:  # OSError: an InputUnreadable (not a regular file, no permission)
        report.add(folder / fmt.META_FILE, str(exc))
        return report
    try:
        fmt.validate_video_streams(root, meta, headers=False)
    except FormatError as exc:
        report.add(folder, str(exc))
        return report
    digests = _read_checksums(folder, report)
    streams = fmt.video_stream_dirs(meta)
    size = (meta.width, meta.height)
    if digests:  # lines of streams the record no longer lists (pruned by `regdpo prune`) are not checked
        unlisted = [f"{s}/{f}" for s in streams for f in fmt.frame_names(meta.num_frames) if f"{s}/{f}" not in digests]
        if unlisted:
            report.add(folder / fmt.CHECKSUMS_FILE, f"lists no checksum for {plural(len(unlisted), 'frame file')} "
                       f"(first {unlisted[0]})")
    for frame in fmt.frame_names(meta.num_frames):
        decoded: dict[str, np.ndarray] = {}
        for stream in streams:
            path = folder / stream / frame
            try:
                if path.is_symlink() or not path.is_file():
                    raise UnusablePNG("not a plain file (a link or a folder)")
                if path.stat().st_size > fmt.MAX_IMAGE_BYTES:
                    raise UnusablePNG(f"larger than {fmt.MAX_IMAGE_BYTES} bytes")
                data = read_input_bytes(path, "frame file", follow_links=False, max_bytes=fmt.MAX_IMAGE_BYTES)
                want = digests.get(f"{stream}/{frame}") if digests else None
                if want is not None and hashlib.sha256(data).hexdigest() != want:
                    report.add(path, "SHA-256 differs from checksums.sha256 (changed or damaged since commit)")
                mode, pixels = decode_png(data, size)
            except OSError as exc:
                report.add(path, f"cannot read ({exc.strerror or exc})")
                continue
            except UnusablePNG as exc:
                report.add(path, str(exc))
                continue
            if stream == fmt.MASK_DIR:
                if mode != "L":
                    report.add(path, f"mask has mode {mode}, expected L")
                    continue
                if not np.isin(pixels, (0, fmt.MASK_HOLE_VALUE)).all():
                    report.add(path, f"mask is not binary (values other than 0 and {fmt.MASK_HOLE_VALUE})")
                    continue
            elif mode != "RGB":
                report.add(path, f"has mode {mode}, expected RGB")
                continue
            decoded[stream] = pixels
        gt, mask = decoded.get(fmt.GT_DIR), decoded.get(fmt.MASK_DIR)
        if gt is None or mask is None:
            continue
        outside = mask == 0
        for stream in streams[2:]:
            if stream in decoded:
                differs = int(np.any(decoded[stream][outside] != gt[outside], axis=-1).sum())
                if differs:
                    report.add(folder / stream / frame, f"differs from the GT at {differs} pixel(s) outside the hole")
    return report


def video_folders(root: Path) -> list[str]:
    """Every folder of ``root`` that is not a derived output (``_*``, ``.*``): each should be a video."""
    return sorted(p.name for p in root.iterdir() if not p.name.startswith((".", "_")) and p.is_dir())


def _check_index_files(root: Path, names: list[str]) -> list[Problem]:
    """Problems of the dataset's JSON files besides the videos' own, read through the same readers (and the
    same ``regdpo.json_io`` loader) as the commands that use them: the manifests (``manifest.json`` and the
    filtered / selected ones; an entry must also agree with its video's ``meta.json``), the ``_failed/``
    records, ``audit.json``, ``selection.json`` and ``score.json``."""
    from .curate.prune import read_selection
    from .curate.select_cli import SCORE_FILE, read_audit, read_margins

    problems: list[Problem] = []
    for manifest_name in (fmt.MANIFEST_FILE, fmt.FILTERED_MANIFEST_FILE, fmt.SELECTED_MANIFEST_FILE):
        path = root / manifest_name
        if not os.path.lexists(path):
            continue
        try:
            listed = fmt.load_manifest(root, path).videos
        except (FormatError, OSError) as exc:  # OSError: an InputUnreadable (a FIFO, no permission)
            problems.append(Problem("-", str(path), str(exc)))
            continue
        for entry in listed:
            try:  # what DPODataset checks per entry (skip_invalid drops one that fails)
                fmt.check_dimensions(entry.num_frames, entry.height, entry.width, f"{path}: video {entry.name}")
            except FormatError as exc:
                problems.append(Problem(entry.name, str(path), str(exc)))
                continue
            if entry.name not in names:
                problems.append(Problem(entry.name, str(path), "lists a video whose folder is missing"))
                continue
            try:
                meta = fmt.read_video_meta(root, entry.name)
            except (FormatError, OSError):
                continue  # reported with the video
            if (entry.num_frames, entry.height, entry.width) != (meta.num_frames, meta.height, meta.width) or \
                    set(entry.stream_names) - {s.stream for s in meta.streams}:
                problems.append(Problem(entry.name, str(path), f"the entry ({entry.num_frames} frames of "
                                        f"{entry.width}x{entry.height}, streams {entry.stream_names}) disagrees with "
                                        f"{root / entry.name / fmt.META_FILE}; rebuild it with `regdpo manifest`"))
    failed = root / fmt.FAILED_DIR
    for path in sorted(failed.glob("*.json")) if failed.is_dir() and not failed.is_symlink() else []:
        try:
            fmt.check_failure_record(fmt.read_json(path, fmt.MAX_RECORD_BYTES), path)
        except (FormatError, OSError) as exc:
            problems.append(Problem(path.stem, str(path), str(exc)))
    for file_name, reader in ((fmt.AUDIT_JSON, read_audit), (fmt.SELECTION_FILE, read_selection),
                              (SCORE_FILE, read_margins)):
        path = root / file_name
        if os.path.lexists(path):
            try:
                reader(path)
            except (FormatError, OSError) as exc:
                problems.append(Problem("-", str(path), str(exc)))
    return problems


def verify_dataset(root: Path, log=print) -> dict:
    """Verify every video of ``root`` and the dataset's other JSON files; returns the report (``--json``)."""
    reports = []
    names = video_folders(root)
    manifest_problems = _check_index_files(root, names)
    for line in manifest_problems:
        log(line.line())
    for name in names:
        report = verify_video(root, name)
        reports.append(report)
        for problem in report.problems:
            log(problem.line())
    bad = [r for r in reports if r.problems]
    without = [r.name for r in reports if not r.checksums]
    return {
        "root": str(root),
        "videos": len(reports),
        "videos_ok": len(reports) - len(bad),
        "videos_with_problems": [r.name for r in bad],
        "videos_without_checksums": without,
        "problems": [asdict(p) for p in manifest_problems + [p for r in reports for p in r.problems]],
    }


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder (e.g. dpo_data), or a packed dataset's folder or URL "
                        "prefix (s3://, gs://, https://: read through fsspec)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")


def run(args: argparse.Namespace) -> int:
    from . import packed_verify  # a packed dataset (regdpo pack): its own checks
    from .shard_io import is_url

    root = Path(args.root)
    remote = is_url(args.root)  # a packed dataset in object storage (fsspec: s3://, gs://, https://, ...)
    if not remote and not root.is_dir():
        raise UsageError(f"dataset root {root} does not exist or is not a folder")
    if remote or packed_verify.looks_packed(root):
        result = packed_verify.verify_packed(str(args.root) if remote else str(root),
                                             log=lambda line: print(line, file=sys.stdout))
        print(packed_verify.summary(result))
        _write_report(args.json, result)
        return 1 if result["problems"] else 0
    result = verify_dataset(root, log=lambda line: print(line, file=sys.stdout))
    without = result["videos_without_checksums"]
    print(f"{root}: {plural(result['videos'], 'video')} verified, {result['videos_ok']} ok, "
          f"{len(result['videos_with_problems'])} with problems, {plural(len(result['problems']), 'problem')}")
    if without:
        print(f"{root}: {plural(len(without), 'video')} without {fmt.CHECKSUMS_FILE} (made before regdpo recorded "
              "checksums): decoded and checked, file contents not compared with commit time")
    _write_report(args.json, result)
    return 1 if result["problems"] else 0


def _write_report(path: str | None, result: dict) -> None:
    if path:
        try:
            fmt.write_json_atomic(path, result)
        except OSError as exc:
            raise UsageError(f"--json {path}: cannot write ({exc.strerror or exc})") from None
