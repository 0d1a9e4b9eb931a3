"""Run the audit over a dataset: one video at a time, optionally in worker processes.

``audit_video`` reads one video and returns a small JSON-serialisable record (no frames), so
memory stays bounded whatever the dataset size; ``run_audit`` streams the records back in
video order (deterministic output for any ``workers``) and ``summarise`` aggregates them.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from .. import format as fmt
from ..errors import FrameReadError, RegdpoError, UsageError
from ..frames import read_rgb_clip
from ..safe_read import read_input_bytes
from . import metrics as M
from . import quality as Q
from .config import NOT_MEASURED, VERDICTS, AuditConfig

AUDIT_VERSION = 2
"""2: items carry ``stream``, ``strength``, ``quality_score``, ``band`` and ``impure``."""


# --------------------------------------------------------------------------- failures


def _failure(video: str, stream: fmt.NegativeStream | None, check: str, detail: str) -> dict[str, Any]:
    where = f"video {video}" + (f", {stream.stream}" if stream else "")
    return {"video": video, "neg_type": stream.type if stream else None, "stream": stream.stream if stream else None,
            "check": check, "message": f"{where}: {detail}"}


def _read_mask_values(paths: Sequence[Path]) -> np.ndarray:
    """Stored masks as grey values ``uint8 [T, H, W]`` (not thresholded), errors naming the file."""
    out = []
    for path in paths:
        try:
            data = np.frombuffer(read_input_bytes(path, "mask", max_bytes=fmt.MAX_IMAGE_BYTES), dtype=np.uint8)
        except FrameReadError:
            raise
        except OSError as exc:
            raise FrameReadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
        if image is None:
            raise FrameReadError(f"{path}: corrupt or not an image")
        out.append(image)
    return np.stack(out)


def _round(value: Any) -> Any:
    """Floats rounded to 4 significant decimals for a compact, stable JSON."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return float(f"{value:.4g}") if abs(value) >= 1 else round(value, 4)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


# --------------------------------------------------------------------------- one video


def audit_video(
    root: str | os.PathLike, name: str, cfg: AuditConfig, entry: fmt.ManifestEntry | None = None
) -> dict[str, Any]:
    """Audit every negative of one video. Never raises for bad data: problems become failures.

    Returns ``{"name", "num_frames", "height", "width", "hole_fraction", "largest_hole_frame",
    "failures": [video-level], "items": [per negative]}``.
    """
    root = Path(root)
    record: dict[str, Any] = {"name": name, "failures": [], "items": []}
    try:
        meta = fmt.read_video_meta(root, name)
    except RegdpoError as exc:
        streams = entry.streams if entry else []
        record["failures"].append(_failure(name, None, "unreadable", str(exc)))
        record["items"] = [_unmeasured(name, s, record["failures"]) for s in streams]
        return record
    record.update(num_frames=meta.num_frames, height=meta.height, width=meta.width)
    video_failures: list[dict[str, Any]] = record["failures"]
    # the negative streams to audit: the manifest entry's (a filtered manifest lists a subset), else all
    streams = [s for s in meta.streams if entry is None or s.stream in entry.stream_names]
    if entry is not None:
        listed = (entry.num_frames, entry.height, entry.width)
        actual = (meta.num_frames, meta.height, meta.width)
        extra = sorted(set(entry.stream_names) - {s.stream for s in meta.streams})
        if listed != actual or extra:
            detail = f"negatives {extra} that meta.json lacks" if listed == actual else (
                f"{listed[0]} frames of {listed[2]}x{listed[1]}, meta.json says {actual[0]} of {actual[2]}x{actual[1]}")
            video_failures.append(
                _failure(name, None, "manifest_mismatch", f"manifest lists {detail}; rebuild it with "
                         "`regdpo manifest`")
            )
    try:
        fmt.validate_video_streams(root, meta, neg_types=[])
        names = fmt.frame_names(meta.num_frames)
        gt = read_rgb_clip([root / name / fmt.GT_DIR / n for n in names])
        mask_values = _read_mask_values([root / name / fmt.MASK_DIR / n for n in names])
    except RegdpoError as exc:
        video_failures.append(_failure(name, None, "unreadable", str(exc)))
        record["items"] = [_unmeasured(name, s, video_failures) for s in streams]
        return record
    odd = M.mask_values_binary(mask_values)
    if odd:
        video_failures.append(
            _failure(name, None, "mask_not_binary", f"masks hold grey values {odd[:5]} besides 0 and 255 "
                     f"(e.g. {root / name / fmt.MASK_DIR}); they must be binary")
        )
    hole = mask_values > 127
    area = hole.reshape(hole.shape[0], -1).sum(axis=1)
    record["hole_fraction"] = float(area.mean() / (meta.height * meta.width))
    record["largest_hole_frame"] = int(np.argmax(area))
    ref = M.reference(gt, hole, cfg)
    if ref is None:
        video_failures.append(
            _failure(name, None, "empty_hole", "the mask is empty in every frame: no negative can differ from GT")
        )
    for stream in streams:
        record["items"].append(_audit_negative(root, meta, stream, gt, hole, ref, cfg, video_failures))
    del gt, hole, mask_values, ref
    return _round(record)


