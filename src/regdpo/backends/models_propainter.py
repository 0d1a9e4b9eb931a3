"""ProPainter, driven in memory (no video files, no lossy round trip).

ProPainter's own ``inference.Propainter.forward`` reads a video or frame folder and writes an
mp4v file. This module loads the same three networks from the user's checkout (RAFT, the
recurrent flow completion network and the InpaintGenerator) and runs the same inference
procedure on arrays:

1. resize the clip to ``resize_ratio`` of its size (longer side capped at 960 px, both sides
   rounded down to multiples of 8); frames bicubic, masks nearest;
2. RAFT forward/backward flows in short chunks (fp32);
3. flow completion in sub-videos of ``subvideo_length`` flows (5 flows of context each side);
4. for videos longer than ``min(100, subvideo_length)``, a first image propagation on
   evenly sampled frames whose results replace those frames;
5. image propagation in sub-videos (10 frames of context each side);
6. feature propagation + sparse transformer over sliding local windows of
   ``neighbor_length`` frames plus reference frames every ``ref_stride`` frames; frames covered
   by two windows average the two predictions, as ProPainter does;
7. the prediction replaces the (dilated) hole of the resized frames, and the result is resized
   back to the clip size (bicubic).

Conventions: frames ``uint8 [T, H, W, 3]`` RGB, holes ``bool [T, H, W]`` True = hole.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from PIL import Image

MAX_SIDE = 960
"""ProPainter scales clips whose longer side exceeds this down to it (``MaxSideThresh``)."""

MIN_SIDE = 128
"""RAFT's 4-level correlation pyramid at 1/8 scale needs at least 16 px per side at the
coarsest-but-three level: smaller processing sizes give NaN flows."""

IMAGE_PROP_MAX = 100
"""ProPainter propagates images in sub-videos of at most this many frames."""


@dataclass(frozen=True)
class ProPainterSettings:
    """ProPainter's inference settings (defaults live in ``ModelsConfig``, the flags' one source)."""

    resize_ratio: float
    mask_dilation: int
    raft_iter: int
    subvideo_length: int
    neighbor_length: int
    ref_stride: int


# ---------------------------------------------------------------------- pure helpers


def processing_size(width: int, height: int, resize_ratio: float) -> tuple[int, int]:
    """``(w, h)`` ProPainter works at for a ``width x height`` clip (multiples of 8)."""
    ratio = float(resize_ratio)
    longer = max(width, height)
    if longer > MAX_SIDE:
        ratio *= MAX_SIDE / longer
    w, h = (int(ratio * width), int(ratio * height)) if ratio != 1.0 else (width, height)
    return w - w % 8, h - h % 8


def check_processing_size(width: int, height: int, resize_ratio: float) -> tuple[int, int]:
    """``processing_size`` or ``ValueError`` when RAFT cannot work at that size."""
    w, h = processing_size(width, height, resize_ratio)
    if min(w, h) < MIN_SIDE:
        raise ValueError(
            f"ProPainter would work at {w}x{h} for this {width}x{height} clip (--propainter_resize_ratio "
            f"{resize_ratio}); RAFT needs at least {MIN_SIDE} px per side: raise the ratio or use larger clips"
        )
    return w, h


def flow_chunk_length(longer_edge: int) -> int:
    """Frames per RAFT call, by the processing size's longer edge (ProPainter's memory rule)."""
    if longer_edge <= 640:
        return 12
    if longer_edge <= 720:
        return 8
    if longer_edge <= 1280:
        return 4
    return 2


def raft_flows(raft: Any, frames: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``RAFT_bi`` flows of ``frames [1, T, 3, h, w]`` in [-1, 1] (fp32) -> forward, backward
    ``[1, T-1, 2, h, w]``, in chunks of ``flow_chunk_length`` frames (one frame shared between chunks)."""
    length = frames.size(1)
    chunk = flow_chunk_length(max(frames.size(-1), frames.size(-2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # RAFT's torch.cuda.amp.autocast
        warnings.filterwarnings("ignore", message=".*meshgrid.*")
        if length <= chunk:
            return raft(frames, iters=iters)
        forward, backward = [], []
        for first in range(0, length, chunk):
            stop = min(length, first + chunk)
            f, b = raft(frames[:, max(0, first - 1):stop], iters=iters)
            forward.append(f)
            backward.append(b)
    return torch.cat(forward, dim=1), torch.cat(backward, dim=1)


def chunk_bounds(length: int, chunk: int, pad: int) -> list[tuple[int, int, int, int]]:
    """Sub-ranges with context: ``(start, stop, keep_from, keep_to)`` per chunk of ``chunk`` items.

    The model runs on ``[start, stop)`` (the chunk plus up to ``pad`` items each side) and
    ``[keep_from, keep_to)`` (relative to ``start``) is the chunk itself.
    """
    out = []
    for first in range(0, length, chunk):
        start = max(0, first - pad)
        stop = min(length, first + chunk + pad)
        keep_from = first - start
        keep_to = stop - start - (stop - min(length, first + chunk))
        out.append((start, stop, keep_from, keep_to))
    return out


def local_windows(length: int, neighbor_length: int) -> list[list[int]]:
    """The local frame windows of the transformer pass: centres every ``neighbor_length // 2``."""
    stride = max(1, neighbor_length // 2)
    return [
        list(range(max(0, centre - stride), min(length, centre + stride + 1)))
        for centre in range(0, length, stride)
    ]


def reference_indices(centre: int, neighbors: list[int], length: int, ref_stride: int, ref_num: int) -> list[int]:
    """Non-local reference frames for a window: every ``ref_stride``-th frame not in the window;
    with ``ref_num >= 0`` only those within ``ref_stride * (ref_num // 2)`` of the centre."""
    if ref_num == -1:
        return [i for i in range(0, length, ref_stride) if i not in neighbors]
    refs: list[int] = []
    start = max(0, centre - ref_stride * (ref_num // 2))
    stop = min(length, centre + ref_stride * (ref_num // 2))
    for i in range(start, stop, ref_stride):
        if i not in neighbors:
            if len(refs) > ref_num:
                break
            refs.append(i)
    return refs


def dilate_holes(hole: np.ndarray, iterations: int) -> np.ndarray:
    """Dilate ``bool [T, H, W]`` holes with a 3x3 cross ``iterations`` times -> ``uint8`` 0/1."""
    hole = np.asarray(hole, dtype=np.uint8)
    if iterations <= 0:
        return hole
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    return np.stack([cv2.dilate(h, kernel, iterations=int(iterations)) for h in hole])


def resize_clip(frames: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize ``uint8 [T, H, W, C]`` or ``[T, H, W]`` frames to ``size = (w, h)`` with PIL."""
    if frames.shape[2] == size[0] and frames.shape[1] == size[1]:
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize(size, resample)) for f in frames])


class StageTimer:
    """Accumulates wall time per stage name; synchronises CUDA first so that times are real."""

    def __init__(self, timings: dict[str, float], device: torch.device):
        self.timings = timings
        self.sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def __call__(self, name: str) -> "_Stage":
        return _Stage(self, name)


class _Stage:
    def __init__(self, timer: StageTimer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.timer.sync()
        self.start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.timer.sync()
        self.timer.timings[self.name] = self.timer.timings.get(self.name, 0.0) + time.perf_counter() - self.start


# ---------------------------------------------------------------------- the driver


class ProPainterRunner:
    """ProPainter's three networks, loaded once; ``run`` inpaints one clip in memory."""

    def __init__(self, source: Any, model_dir: str | Path, device: torch.device, half: bool,
                 settings: ProPainterSettings):
        model_dir = Path(model_dir)
        self.device = device
        self.half = bool(half)
        self.settings = settings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.raft = source.raft_bi_cls(str(model_dir / "raft-things.pth"), device)
            self.flow_complete = source.flow_complete_cls(str(model_dir / "recurrent_flow_completion.pth"))
            self.inpainter = source.inpainter_cls(init_weights=False, model_path=str(model_dir / "ProPainter.pth"))
        for net in (self.raft, self.flow_complete, self.inpainter):
            net.requires_grad_(False)
            net.eval()
        self.raft.to(device)  # RAFT stays fp32, as in ProPainter
        dtype = torch.float16 if self.half else torch.float32
        self.flow_complete.to(device=device, dtype=dtype)
        self.inpainter.to(device=device, dtype=dtype)
        self.dtype = dtype

    def close(self) -> None:
        for name in ("raft", "flow_complete", "inpainter"):
            if hasattr(self, name):
                delattr(self, name)

    # -- stages
    def _flows(self, frames: torch.Tensor, s: ProPainterSettings) -> tuple[torch.Tensor, torch.Tensor]:
        return raft_flows(self.raft, frames, s.raft_iter)

    def _complete(self, flows: tuple[torch.Tensor, torch.Tensor], flow_masks: torch.Tensor, s: ProPainterSettings):
        """Complete the flows inside the (dilated) holes, in sub-videos with 5 flows of context."""
        net = self.flow_complete
        count = flows[0].size(1)
        length = s.subvideo_length
        if count <= length:
            pred, _ = net.forward_bidirect_flow(flows, flow_masks)
            return net.combine_flow(flows, pred, flow_masks)
        forward, backward = [], []
        for start, stop, keep_from, keep_to in chunk_bounds(count, length, 5):
            part = (flows[0][:, start:stop], flows[1][:, start:stop])
            masks = flow_masks[:, start:stop + 1]
            pred, _ = net.forward_bidirect_flow(part, masks)
            pred = net.combine_flow(part, pred, masks)
            forward.append(pred[0][:, keep_from:keep_to])
            backward.append(pred[1][:, keep_from:keep_to])
        return torch.cat(forward, dim=1), torch.cat(backward, dim=1)

    def _propagate(self, frames: torch.Tensor, flows, masks: torch.Tensor, s: ProPainterSettings):
        """Image propagation along completed flows -> (updated frames, updated masks) ``[1, T, ., h, w]``."""
        b, length, _, h, w = frames.shape
        masked = frames * (1 - masks)
        chunk = min(IMAGE_PROP_MAX, s.subvideo_length)
        bounds = [(0, length, 0, length)] if length <= chunk else chunk_bounds(length, chunk, 10)
        out_frames, out_masks = [], []
        for start, stop, keep_from, keep_to in bounds:
            n = stop - start
            part_flows = (flows[0][:, start:stop - 1], flows[1][:, start:stop - 1])
            prop, upd = self.inpainter.img_propagation(masked[:, start:stop], part_flows, masks[:, start:stop],
                                                       "nearest")
            part_masks = masks[:, start:stop]
            upd_frames = frames[:, start:stop] * (1 - part_masks) + prop.view(b, n, 3, h, w) * part_masks
            out_frames.append(upd_frames[:, keep_from:keep_to])
            out_masks.append(upd.view(b, n, 1, h, w)[:, keep_from:keep_to])
        return torch.cat(out_frames, dim=1), torch.cat(out_masks, dim=1)

    # -- the whole procedure
    def run(self, frames: np.ndarray, hole: np.ndarray, timings: dict[str, float] | None = None,
            resize_ratio: float | None = None, settings: ProPainterSettings | None = None) -> np.ndarray:
        """ProPainter's result for a clip: ``uint8 [T, H, W, 3]`` at the clip's size.

        Inside the (dilated) hole it is ProPainter's prediction, outside it the clip resized to
        the processing size and back (so slightly soft everywhere when ``resize_ratio < 1``).
        Deterministic: ProPainter draws no random numbers. ``resize_ratio``: work at this ratio instead
        of the configured one (the blur strength's knob). ``settings``: instead of the runner's (the
        backend's reduced settings after an out-of-memory error).
        """
        timings = {} if timings is None else timings
        stage = StageTimer(timings, self.device)
        num, height, width = hole.shape
        if num < 2:
            raise ValueError(f"ProPainter needs at least 2 frames, got {num}")
        s = self.settings if settings is None else settings
        w, h = check_processing_size(width, height, s.resize_ratio if resize_ratio is None else resize_ratio)
        dev, dtype = self.device, self.dtype

        with stage("propainter_prepare"):
            small = resize_clip(frames, (w, h), Image.BICUBIC)
            small_hole = resize_clip(hole.astype(np.uint8) * 255, (w, h), Image.NEAREST) > 0
            dilated = dilate_holes(small_hole, s.mask_dilation)  # flow masks = hole masks, as in ProPainter
            x = torch.from_numpy(small).to(dev).permute(0, 3, 1, 2).unsqueeze(0).float().div(255) * 2 - 1
            masks = torch.from_numpy(dilated).to(dev).float()[None, :, None]  # [1, T, 1, h, w], 1 = hole
        with stage("propainter_raft"):
            flows = self._flows(x, s)
        x, masks = x.to(dtype), masks.to(dtype)
        flows = (flows[0].to(dtype), flows[1].to(dtype))
        flow_masks = masks
        with stage("propainter_flow_completion"):
            flows = self._complete(flows, flow_masks, s)
        masks_original = masks.clone()

        prop_len = min(IMAGE_PROP_MAX, s.subvideo_length)
        if num > prop_len:  # ProPainter's pre-propagation on sampled frames of long clips
            with stage("propainter_pre_propagation"):
                picks = list(range(0, num, num // (prop_len // 2)))
                picked = x[:, picks].float()  # RAFT in fp32
                picked_flows = self._flows(picked, s)
                picked_flows = self._complete((picked_flows[0].to(dtype), picked_flows[1].to(dtype)),
                                              flow_masks[:, picks], s)
                upd_frames, upd_masks = self._propagate(picked.to(dtype), picked_flows, masks[:, picks], s)
                x, masks = x.clone(), masks.clone()
                x[:, picks] = upd_frames
                masks[:, picks] = upd_masks
        with stage("propainter_propagation"):
            upd_frames, upd_masks = self._propagate(x, flows, masks, s)

        with stage("propainter_transformer"):
            result = self._transformer(upd_frames, flows, masks, upd_masks, masks_original, small, s)
        with stage("propainter_prepare"):
            out = resize_clip(result, (width, height), Image.BICUBIC)
        return np.ascontiguousarray(out)

    def _transformer(self, upd_frames, flows, masks, upd_masks, masks_original, small: np.ndarray,
                     s: ProPainterSettings) -> np.ndarray:
        num = upd_frames.size(1)
        h, w = upd_frames.shape[-2:]
        ref_num = s.subvideo_length // s.ref_stride if num > s.subvideo_length else -1
        keep = masks_original[0, :, 0].to(torch.uint8).cpu().numpy()[..., None]  # [T, h, w, 1], 1 = hole
        comp: list[np.ndarray | None] = [None] * num
        stride = max(1, s.neighbor_length // 2)
        for centre, neighbors in zip(range(0, num, stride), local_windows(num, s.neighbor_length)):
            refs = reference_indices(centre, neighbors, num, s.ref_stride, ref_num)
            chosen = neighbors + refs
            window_flows = (flows[0][:, neighbors[:-1]], flows[1][:, neighbors[:-1]])
            pred = self.inpainter(upd_frames[:, chosen], window_flows, masks[:, chosen], upd_masks[:, chosen],
                                  len(neighbors))
            pred = pred.view(-1, 3, h, w).float().add_(1).div_(2).permute(0, 2, 3, 1).cpu().numpy() * 255
            pred = np.clip(pred, 0, 255).astype(np.uint8)
            for i, idx in enumerate(neighbors):
                img = pred[i] * keep[idx] + small[idx] * (1 - keep[idx])
                if comp[idx] is None:
                    comp[idx] = img
                else:
                    comp[idx] = (comp[idx].astype(np.float32) * 0.5 + img.astype(np.float32) * 0.5).astype(np.uint8)
        return np.stack(comp)  # type: ignore[arg-type]
