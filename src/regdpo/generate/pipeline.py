"""The resumable generator loop: one atomic video entry per source video.

Per video, in three stages (``VideoStages``, run by an ``engine.Engine``; the default local engine
overlaps them): reader -- list/probe the source, pick the clip (stride from the frame rates, start
from the seed), decode, resize to the working size, draw the hole masks; worker -- call the backend
once with all negative types; writer -- write GT, masks and negatives (composited onto the GT with
the stored mask) through ``VideoEntryWriter`` and commit ``meta.json`` last. A failing video is
recorded under ``_failed/`` and the run goes on; ``manifest.json`` is rebuilt at the end. A video whose
backend call runs out of device memory is retried once, in the same attempt, at the backend's reduced
settings (``VideoStages.compute``; recorded in its meta as ``reduced``).

Every random choice of a video is seeded by ``derive_seed(run seed, video name, purpose)``, so the
output does not depend on the order, on ``--max_videos`` or on resuming.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import __version__
from .. import format as fmt
from .. import outputs
from ..backends.base import Clip, NegativeBackend
from ..backends.memory import device_oom, free_device_memory, oom_summary
from ..errors import DiskFull, UsageError, out_of_space
from ..seeding import derive_seed, rng
from ..writer import (
    VideoEntryWriter,
    clear_failure,
    clear_staging,
    failure_file_name,
    output_lock,
    read_failure,
    rebuild_manifest,
    record_failure,
)
from ..progress import Progress, plural
from .clips import clip_indices, frame_stride, resize_frames, upscale_factor, working_size
from .config import FLAG_OF, RESUME_KEYS, UNSET_SHOWN, GenerateConfig
from .engine import Engine, LocalEngine
from .masks import AnnotatedVideo, AnnotationPool, make_masks
from .sources import FrameCountMismatch, SourceReader, VideoSource, annotation_files, caption_for

logger = logging.getLogger("regdpo.generate")
Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    """Per-video messages of a run, through ``logging`` (``regdpo.generate``)."""
    logger.info(message)


# --------------------------------------------------------------------------- output folder


def check_output_dir(config: GenerateConfig) -> None:
    """Refuse a non-empty output folder unless ``--resume`` or ``--overwrite`` says what to do."""
    root = config.output_dir
    if root.exists() and not root.is_dir():
        raise UsageError(f"--output_dir {root}: exists and is not a folder")
    if outputs.entries(root) and not (config.resume or config.overwrite):
        raise UsageError(
            f"--output_dir {root} is not empty: add --resume to finish the run that made it, "
            f"or --overwrite to replace its contents"
        )
    if config.overwrite:
        foreign = outputs.foreign_entries(root)
        if foreign:
            raise UsageError(
                f"--overwrite: {root} holds {foreign[0].name!r}, which regdpo did not write (or cannot prove it wrote); refusing to "
                f"delete anything (remove it yourself or choose another --output_dir)"
            )


def clear_output_dir(root: Path) -> None:
    """``--overwrite``: delete what an earlier run wrote (only that; see ``regdpo.outputs``), atomically per entry."""
    outputs.remove_outputs(root)


RESUME_IGNORED_BACKEND_SETTINGS = ("paths", "versions")
"""Backend settings that may change between a run and its ``--resume`` (where the weights lie,
library versions); every other backend setting must be equal."""


def _comparable(backend_settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in backend_settings.items() if k not in RESUME_IGNORED_BACKEND_SETTINGS}


def check_resume_compatible(config: GenerateConfig, backend_settings: dict[str, Any] | None = None) -> None:
    """``--resume``: the finished videos must have been made with this run's settings
    (the generator's, and the backend's: e.g. ``--pcm_ckpt`` or ``--propainter_*``). With ``--round R``
    only the videos of round R are compared: videos of other rounds (made with other weights) are kept as
    they are, so one folder can gather the rounds of the on-policy loop (docs/negatives.md)."""
    wanted = config.settings_for_meta()
    want_backend = None
    if backend_settings is not None:  # compared as stored in meta.json (lists, not tuples)
        want_backend = _comparable(json.loads(json.dumps(backend_settings)))
    for name in fmt.complete_videos(config.output_dir):
        try:
            meta = fmt.read_video_meta(config.output_dir, name)
        except fmt.FormatError:  # reported (and never counted done) when its video comes up
            continue
        if config.round is not None and meta.generator.get("round") != config.round:
            continue  # another round's video: kept, not redone
        for key in RESUME_KEYS:
            have = meta.generator.get(key)
            if have != wanted.get(key):
                flag = FLAG_OF.get(key, key)
                raise UsageError(
                    f"--resume: {config.output_dir / name} was made with --{flag} {_show(have, key)}, this run "
                    f"asks for --{flag} {_show(wanted.get(key), key)}; resume with the same settings, or use --overwrite"
                )
        if meta.source.get("prompt_source") == "default" and meta.prompt != config.prompt:
            raise UsageError(  # a dataset with two prompts, silently: refuse like any other setting
                f"--resume: {config.output_dir / name} was made with --prompt {meta.prompt!r}, this run asks for "
                f"--prompt {config.prompt!r}; resume with the same settings, or use --overwrite"
            )
        if want_backend is not None:
            have_backend = _comparable(meta.generator.get("backend_settings", {}))
            if "diffueraser_weights" not in have_backend:  # made before regdpo recorded the weights' hash
                want_backend = {k: v for k, v in want_backend.items() if k != "diffueraser_weights"}
            if have_backend != want_backend:
                differing = sorted(k for k in have_backend.keys() | want_backend.keys()
                                   if have_backend.get(k) != want_backend.get(k))
                raise UsageError(
                    f"--resume: {config.output_dir / name} was made with other {config.backend} backend settings "
                    f"({', '.join(differing)}: {[have_backend.get(k) for k in differing]} there, "
                    f"{[want_backend.get(k) for k in differing]} now); resume with the same flags, or use --overwrite"
                )


def _show(value: Any, key: str = "") -> str:
    if value is None and key in UNSET_SHOWN:
        return UNSET_SHOWN[key]
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


# --------------------------------------------------------------------------- outcomes


@dataclass
class VideoOutcome:
    name: str
    status: str  # "written" | "done" (already complete) | "skipped" | "failed" | "gave_up"
    reason: str = ""
    seconds: float = 0.0
    attempts: int = 0
    reduced: bool = False  # written at the backend's reduced settings, after running out of device memory
    clip: str = ""  # the source clip of a --masks_per_clip entry (a skip is the source's: counted once per clip)


@dataclass
class RunSummary:
    output_dir: Path
    outcomes: list[VideoOutcome] = field(default_factory=list)
    seconds: float = 0.0
    manifest: fmt.Manifest | None = None
    shard: str | None = None

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def num_failed(self) -> int:
        return self.count("failed") + self.count("gave_up")

    def skipped_sources(self) -> list[VideoOutcome]:
        """One skipped outcome per source clip: a skip is the source's (too short, too small, no frames), so its
        ``--masks_per_clip`` entries count as one source, not K videos."""
        seen: dict[str, VideoOutcome] = {}
        for o in self.outcomes:
            if o.status == "skipped":
                seen.setdefault(o.clip or o.name, o)
        return list(seen.values())

    def lines(self, max_listed: int = 20) -> list[str]:
        written = [o for o in self.outcomes if o.status == "written"]
        per_video = f", {np.mean([o.seconds for o in written]):.1f} s per written video" if written else ""
        skipped = self.skipped_sources()
        entries = self.count("skipped")
        shown_skipped = f"{len(skipped)} skipped" if entries == len(skipped) else \
            f"{plural(len(skipped), 'source')} skipped ({entries} --masks_per_clip entries)"
        out = [
            f"{plural(len(self.outcomes), 'video')} -> {self.output_dir}: {len(written)} written, "
            f"{self.count('done')} already done, {shown_skipped}, {self.num_failed} failed "
            f"({self.seconds:.1f} s{per_video})"
        ]
        reduced = [o.name for o in written if o.reduced]
        if reduced:
            out.append(f"  {plural(len(reduced), 'video')} written at reduced settings after running out of GPU "
                       f"memory (meta.json 'reduced'): {', '.join(reduced[:max_listed])}"
                       f"{', ...' if len(reduced) > max_listed else ''}")
        problems = [o for o in self.outcomes if o.status in ("failed", "gave_up") or o in skipped]
        for o in problems[:max_listed]:
            label = {"skipped": "skipped", "failed": "FAILED", "gave_up": "FAILED (no more attempts)"}[o.status]
            out.append(f"  {label} {o.name}: {o.reason}")
        if len(problems) > max_listed:
            out.append(f"  ... and {len(problems) - max_listed} more (see {self.output_dir / fmt.FAILED_DIR})")
        if self.count("failed"):
            out.append("  run again with --resume to retry the failed videos")
        if self.manifest is not None:
            d = self.manifest.to_dict()
            out.append(f"manifest: {self.output_dir / fmt.MANIFEST_FILE} ({plural(d['num_videos'], 'video')}, "
                       f"{plural(d['num_pairs'], 'pair')})")
            if self.shard:
                out.append(f"  ({self.shard}: the manifest lists what every shard has finished so far; the last "
                           f"shard to finish writes the complete one, `regdpo manifest` rebuilds it any time)")
        return out


# --------------------------------------------------------------------------- one video


class SkipVideo(Exception):
    # (every reason is the source clip's, shared by its --masks_per_clip entries: recorded and logged once)
    """A permanent reason not to make this video (too short, no frames)."""


class WorkerLost(Exception):
    """The worker processes making this video died (``--engine ray``); the video may be the cause."""


class DeviceOutOfMemory(RuntimeError):
    """A video ran out of device memory (at the reduced settings too, when the backend has them). Carries
    the error's one-line summary, not the error itself (whose traceback would keep the tensors alive)."""


