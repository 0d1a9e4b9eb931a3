"""Flow warping error E_warp (Lai et al. 2018, "Learning Blind Video Temporal Consistency"): pure math.

Conventions: frames are uint8 RGB ``[T, H, W, 3]``, compared in [0, 1]; a flow is float ``[H, W, 2]``
in pixels, ``(dx, dy)``; ``forward[t]`` maps frame ``t`` to frame ``t + 1`` (the pixel ``p`` of frame
``t`` is seen at ``p + forward[t](p)`` in frame ``t + 1``), ``backward[t]`` maps frame ``t + 1`` back
to frame ``t``. Both come from the REFERENCE (ground-truth) clip, never from the output being scored:
every model of a comparison is measured against the same motion and the same occlusion mask, and a
flickering output cannot bend the flow it is judged by (Lai et al. also take the flow from the
unprocessed video).

For each pair ``(t, t + 1)``, frame ``t + 1`` of the output is warped back to frame ``t`` along
``forward[t]`` (bilinear), and

    E_warp = 1 / (T - 1) * sum_t  sum_p M_t(p) * mean_c (O_t(p, c) - warp(O_{t+1})(p, c))^2 / sum_p M_t(p)

where ``M_t`` marks the pixels that are visible in both frames: not occluded by the forward-backward
check of Sundaram et al. 2010 (``|f + b(p + f)|^2 > 0.01 (|f|^2 + |b(p + f)|^2) + 0.5``), not on a
motion boundary (``|grad b(p + f)|^2 > 0.01 |b(p + f)|^2 + 0.002``, as Ruder et al. 2016 / Lai et al.)
and not carried out of the frame. A pair with no such pixel counts 0 (as Lai et al.'s code,
which then divides by the whole frame). ``region`` restricts ``M_t`` further: the hole variant keeps
the pixels that are in the hole of frame ``t`` or whose match in frame ``t + 1`` is in its hole
(generated content compared with either side). Lower is steadier; 0 for a clip that moves exactly
as the flow says.
"""

from __future__ import annotations

import cv2
import numpy as np

CONSISTENCY_ALPHA = 0.01
CONSISTENCY_BETA = 0.5
BOUNDARY_ALPHA = 0.01
BOUNDARY_BETA = 0.002


def warp_backward(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``image [H, W, C]`` (float) at ``p + flow(p)`` (bilinear) -> ``(warped, inside)``.

    ``inside`` (bool ``[H, W]``) is False where ``p + flow(p)`` leaves the frame."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = xs + flow[..., 0].astype(np.float32)
    map_y = ys + flow[..., 1].astype(np.float32)
    warped = cv2.remap(np.ascontiguousarray(image, dtype=np.float32), map_x, map_y, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    if warped.ndim == 2 and image.ndim == 3:
        warped = warped[..., None]
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return warped, inside


def visible_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Bool ``[H, W]``: pixels of frame ``t`` whose match in frame ``t + 1`` is visible (not occluded,
    not on a motion boundary, inside the frame), from ``forward`` (t -> t+1) and ``backward`` (t+1 -> t)."""
    back_at_match, inside = warp_backward(backward, forward)
    round_trip = np.sum((forward + back_at_match) ** 2, axis=-1)
    magnitude = np.sum(forward ** 2, axis=-1) + np.sum(back_at_match ** 2, axis=-1)
    occluded = round_trip > CONSISTENCY_ALPHA * magnitude + CONSISTENCY_BETA
    dy_u, dx_u = np.gradient(back_at_match[..., 0])
    dy_v, dx_v = np.gradient(back_at_match[..., 1])
    gradient = dx_u ** 2 + dy_u ** 2 + dx_v ** 2 + dy_v ** 2
    boundary = gradient > BOUNDARY_ALPHA * np.sum(back_at_match ** 2, axis=-1) + BOUNDARY_BETA
    return inside & ~occluded & ~boundary


def warping_error(frames: np.ndarray, forward: np.ndarray, backward: np.ndarray,
                  region: np.ndarray | None = None) -> float:
    """E_warp of ``frames`` (uint8 ``[T, H, W, 3]``) along the reference flows ``forward`` /
    ``backward`` (``[T-1, H, W, 2]``); ``region`` (bool ``[T, H, W]``, True = hole) limits it to the
    hole (see the module doc). Returns the mean over the ``T - 1`` pairs, in [0, 1] units squared."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got {frames.shape}")
    count = frames.shape[0] - 1
    if count < 1:
        raise ValueError("E_warp needs at least 2 frames")
    expected = (count, *frames.shape[1:3], 2)
    if forward.shape != expected or backward.shape != expected:
        raise ValueError(f"flows must be {expected}, got {forward.shape} and {backward.shape}")
    if region is not None and region.shape != frames.shape[:3]:
        raise ValueError(f"region must be {frames.shape[:3]}, got {region.shape}")
    images = frames.astype(np.float32) / 255.0
    total = 0.0
    for t in range(count):
        warped, _ = warp_backward(images[t + 1], forward[t])
        mask = visible_mask(forward[t], backward[t])
        if region is not None:
            match_in_hole, _ = warp_backward(region[t + 1].astype(np.float32), forward[t])
            mask &= region[t] | (match_in_hole > 0)
        pixels = int(mask.sum())
        if pixels:
            squared = np.mean((images[t] - warped) ** 2, axis=-1)
            total += float(squared[mask].sum(dtype=np.float64)) / pixels
    return total / count