def _key(video: str, stream: fmt.NegativeStream) -> dict[str, Any]:
    """The item key (SCHEMA 4): ``video`` and ``stream``, with the stream's type and strength.

    A version-1 dataset has one stream per type, named after it, at strength 1.0.
    """
    return {"video": video, "neg_type": stream.type, "strength": stream.strength, "stream": stream.stream}


def round_of(meta: fmt.VideoMeta) -> dict[str, int]:
    """``{"round": R}`` for a video generated with ``--round R`` (meta ``generator.round``), else ``{}``."""
    value = meta.generator.get("round") if isinstance(meta.generator, dict) else None
    return {"round": value} if isinstance(value, int) and not isinstance(value, bool) else {}


def _unmeasured(video: str, stream: fmt.NegativeStream, failures: list[dict[str, Any]]) -> dict[str, Any]:
    return {**_key(video, stream), "verdict": NOT_MEASURED, "score": None, "note": "", "metrics": {},
            "quality_score": None, "band": None, "impure": [], "failures": list(failures), "passes": False}


def _audit_negative(
    root: Path,
    meta: fmt.VideoMeta,
    stream: fmt.NegativeStream,
    gt: np.ndarray,
    hole: np.ndarray,
    ref: M.Reference | None,
    cfg: AuditConfig,
    video_failures: list[dict[str, Any]],
) -> dict[str, Any]:
    name, neg_type = meta.name, stream.type
    failures = list(video_failures)
    try:
        fmt.validate_video_streams(root, meta, neg_types=[stream.stream])
        neg = read_rgb_clip([root / name / stream.stream / n for n in fmt.frame_names(meta.num_frames)])
    except RegdpoError as exc:
        failures.append(_failure(name, stream, "unreadable", str(exc)))
        return _unmeasured(name, stream, failures)
    invariants: dict[str, Any] = {}
    outside = M.outside_hole_difference(gt, neg, hole)
    invariants["outside_max_abs_diff"] = outside["max_abs_diff"]
    invariants["outside_diff_pixels"] = outside["pixels"]
    if outside["max_abs_diff"] > 0:
        invariants["outside_worst_frame"] = outside["worst_frame"]
        failures.append(
            _failure(name, stream, "outside_hole_differs",
                     f"differs from GT outside the hole ({outside['pixels']} pixels, max abs diff "
                     f"{outside['max_abs_diff']}, most in frame {outside['worst_frame']}); negatives must be "
                     "composited onto the GT")
        )
    same = M.frames_identical_in_hole(gt, neg, hole)
    invariants["frames_identical_to_gt"] = len(same)
    if same:
        shown = ", ".join(map(str, same[:8])) + (", ..." if len(same) > 8 else "")
        failures.append(
            _failure(name, stream, "identical_to_gt",
                     f"{len(same)} of {meta.num_frames} frames are identical to GT inside the hole "
                     f"(frames {shown}): not a negative")
        )
    item: dict[str, Any] = {**_key(name, stream), **round_of(meta), "invariants": invariants}
    if ref is None:
        item.update(verdict=NOT_MEASURED, score=None, note="empty hole", metrics={}, quality_score=None,
                    impure=[])
    else:
        segments = meta.info(stream.stream).get("segments") if neg_type == "flicker" else None
        metrics = M.measure_negative(ref, neg, cfg, segments)
        verdict, note = M.verdict(neg_type, metrics, cfg)
        terms = Q.quality_terms(metrics, cfg)
        if terms is not None:
            metrics.update({k: v for k, v in terms.items() if k != "quality_score"})
        item.update(verdict=verdict, score=metrics.get(M.SCORE_OF.get(neg_type, ("",))[0]), note=note, metrics=metrics,
                    quality_score=None if terms is None else terms["quality_score"],
                    impure=Q.impurities(neg_type, metrics, cfg))
    item["band"] = None  # set by ``grade`` once the band is known
    item["failures"] = failures
    item["passes"] = False  # decided by ``decide`` once the minimum verdict is known
    return item


