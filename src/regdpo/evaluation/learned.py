"""Metrics that need network weights: VFID (I3D), flow warping error (RAFT), LPIPS.

Pure math in functions (:func:`frechet_distance`, :mod:`.warp_error`); the networks load at the edge
(:meth:`LearnedMetrics.from_paths`) from files the user gives, never from a hub. A metric whose
weights are not given or cannot be loaded is *not measured*: :meth:`LearnedMetrics.status` says why,
and :meth:`LearnedMetrics.clip_metrics` leaves it out (never 0).

Metric names (the keys of ``eval.json``):

- ``vfid``: Frechet distance between the I3D activations of the GT clips and of the output clips of
  a whole split (a set-level figure, lower is better); equal to ProPainter's ``calculate_vfid`` on
  the same weights (see :mod:`.i3d`).
- ``ewarp`` / ``ewarp_hole``: flow warping error of the output along the GT's RAFT flows, over the
  whole frame / the hole only (:mod:`.warp_error`, lower is better).
- ``lpips``: LPIPS (AlexNet, v0.1) between GT and output frames, mean over frames (lower is
  better), see :mod:`.lpips_net`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import linalg

from .warp_error import warping_error

METRICS = ("vfid", "ewarp", "ewarp_hole", "lpips")
"""Every learned metric, in report order."""

LOWER_IS_BETTER = {"vfid": True, "ewarp": True, "ewarp_hole": True, "lpips": True}

RAFT_ITERS = 20
"""RAFT refinement iterations for E_warp (ProPainter's ``--raft_iter`` default)."""

RAFT_MIN_SIDE = 128
"""Clips are padded (edge-replicated) to at least this many pixels per side, and to multiples of 8,
before RAFT (smaller inputs give NaN flows); the flows are cropped back."""

FLOW_CACHE = 4
"""GT clips whose flows are kept (every model of a comparison is scored along the same flows)."""

ACTIVATION_CACHE = 256
"""Clips whose I3D activations are kept (the GT clips' serve every model)."""

SQRTM_EPS = 1e-6


# ---------------------------------------------------------------------- pure math


def frechet_distance(acts_a: np.ndarray, acts_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two sets of activations ``[N, D]`` / ``[M, D]``:
    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with unbiased covariances, the matrix
    square root by ``scipy.linalg.sqrtm`` (``SQRTM_EPS`` added to the diagonals when the product is
    singular, an imaginary part from rounding dropped), as ProPainter's ``calculate_vfid``.

    Raises ``ValueError`` with fewer than 2 rows in a set or a large imaginary part."""
    a = np.asarray(acts_a, dtype=np.float64)
    b = np.asarray(acts_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"activations must be [N, D] with one D, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < 2:
        raise ValueError(f"a Frechet distance needs at least 2 clips per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular whenever N <= D: expected
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all():
            offset = np.eye(cov_a.shape[0]) * SQRTM_EPS
            root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ValueError(f"Frechet distance: imaginary component {np.max(np.abs(root.imag)):.3g}")
        root = root.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def pad_for_raft(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Edge-replicate ``x [N, C, H, W]`` at the bottom / right to multiples of 8 and at least
    ``RAFT_MIN_SIDE`` -> ``(padded, H, W)``."""
    h, w = x.shape[-2:]
    ph = max(RAFT_MIN_SIDE, -(-h // 8) * 8) - h
    pw = max(RAFT_MIN_SIDE, -(-w // 8) * 8) - w
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, h, w


# ---------------------------------------------------------------------- the networks, at the edge


@dataclass
class LearnedMetrics:
    """The loaded networks (``None`` where not measured) and why each missing metric is missing."""

    i3d: Any = None
    raft: Any = None
    lpips: Any = None
    reasons: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    raft_iters: int = RAFT_ITERS
    weights: dict[str, str | None] = field(default_factory=dict)  # flag -> SHA-256 of the file loaded (resume keys)
    _flows: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _activations: OrderedDict = field(default_factory=OrderedDict, repr=False)

    @classmethod
    def from_paths(cls, i3d_path: str | Path | None = None, raft_path: str | Path | None = None,
                   lpips_path: str | Path | None = None, device: str = "cpu", *,
                   diffueraser_repo: str | None = None) -> "LearnedMetrics":
        """Load what is given. ``raft_path``: ``raft-things.pth``, run with the RAFT code of the
        DiffuEraser checkout (``diffueraser_repo`` or ``sys.path``, as the models backend).
        Never raises for a missing or unreadable file: the metric is then not measured."""
        out = cls(device=str(device))
        if i3d_path is None:
            out.reasons["vfid"] = "no --i3d_path given"
        else:
            out.i3d = _load(out.reasons, ("vfid",), "--i3d_path", i3d_path, lambda p: _load_i3d(p, device))
        if raft_path is None:
            out.reasons["ewarp"] = out.reasons["ewarp_hole"] = "no --raft_path given"
        else:
            out.raft = _load(out.reasons, ("ewarp", "ewarp_hole"), "--raft_path", raft_path,
                             lambda p: _load_raft(p, device, diffueraser_repo))
        if lpips_path is None:
            out.reasons["lpips"] = "no --lpips_path given"
        else:
            out.lpips = _load(out.reasons, ("lpips",), "--lpips_path", lpips_path, lambda p: _load_lpips(p, device))
        return out

    def status(self) -> dict[str, str | None]:
        """``{metric: None}`` when measured, ``{metric: "reason"}`` when not, for every metric."""
        return {name: self.reasons.get(name) for name in METRICS}

    def measured(self) -> list[str]:
        return [name for name in METRICS if name not in self.reasons]

    def i3d_activations(self, frames: np.ndarray) -> np.ndarray:
        """I3D activation of one clip, uint8 ``[T, H, W, 3]`` -> float32 ``[1024]`` (cached by content)."""
        if self.i3d is None:
            raise RuntimeError(f"VFID is not measured: {self.reasons['vfid']}")
        key = _content_key(frames)
        if key not in self._activations:
            self._activations[key] = self.i3d.clip_features(frames)
            while len(self._activations) > ACTIVATION_CACHE:
                self._activations.popitem(last=False)
        return self._activations[key].copy()

    def clip_metrics(self, gt: np.ndarray, output: np.ndarray, hole: np.ndarray) -> dict[str, float]:
        """The per-clip learned metrics that are measured: ``ewarp``, ``ewarp_hole``, ``lpips``.

        ``gt`` / ``output``: uint8 ``[T, H, W, 3]``; ``hole``: bool ``[T, H, W]``, True = hole."""
        if gt.shape != output.shape or gt.shape[:3] != hole.shape:
            raise ValueError(f"gt {gt.shape}, output {output.shape} and hole {hole.shape} differ")
        out: dict[str, float] = {}
        if self.raft is not None:
            forward, backward = self.gt_flows(gt)
            out["ewarp"] = warping_error(output, forward, backward)
            out["ewarp_hole"] = warping_error(output, forward, backward, region=hole.astype(bool))
        if self.lpips is not None:
            out["lpips"] = self.lpips.video_distance(gt, output)
        return out

    def gt_flows(self, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RAFT forward / backward flows of the GT clip, float32 ``[T-1, H, W, 2]`` each (cached)."""
        from ..backends.models_propainter import raft_flows

        key = _content_key(gt)
        if key in self._flows:
            self._flows.move_to_end(key)
            return self._flows[key]
        x = torch.from_numpy(np.ascontiguousarray(gt)).to(self.device).permute(0, 3, 1, 2).float() / 255 * 2 - 1
        x, h, w = pad_for_raft(x)
        with torch.no_grad():
            forward, backward = raft_flows(self.raft, x.unsqueeze(0), self.raft_iters)
        flows = tuple(f[0, :, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy() for f in (forward, backward))
        self._flows[key] = flows
        while len(self._flows) > FLOW_CACHE:
            self._flows.popitem(last=False)
        return flows


def _content_key(frames: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest() + repr(frames.shape) + str(frames.dtype)


def _load(reasons: dict[str, str], metrics: tuple[str, ...], flag: str, path: str | Path, loader) -> Any:
    """``loader(path)``, or ``None`` with the reason recorded for ``metrics``."""
    path = Path(path)
    if not path.is_file():
        reason = f"{flag} {path}: file not found"
    else:
        try:
            return loader(path)
        except Exception as exc:  # noqa: BLE001 - any load failure means "not measured", with its reason
            reason = f"{flag} {path}: cannot load ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})"
    for name in metrics:
        reasons[name] = reason
    return None


def _load_i3d(path: Path, device: str):
    from .i3d import load_i3d

    return load_i3d(path, device)


def _load_raft(path: Path, device: str, repo: str | None):
    """ProPainter's ``RAFT_bi`` from the DiffuEraser checkout, as the models backend loads it."""
    from ..backends.models_source import import_source

    source = import_source(repo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raft = source.raft_bi_cls(str(path), torch.device(device))
    raft.requires_grad_(False)
    raft.eval()
    return raft.to(device)


def _load_lpips(path: Path, device: str):
    from .lpips_net import load_lpips

    return load_lpips(path, device)