def build_annotation_pool(sources: Sequence[VideoSource]) -> AnnotationPool:
    pool = AnnotationPool([AnnotatedVideo(s.name, tuple(annotation_files(s))) for s in sources if s.annotations])
    if not len(pool):
        raise UsageError(
            "--mask_mode object needs object annotations (DAVIS Annotations/480p/<seq>, YouTube-VOS "
            "<split>/Annotations/<id>); none found for the given sources"
        )
    return pool


def _clip_indices(reader: SourceReader, config: GenerateConfig, stride: int, name: str) -> list[int]:
    """The clip's source frame indices, the start drawn from (seed, source clip name): the same on every
    call, and the same for every ``--masks_per_clip`` entry of the clip."""
    try:
        return clip_indices(reader.num_frames, config.nframes, stride, rng(config.seed, name, "clip_start"))
    except ValueError as exc:
        raise SkipVideo(f"{exc} ({reader.source.path})") from None


@dataclass
class PreparedVideo:
    """Reader stage output: the decoded, resized clip, its masks and the source part of its meta."""

    source: VideoSource
    frames: np.ndarray
    hole: np.ndarray
    mask_info: dict[str, Any]
    prompt: str
    source_meta: dict[str, Any]
    timings: dict[str, float]


@dataclass
class ComputedVideo:
    """Worker stage output: the negatives and the meta, ready for the writer (timings filled there)."""

    prepared: PreparedVideo
    negatives: dict[str, np.ndarray]
    meta: fmt.VideoMeta