# --------------------------------------------------------------------------- many videos


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _worker(task: tuple[str, str, AuditConfig, fmt.ManifestEntry | None]) -> dict[str, Any]:
    root, name, cfg, entry = task
    try:
        return audit_video(root, name, cfg, entry)
    except Exception as exc:  # an unforeseen problem with one video must not end an audit of thousands
        failures = [_failure(name, None, "audit_error", f"could not be audited: {type(exc).__name__}: {exc}")]
        streams = entry.streams if entry is not None else []
        return {"name": name, "failures": failures, "items": [_unmeasured(name, s, failures) for s in streams]}


def iter_audit(
    root: str | os.PathLike,
    entries: Sequence[fmt.ManifestEntry],
    cfg: AuditConfig,
    workers: int = 1,
) -> Iterator[dict[str, Any]]:
    """Yield one record per entry, in the order of ``entries``, computed by ``workers`` processes."""
    tasks = [(str(root), e.name, cfg, e) for e in entries]
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _worker(task)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes=min(workers, len(tasks)), initializer=_worker_init) as pool:
        yield from pool.imap(_worker, tasks, chunksize=1)


def _readable_entries(root: Path) -> list[fmt.ManifestEntry]:
    """The complete videos of ``root`` whose ``meta.json`` reads; one that does not is named on stderr and left
    out (it never stops the audit of the others)."""
    import sys

    entries = []
    for name in fmt.complete_videos(root):
        try:
            entries.append(fmt.ManifestEntry.from_meta(fmt.read_video_meta(root, name)))
        except RegdpoError as exc:
            print(f"regdpo audit: warning: {exc}; video {name} not audited", file=sys.stderr)
    return entries


def select_entries(
    root: str | os.PathLike,
    manifest_path: str | os.PathLike | None = None,
    videos: Sequence[str] | None = None,
    max_videos: int | None = None,
) -> tuple[fmt.Manifest, list[fmt.ManifestEntry], str]:
    """The manifest (read, or built from the complete video folders) and the entries to audit.

    Returns ``(manifest, entries, source)`` with ``source`` saying where the list came from.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"dataset root {root} does not exist or is not a folder")
    if manifest_path is not None or (root / fmt.MANIFEST_FILE).is_file():
        manifest = fmt.load_manifest(root, manifest_path)
        source = str(manifest_path or root / fmt.MANIFEST_FILE)
    else:
        manifest = fmt.Manifest(videos=_readable_entries(root))
        source = f"video folders under {root} (no {fmt.MANIFEST_FILE})"
    entries = list(manifest.videos)
    if videos:
        by_name = {e.name: e for e in entries}
        unknown = [v for v in videos if v not in by_name]
        if unknown:
            raise UsageError(f"--video {unknown[0]}: not in {source}")
        entries = [by_name[v] for v in dict.fromkeys(videos)]
    if max_videos is not None:
        entries = entries[:max_videos]
    return manifest, entries, source


# --------------------------------------------------------------------------- decisions and summary


def decide(items: Iterable[dict[str, Any]], min_verdict: str) -> None:
    """Set ``passes``: no invariant failure and a verdict at least ``min_verdict``; for an on-policy type
    (``format.ON_POLICY_TYPES``: no designed defect to verdict) instead a quality score in the eligible band
    (``grade`` sets ``band`` first; such a type is never impure)."""
    floor = VERDICTS.index(min_verdict)
    for item in items:
        verdict = item["verdict"]
        if item["neg_type"] in fmt.ON_POLICY_TYPES:
            judged = item.get("band") == Q.BANDS[1] and not item.get("impure")
        else:
            judged = verdict in VERDICTS and VERDICTS.index(verdict) >= floor
        item["passes"] = not item["failures"] and judged


def grade(items: Iterable[dict[str, Any]], band: Sequence[float]) -> None:
    """Set each item's ``band`` from its ``quality_score`` (None when it has none)."""
    for item in items:
        item["band"] = Q.band_of(item.get("quality_score"), band)


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {
        "min": float(arr.min()),
        "p10": float(np.percentile(arr, 10)),
        "median": float(np.median(arr)),
        "p90": float(np.percentile(arr, 90)),
        "max": float(arr.max()),
    }


