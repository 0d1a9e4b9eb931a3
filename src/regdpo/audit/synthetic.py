"""Small datasets with known defects, for the audit's tests, benchmark and threshold calibration.

Each negative is made by a simple, transparent operation on the GT inside the hole, so its
expected verdict is known: ``blur`` (Gaussian blur), ``hallucination`` (content of another
clip), ``flicker`` (a different OpenCV inpainting per segment), and deliberately wrong ones:
``copy`` (the GT itself) and ``outside`` (a correct blur plus a change outside the hole).

Conventions: frames RGB ``uint8 [T, H, W, 3]``, holes ``bool [T, H, W]`` (True = hole).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .. import format as fmt
from ..backends.base import plan_segments
from ..frames import composite, read_rgb
from ..seeding import rng
from ..writer import VideoEntryWriter


def load_clip(frame_paths: Sequence[str | os.PathLike], num_frames: int, height: int, width: int) -> np.ndarray:
    """The first ``num_frames`` images of ``frame_paths`` resized (area) to ``width`` x ``height``."""
    if len(frame_paths) < num_frames:
        raise ValueError(f"need {num_frames} frames, {len(frame_paths)} given")
    return np.stack(
        [cv2.resize(read_rgb(p), (width, height), interpolation=cv2.INTER_AREA) for p in frame_paths[:num_frames]]
    )


def textured_clip(num_frames: int, height: int, width: int, seed: int = 0, speed: float = 1.5) -> np.ndarray:
    """A procedural textured pattern (blurred noise + stripes) panning ``speed`` px per frame."""
    gen = rng(seed, "textured_clip")
    pad = int(np.ceil(speed * num_frames)) + 2
    base = gen.integers(0, 256, size=(height + pad, width + pad, 3)).astype(np.float32)
    base = cv2.GaussianBlur(base, (0, 0), 1.2)
    yy, xx = np.mgrid[0 : height + pad, 0 : width + pad]
    base += 40 * np.sin(xx / 5.0)[..., None] + 30 * np.cos(yy / 9.0)[..., None]
    base = np.clip((base - base.mean()) * 1.5 + 128, 0, 255).astype(np.uint8)
    frames = []
    for t in range(num_frames):
        shift = speed * t
        m = np.float32([[1, 0, shift], [0, 1, shift / 2]])
        frames.append(cv2.warpAffine(base, m, (width + pad, height + pad), borderMode=cv2.BORDER_REFLECT)[:height, :width])
    return np.stack(frames)


def moving_ellipse_hole(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """An ellipse covering about 12% of the frame that drifts across it."""
    gen = rng(seed, "hole")
    cy, cx = height * gen.uniform(0.4, 0.6), width * gen.uniform(0.35, 0.5)
    vy, vx = gen.uniform(-0.6, 0.6), gen.uniform(0.3, 1.0)
    axes = (max(2, int(width * 0.22)), max(2, int(height * 0.2)))
    hole = np.zeros((num_frames, height, width), np.uint8)
    for t in range(num_frames):
        centre = (int(round(cx + vx * t)), int(round(cy + vy * t)))
        cv2.ellipse(hole[t], centre, axes, 0, 0, 360, 1, thickness=-1)
    return hole.astype(bool)


def blur_negative(gt: np.ndarray, sigma: float = 2.5) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in gt])


def hallucination_negative(other: np.ndarray) -> np.ndarray:
    """Content of another clip (same shape) in place of the GT's."""
    return np.ascontiguousarray(other)