def prepare_video(source: VideoSource, config: GenerateConfig, pool: AnnotationPool | None,
                  captions: dict[str, str]) -> PreparedVideo:
    """Reader stage: list/probe the source, pick and decode the clip, resize it, draw the masks.
    Raises ``SkipVideo`` or any error (the caller records it). No backend involved."""
    name = source.name
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    reader = SourceReader(source, config.assumed_fps)
    if reader.num_frames == 0:
        raise SkipVideo(f"no frames found in {source.path}")
    stride = frame_stride(reader.native_fps, config.fps)
    indices = _clip_indices(reader, config, stride, source.clip_name)
    try:
        frames = reader.read(indices)
    except FrameCountMismatch:  # the header overstated the frame count: count them, draw the clip again
        header_count = reader.num_frames
        if reader.recount_frames() >= header_count:
            raise
        indices = _clip_indices(reader, config, stride, source.clip_name)
        frames = reader.read(indices)
        count_note = f"the file's header says {header_count} frames, {reader.num_frames} decode"
    else:
        count_note = None
    timings["decode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    src_h, src_w = frames.shape[1:3]
    size = working_size(src_w, src_h, config.resolution, config.center_crop)
    if upscale_factor(size) > config.max_upscale:
        raise SkipVideo(f"needs a {upscale_factor(size):.2f}x upscale ({src_w}x{src_h} -> {size.width}x{size.height}), "
                        f"more than --max_upscale {config.max_upscale:g} ({source.path})")
    frames = resize_frames(frames, size)
    timings["resize"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # the mask from (seed, entry name, "mask"): entry k = 0 is the source clip's own name (today's mask)
    hole, mask_info = make_masks(config.mask_mode, config.nframes, size.height, size.width,
                                 rng(config.seed, name, "mask"), pool, source.clip_name, config.mask_dilation,
                                 config.mask_area, config.mask_margin, measure_motion=config.mask_flags_given)
    timings["mask"] = time.perf_counter() - t0

    prompt, prompt_source = caption_for(source, captions, config.prompt)
    source_meta = {
        "dataset": source.dataset,
        "id": source.source_id,
        "path": str(source.path),
        "layout": source.layout,
        "split": source.split,
        "native_fps": round(reader.native_fps, 4),
        "fps_assumed": reader.fps_assumed,
        "frame_stride": stride,
        "stored_frame_step": source.file_step,
        "clip_fps": round(reader.native_fps / stride, 4),
        "num_source_frames": reader.num_frames,
        **({"frame_count_note": count_note} if count_note else {}),
        "start_frame": indices[0],
        "source_frames": reader.frame_labels(indices),
        "original_size": [src_w, src_h],
        "crop": list(size.crop),
        "prompt_source": prompt_source,
    }
    return PreparedVideo(source, frames, hole, mask_info, prompt, source_meta, timings)


def compute_video(prepared: PreparedVideo, config: GenerateConfig, backend: NegativeBackend,
                  reduced_after: str | None = None) -> ComputedVideo:
    """Worker stage: call the backend once with all negative types, check what it returned, build the meta.
    The returned arrays are handed to the writer thread: a backend must not reuse them. ``reduced_after``:
    run the backend at its reduced settings, because of this (out-of-memory) error; recorded in the meta."""
    name, frames, hole = prepared.source.name, prepared.frames, prepared.hole
    timings = prepared.timings
    video_seed = derive_seed(config.seed, name)
    t0 = time.perf_counter()
    strengths = {t: config.strengths_of(t) for t in config.neg_types if config.strengths_of(t) != (fmt.FULL_STRENGTH,)}
    candidates = config.candidate_settings()
    result = backend.generate(Clip(name, frames, hole, video_seed, prepared.prompt), list(config.neg_types),
                              **({"strengths": strengths} if strengths else {}),
                              **({"candidates": candidates} if candidates else {}),
                              **({"reduced": True} if reduced_after is not None else {}))
    streams = config.streams
    timings["negatives"] = time.perf_counter() - t0
    for stage, seconds in result.timings.items():
        timings[f"negatives.{stage}"] = float(seconds)
    for t in (s.stream for s in streams):
        neg = result.negatives.get(t)
        if neg is None:
            raise RuntimeError(f"backend {backend.name} returned no {t} negative")
        if neg.shape != frames.shape or neg.dtype != np.uint8:
            raise RuntimeError(f"backend {backend.name} returned a {t} negative of {neg.dtype} {neg.shape}, "
                               f"expected uint8 {frames.shape}")

    classical = backend.name == "classical"
    meta = fmt.VideoMeta(
        name=name,
        num_frames=config.nframes,
        height=int(frames.shape[1]),
        width=int(frames.shape[2]),
        neg_types=list(config.neg_types),
        prompt=prepared.prompt,
        seed=video_seed,
        source=prepared.source_meta,
        generator={
            **config.settings_for_meta(),
            "regdpo_version": __version__,
            "backend_settings": backend.settings(),
            "classical_approximation": classical,
            "mask": prepared.mask_info,
            **({"note": "classical approximations of the defects, for trying the pipeline, tests and "
                        "ablations; real training data wants --backend models"} if classical else {}),
        },
        negatives=[{**s.to_dict(), "backend": backend.name, **result.info.get(s.stream, {})} for s in streams],
        timings={},
        source_clip=prepared.source.clip_name,
        mask_index=prepared.source.mask_index,
        reduced=(None if reduced_after is None else
                 {"after": reduced_after, "settings": json.loads(json.dumps(result.reduced or {}))}),
        cuda_peak_memory_mb=None if result.cuda_peak_memory_mb is None else float(result.cuda_peak_memory_mb),
    )
    return ComputedVideo(prepared, {s.stream: result.negatives[s.stream] for s in streams}, meta)


def write_video(computed: ComputedVideo, config: GenerateConfig) -> Path:
    """Writer stage: write GT, masks and negatives (composited onto the GT with the stored mask), commit
    ``meta.json`` last. ``timings.total`` is the sum of this video's stage times (not queue waits)."""
    prepared, meta = computed.prepared, computed.meta
    timings = prepared.timings
    t0 = time.perf_counter()
    with VideoEntryWriter(config.output_dir, meta.name, config.shard_name) as writer:
        writer.write_gt(prepared.frames)
        writer.write_masks(prepared.hole)
        for stream, frames in computed.negatives.items():  # composited onto the GT with the stored mask
            parsed = fmt.parse_negative(stream)
            writer.write_negative(parsed.type, frames, strength=parsed.strength, candidate=parsed.candidate)
        timings["write"] = time.perf_counter() - t0
        timings["total"] = sum(timings[k] for k in ("decode", "resize", "mask", "negatives", "write"))
        meta.timings = {k: round(v, 4) for k, v in timings.items()}
        return writer.commit(meta)


def make_video(
    source: VideoSource,
    config: GenerateConfig,
    backend: NegativeBackend,
    pool: AnnotationPool | None,
    captions: dict[str, str],
) -> Path:
    """Make and commit one video entry, the three stages in a row. Raises ``SkipVideo`` or any error."""
    return write_video(compute_video(prepare_video(source, config, pool, captions), config, backend), config)


# --------------------------------------------------------------------------- the run


def run_generation(
    config: GenerateConfig,
    backend: NegativeBackend | None,
    sources: Sequence[VideoSource],
    captions: dict[str, str] | None = None,
    log: Log = _stderr_log,
    donor_sources: Sequence[VideoSource] | None = None,
    engine: Engine | None = None,
    known_names: set[str] | None = None,
) -> RunSummary:
    """Make every video of ``sources`` (already cut to ``--max_videos`` and to the shard) into
    ``config.output_dir``.

    ``donor_sources``: every discovered video, before those cuts; ``--mask_mode object`` draws
    its donor annotations from them, so a video's masks do not depend on ``--max_videos`` or on
    sharding (default: ``sources``). The caller has checked the output folder
    (``check_output_dir``) and built the backend. ``engine``: what runs the videos (default: the
    overlapped ``LocalEngine`` of ``backend``; an engine that builds its own backends takes ``backend=None``).
    ``known_names`` (``--resume``): every entry name the sources make; a failure record of another name is
    of a source that is gone (removed or repaired away) and is dropped, one line each.
    """
    captions = captions or {}
    root = config.output_dir
    t_run = time.perf_counter()
    pool = None
    if config.mask_mode == "object":
        pool = build_annotation_pool(sources if donor_sources is None else donor_sources)
    stages = VideoStages(config, pool, captions, log)
    engine = LocalEngine(backend) if engine is None else engine
    with output_lock(root, config.shard_name):  # before anything is deleted: never two runs in one folder
        if config.resume:
            check_resume_compatible(config, engine.backend_settings(stages))
            if known_names is not None:
                drop_stale_failures(root, known_names, log)
        if config.overwrite:
            clear_output_dir(root)
        clear_staging(root, config.shard_name)
        return _run_locked(config, stages, engine, sources, t_run, log)


def drop_stale_failures(root: Path, known_names: set[str], log: Log) -> list[str]:
    """Remove the failure records (``_failed/*.json``) of names no source makes any more, e.g. a broken link
    that was deleted: the manifest would list them as failed forever. Returns the dropped names."""
    folder = root / fmt.FAILED_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    expected = {failure_file_name(name) for name in known_names}
    dropped = []
    for path in sorted(folder.iterdir()):
        if path.suffix != ".json" or path.name in expected or not (path.is_file() or path.is_symlink()):
            continue
        path.unlink(missing_ok=True)
        dropped.append(path.stem)
        log(f"--resume: dropped {fmt.FAILED_DIR}/{path.name}: no source makes {path.stem} any more")
    return dropped


def _run_locked(config, stages, engine, sources, t_run, log: Log) -> RunSummary:
    root = config.output_dir
    summary = RunSummary(root, shard=config.shard_name)
    bar = Progress(len(sources), "generate", "video", enabled=config.progress)

    def on_outcome(outcome: VideoOutcome) -> None:
        summary.outcomes.append(outcome)
        bar.set_postfix_str(outcome.name, refresh=False)
        bar.update(1)

    try:
        engine.run(stages, sources, on_outcome)
    finally:
        bar.close()
        try:
            summary.manifest = rebuild_manifest(root) if config.write_manifest else None
        except OSError as exc:  # e.g. the disk is full: the run's own error (if any) is the one to report
            log(f"warning: {root / fmt.MANIFEST_FILE} not rebuilt ({exc}); run `regdpo manifest {root}` later")
        summary.seconds = time.perf_counter() - t_run
    return summary


def committed_state(root: Path, source: VideoSource) -> tuple[str, str]:
    """What ``{root}/{source.name}`` holds: ("absent"|"done"|"incomplete"|"foreign"|"collision", detail).

    "done" only for a complete video (every stream listed and its headers and PNG trailers read),
    made from this source; "incomplete" (ours, to be made again); "foreign" (an unreadable or
    unknown ``meta.json``: reported, never replaced); "collision" (made from another source
    whose name sanitises to the same).
    """
    folder = root / source.name
    if not (folder / fmt.META_FILE).is_file():
        return "absent", ""
    try:
        meta = fmt.read_video_meta(root, source.name)
    except fmt.FormatError as exc:
        return "foreign", str(exc)
    made_from = (meta.source.get("dataset"), meta.source.get("id"))
    if None not in made_from and made_from != (source.dataset, source.source_id):
        return "collision", (f"{folder} was made from {meta.source.get('path')}, and {source.path} gets the same "
                             f"name {source.name}; rename one of the two sources")
    if (meta.source_clip, meta.mask_index) != (source.clip_name, source.mask_index):
        return "collision", (f"{folder} holds mask {meta.mask_index} of clip {meta.source_clip}, and mask "
                             f"{source.mask_index} of clip {source.clip_name} gets the same name; rename the source "
                             f"{source.path}")
    try:
        fmt.validate_video_streams(root, meta)
    except fmt.FormatError as exc:
        return "incomplete", str(exc)
    return "done", ""


@dataclass
class VideoWork:
    """One unit of work on its way through the stages. ``outcome`` set early: nothing more to do
    (done, gave up); ``error`` set: the stage that raised it ended the video (recorded by ``finish``)."""

    source: VideoSource
    attempts: int = 1
    seconds: float = 0.0  # work time of this video so far (not queue waits)
    outcome: VideoOutcome | None = None
    log_line: str = ""  # logged by finish, so that the log keeps the sources' order
    error: BaseException | None = None
    prepared: PreparedVideo | None = None
    computed: ComputedVideo | None = None
    reduced: bool = False  # computed at the backend's reduced settings (after an out-of-memory error)


@dataclass
class VideoStages:
    """The stages of one run (the ``engine.Stages`` of the generator). Picklable (for other processes)."""

    config: GenerateConfig
    pool: AnnotationPool | None
    captions: dict[str, str]
    log: Log = _stderr_log

    def prepare(self, source: VideoSource) -> VideoWork:
        """Reader: is the video still to do? Then decode, resize, draw its masks."""
        config, root, name = self.config, self.config.output_dir, source.name
        state, detail = committed_state(root, source)
        if state == "done":  # by an earlier run, or by another shard
            return VideoWork(source, outcome=VideoOutcome(name, "done"))
        if state in ("foreign", "collision"):
            return VideoWork(source, outcome=VideoOutcome(name, "failed", detail), log_line=f"FAILED {name}: {detail}")
        if state == "incomplete":
            self.log(f"warning: {detail}; making {name} again")
        previous = None
        if config.resume:
            try:
                previous = read_failure(root, name)
            except fmt.FormatError as exc:  # a damaged record must not stop the run: start the count again
                self.log(f"warning: {exc}; counting attempts of {name} from 1")
        attempts = 1
        if previous is not None and previous.get("status") == "failed":
            attempts = int(previous.get("attempts", 1)) + 1
            if attempts > config.max_attempts:
                return VideoWork(source, outcome=VideoOutcome(
                    name, "gave_up", f"{previous.get('reason')} (failed {attempts - 1} times, --max_attempts "
                    f"{config.max_attempts})", attempts=attempts - 1))
        work = VideoWork(source, attempts)
        t0 = time.perf_counter()
        try:
            work.prepared = prepare_video(source, config, self.pool, self.captions)
        except Exception as exc:  # per-video isolation: recorded by finish, in order
            work.error = exc
        work.seconds += time.perf_counter() - t0
        return work

    def compute(self, work: VideoWork, backend: NegativeBackend) -> VideoWork:
        """Worker: the backend's negatives for a prepared video.

        On a device out-of-memory error (``backends.memory.device_oom``; no other error) the failed call's
        memory is freed and, if the backend is ``reducible``, the video is run once more at its reduced
        settings, in the same attempt; a second out-of-memory error fails the video (``DeviceOutOfMemory``)."""
        if work.outcome is not None or work.error is not None:
            return work
        t0 = time.perf_counter()
        oom = self._compute_once(work, backend, None)
        if oom is not None:
            free_device_memory()  # the failed call's tensors: nothing references its traceback any more
            name = work.source.name
            if getattr(backend, "reducible", False):
                self.log(f"{name}: out of GPU memory ({oom}); freed it, making the video again at the "
                         f"{backend.name} backend's reduced settings")
                again = self._compute_once(work, backend, oom)
                if again is not None:
                    free_device_memory()
                    work.error = DeviceOutOfMemory(f"out of GPU memory at the normal and at the reduced settings "
                                                   f"({again})")
                work.reduced = work.computed is not None
            else:
                work.error = DeviceOutOfMemory(f"out of GPU memory, and the {backend.name} backend has no reduced "
                                               f"settings to retry at ({oom})")
        work.prepared = None
        work.seconds += time.perf_counter() - t0
        return work

    def _compute_once(self, work: VideoWork, backend: NegativeBackend, reduced_after: str | None) -> str | None:
        """One backend call: sets ``work.computed`` or ``work.error``, or returns the summary of a device
        out-of-memory error (the error itself is dropped here, its traceback with it)."""
        try:
            work.computed = compute_video(work.prepared, self.config, backend, reduced_after)
        except Exception as exc:
            oom = device_oom(exc)
            if oom is None:
                work.error = exc
                return None
            return oom_summary(oom)
        return None

    def finish(self, work: VideoWork) -> VideoOutcome:
        """Writer: commit the video (meta.json last), or record why it was not made."""
        if work.outcome is not None:
            if work.log_line:
                self.log(work.log_line)
            if work.outcome.status == "done":  # complete (again): an earlier run's failure record of it is stale
                clear_failure(self.config.output_dir, work.source.name)
            return work.outcome
        t0 = time.perf_counter()
        if work.error is None:
            try:
                write_video(work.computed, self.config)
            except Exception as exc:
                work.error = exc
        work.computed = None
        work.seconds += time.perf_counter() - t0
        return self._outcome(work)

    def clear_abandoned(self) -> None:
        """Remove what stopped worker processes left half-written in ``.staging/`` (``--engine ray``, whose
        driver holds the run lock: no other run writes there)."""
        clear_staging(self.config.output_dir, self.config.shard_name)

    def lost(self, source: VideoSource, reason: str) -> VideoOutcome:
        """A video lost with the worker processes making it (``--engine ray``): recorded as failed, as
        ``finish`` records a failing video (an attempt spent; ``--resume`` retries it)."""
        attempts = 1
        try:
            previous = read_failure(self.config.output_dir, source.name) if self.config.resume else None
        except fmt.FormatError:
            previous = None
        if previous is not None and previous.get("status") == "failed":
            attempts = int(previous.get("attempts", 1)) + 1
        return self._outcome(VideoWork(source, attempts, error=WorkerLost(reason)))

    def _outcome(self, work: VideoWork) -> VideoOutcome:
        root, source, name, exc = self.config.output_dir, work.source, work.source.name, work.error
        if exc is None:
            clear_failure(root, name)
            return VideoOutcome(name, "written", seconds=work.seconds, attempts=work.attempts,
                                reduced=work.reduced)
        if isinstance(exc, SkipVideo):  # the source's reason: one record and one line per source clip
            entries = self.config.masks_per_clip
            if source.mask_index == 0:
                record_failure(root, name, "skipped", str(exc), dataset=source.dataset, path=str(source.path),
                               **({"entries": entries} if entries > 1 else {}))
                self.log(f"skipped {name}: {exc}" + (f" (a source of {entries} --masks_per_clip entries, skipped "
                                                     f"together)" if entries > 1 else ""))
            else:  # entry k >= 1: the record of entry 0 (its source clip) says it
                clear_failure(root, name)
            return VideoOutcome(name, "skipped", str(exc), work.seconds, clip=source.clip_name)
        if out_of_space(exc):  # a run-level condition: stop, spend no attempt (the writer removed its files)
            raise disk_full(root, exc) from exc
        reason = f"{type(exc).__name__}: {exc}"  # per-video isolation: record, log with the name, go on
        try:
            record_failure(root, name, "failed", reason, attempts=work.attempts, dataset=source.dataset,
                           path=str(source.path))
        except OSError as record_exc:
            if out_of_space(record_exc):
                raise disk_full(root, record_exc) from record_exc
            raise
        self.log(f"FAILED {name} (attempt {work.attempts} of {self.config.max_attempts}): {reason}")
        return VideoOutcome(name, "failed", reason, work.seconds, work.attempts)


def disk_full(root: Path, exc: BaseException) -> DiskFull:
    """The run-level error of a full disk (quota, file-size limit): stop, spend no attempt."""
    cause = out_of_space(exc)
    return DiskFull(f"{root}: out of disk space or over quota ({cause.strerror if cause else exc}); the run stopped, "
                    f"the video in progress was removed and no attempt was counted; free space, then run the same "
                    f"command with --resume")