SUMMARY_METRICS = (
    "hole_psnr_db",
    "hole_ssim",
    "sharpness_loss_db",
    "lowpass_psnr_db",
    "lowpass_delta_e",
    "peak_excess",
    "instability_ratio",
    "residual_change_ratio",
)


def summarise(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per negative type: counts per verdict, failures, passing, and distributions of the metrics."""
    out: dict[str, Any] = {}
    for neg_type in fmt.NEG_TYPES:
        mine = [i for i in items if i["neg_type"] == neg_type]
        if not mine:
            continue
        counts = {v: sum(i["verdict"] == v for i in mine) for v in (*VERDICTS, NOT_MEASURED)}
        entry: dict[str, Any] = {
            "count": len(mine),
            "verdicts": counts,
            "with_invariant_failures": sum(bool(i["failures"]) for i in mine),
            "passing": sum(i["passes"] for i in mine),
            "score_metric": M.SCORE_OF.get(neg_type, (None,))[0],
            "quality_score": _stats([i["quality_score"] for i in mine if i.get("quality_score") is not None]),
            "bands": {b: sum(i.get("band") == b for i in mine) for b in Q.BANDS},
            "impure": {d: sum(d in i.get("impure", ()) for i in mine) for d in M.SCORE_OF if d != neg_type},
            "metrics": {},
        }
        for key in SUMMARY_METRICS:
            vals = [i["metrics"][key] for i in mine if i["metrics"].get(key) is not None]
            entry["metrics"][key] = _stats(vals)
        if neg_type == "flicker":
            with_b = [i for i in mine if i["metrics"].get("segment_boundaries")]
            total_b = sum(len(i["metrics"]["segment_boundaries"]) for i in with_b)
            hit = sum(i["metrics"].get("boundaries_with_jump", 0) for i in with_b)
            entry["segment_boundaries"] = {
                "videos_with_segments": len(with_b),
                "boundaries": total_b,
                "boundaries_with_jump": hit,
                "jumps_off_boundary": sum(len(i["metrics"].get("jumps_off_boundary", [])) for i in with_b),
            }
        out[neg_type] = _round(entry)
    return out


def filtered_manifest(manifest: fmt.Manifest, records: Sequence[dict[str, Any]]) -> fmt.Manifest:
    """The audited videos with only their passing negatives (videos with none left dropped)."""
    passing: dict[str, set[str]] = {}
    for rec in records:
        passing[rec["name"]] = {i.get("stream") or i["neg_type"] for i in rec["items"] if i["passes"]}
    videos = []
    for entry in manifest.videos:
        keep = [n for n in entry.negatives if n["stream"] in passing.get(entry.name, ())]
        if keep:
            videos.append(fmt.ManifestEntry(entry.name, entry.num_frames, entry.height, entry.width, [], entry.prompt,
                                            keep, entry.source_clip))
    return fmt.Manifest(videos=videos, failed=list(manifest.failed), skipped=list(manifest.skipped))


def run_audit(
    root: str | os.PathLike,
    entries: Sequence[fmt.ManifestEntry],
    cfg: AuditConfig,
    *,
    workers: int = 1,
    min_verdict: str = "weak",
    band: Sequence[float] = Q.DEFAULT_BAND,
    progress: Callable[[Iterator[dict[str, Any]], int], Iterable[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Audit ``entries`` and return the whole audit document (the content of ``audit.json``)."""
    stream: Iterable[dict[str, Any]] = iter_audit(root, entries, cfg, workers)
    if progress is not None:
        stream = progress(stream, len(entries))  # type: ignore[arg-type]
    records = list(stream)
    items = [i for r in records for i in r["items"]]
    grade(items, band)
    decide(items, min_verdict)  # after grade: on-policy types pass by their band
    failures: list[dict[str, Any]] = []  # video-level ones once, then each negative's own
    for rec in records:
        failures.extend(rec["failures"])
        for item in rec["items"]:
            failures.extend(f for f in item["failures"] if f not in rec["failures"])
    videos = [{k: v for k, v in r.items() if k != "items"} for r in records]
    return {
        "audit_version": AUDIT_VERSION,
        "format_version": fmt.FORMAT_VERSION,
        "root": str(root),
        "config": cfg.to_dict(),
        "min_verdict": min_verdict,
        "band": [float(b) for b in band],
        "num_videos": len(records),
        "num_items": len(items),
        "summary": summarise(items),
        "invariant_failures": failures,
        "videos": videos,
        "items": items,
    }