def flicker_negative(gt: np.ndarray, hole: np.ndarray, num_segments: int = 3) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A different OpenCV inpainting per segment (Telea / Navier-Stokes, radii, brightness)."""
    segments = plan_segments(gt.shape[0], num_segments)
    methods = [(cv2.INPAINT_TELEA, 3, 0), (cv2.INPAINT_NS, 9, 25), (cv2.INPAINT_TELEA, 15, -25)]
    out = np.empty_like(gt)
    for k, (start, stop) in enumerate(segments):
        method, radius, shift = methods[k % len(methods)]
        for t in range(start, stop):
            fill = cv2.inpaint(gt[t], hole[t].astype(np.uint8), radius, method).astype(np.int16) + shift
            out[t] = np.clip(fill, 0, 255).astype(np.uint8)
    return out, segments


def write_synthetic_video(
    root: str | os.PathLike,
    name: str,
    gt: np.ndarray,
    hole: np.ndarray,
    negatives: dict[str, np.ndarray],
    *,
    raw: Sequence[str] = (),
    segments: Sequence[Sequence[int]] | None = None,
    source_clip: str = "",
    mask_index: int = 0,
) -> Path:
    """Write one entry; ``negatives`` maps stream names (``blur``, ``blur_s0.50``) to frames; those
    listed in ``raw`` are written as given (not composited)."""
    t, h, w = hole.shape
    parsed = {k: fmt.parse_negative(k) for k in negatives}
    info: dict[str, dict] = {k: {"method": "synthetic"} for k in negatives}
    for k, parsed_stream in parsed.items():
        if segments is not None and parsed_stream.type == "flicker":
            info[k]["segments"] = [list(s) for s in segments]
    streams = list(parsed.values())
    meta = fmt.VideoMeta(
        name=name, num_frames=t, height=h, width=w, neg_types=fmt.types_of(streams),
        source={"dataset": "synthetic"}, generator={"backend": "synthetic"},
        negatives={s.stream: info[s.stream] for s in fmt.sort_streams(streams)},
        source_clip=source_clip, mask_index=mask_index,
    )
    with VideoEntryWriter(root, name) as writer:
        writer.write_gt(gt)
        writer.write_masks(hole)
        for stream, frames in negatives.items():
            s = parsed[stream]
            writer.write_negative(s.type, frames, already_composited=stream in raw, strength=s.strength,
                                  candidate=s.candidate)
        return writer.commit(meta)


def good_negatives(gt: np.ndarray, hole: np.ndarray, other: np.ndarray, *, blur_sigma: float = 2.5) -> tuple[dict[str, np.ndarray], list[tuple[int, int]]]:
    """The three negatives, each showing its defect clearly."""
    flicker, segments = flicker_negative(gt, hole)
    return (
        {
            "hallucination": hallucination_negative(other),
            "blur": blur_negative(gt, blur_sigma),
            "flicker": flicker,
        },
        segments,
    )


def wrong_negatives(gt: np.ndarray, hole: np.ndarray, other: np.ndarray) -> dict[str, np.ndarray]:
    """Deliberately wrong: ``blur`` is a copy of the GT, ``hallucination`` differs outside the hole."""
    outside = composite(hallucination_negative(other), gt, hole).astype(np.int16)
    outside[:, : max(1, gt.shape[1] // 10), : max(1, gt.shape[2] // 10)] += 20  # a corner outside the hole
    return {"blur": gt.copy(), "hallucination": np.clip(outside, 0, 255).astype(np.uint8)}


def davis_clips(data_root: str | os.PathLike, num_frames: int, height: int, width: int) -> dict[str, np.ndarray]:
    """The DAVIS sequences under ``data_root/DAVIS/JPEGImages/480p`` as resized clips (name -> frames)."""
    base = Path(data_root) / "DAVIS" / "JPEGImages" / "480p"
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no DAVIS sequences")
    clips = {}
    for seq in sorted(p for p in base.iterdir() if p.is_dir()):
        paths = sorted(seq.glob("*.jpg"))
        if len(paths) >= num_frames:
            clips[seq.name] = load_clip(paths, num_frames, height, width)
    return clips


def build_dataset(
    root: str | os.PathLike,
    clips: dict[str, np.ndarray],
    *,
    copies: int = 1,
    wrong: bool = True,
) -> list[str]:
    """Write, per source clip, ``good_{clip}[_k]`` (three clear negatives) and, if ``wrong``,
    ``bad_{clip}`` (a GT-copy blur and a hallucination that differs outside the hole);
    the hallucination content is taken from the next clip. Returns the video names.
    """
    from ..writer import rebuild_manifest

    names = sorted(clips)
    written = []
    for idx, name in enumerate(names):
        gt = clips[name]
        other = clips[names[(idx + 1) % len(names)]] if len(names) > 1 else textured_clip(*gt.shape[:3], seed=idx + 7)
        t, h, w = gt.shape[:3]
        for k in range(copies):
            hole = moving_ellipse_hole(t, h, w, seed=idx * 1000 + k)
            negs, segments = good_negatives(gt, hole, other)
            video = f"good_{name}" + (f"_{k}" if copies > 1 else "")
            write_synthetic_video(root, video, gt, hole, negs, segments=segments)
            written.append(video)
        if wrong:
            hole = moving_ellipse_hole(t, h, w, seed=idx * 1000 + 999)
            write_synthetic_video(root, f"bad_{name}", gt, hole, wrong_negatives(gt, hole, other), raw=["hallucination"])
            written.append(f"bad_{name}")
    rebuild_manifest(root)
    return written
