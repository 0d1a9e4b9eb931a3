"""The learned metrics inside ``regdpo eval``: their flags and the runner's metric providers.

``--i3d_path`` (VFID), ``--raft_path`` (E_warp) and ``--lpips_path`` (LPIPS). The first two default to
``{--propainter_model_dir}/i3d_rgb_imagenet.pt`` and ``.../raft-things.pth``: a default file that is absent
leaves its metric not measured (null + reason in eval.json); a file named by a flag that is absent or
cannot be loaded is a usage error (exit 2). Nothing is ever downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UsageError
from ..safe_read import file_sha256
from .learned import LearnedMetrics, frechet_distance
from .metrics import MetricSpec, NotMeasured

I3D_FILE = "i3d_rgb_imagenet.pt"
RAFT_FILE = "raft-things.pth"

LEARNED_CLIP_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("ewarp", False, 1e-6, "0..1 squared", "flow warping error of the output along the GT's RAFT "
               "flows, whole frame (Lai et al. 2018; non-occluded pixels, mean over frame pairs)"),
    MetricSpec("ewarp_hole", False, 1e-6, "0..1 squared", "flow warping error restricted to the hole (a pixel "
               "or its match in the next frame in the hole)"),
    MetricSpec("lpips", False, 1e-4, "", "LPIPS-Alex v0.1 between GT and output, whole frames, mean over frames"),
)
VFID_SPEC = MetricSpec("vfid", False, 0.0, "", "Frechet distance between the I3D activations of the GT clips and "
                       "of the output clips of the split (ProPainter's VFID)", level="set")


def add_arguments(parser: argparse.ArgumentParser | Any) -> None:
    group = parser.add_argument_group("learned metrics (weights never downloaded; absent = not measured)")
    group.add_argument("--i3d_path", type=Path, help=f"I3D weights for VFID (ProPainter's {I3D_FILE}; "
                       f"default: {{--propainter_model_dir}}/{I3D_FILE} when there)")
    group.add_argument("--raft_path", type=Path, help=f"RAFT weights for the flow warping error ({RAFT_FILE}, run "
                       f"with the DiffuEraser checkout's RAFT code; default: {{--propainter_model_dir}}/{RAFT_FILE} "
                       "when there)")
    group.add_argument("--lpips_path", type=Path, help="AlexNet backbone for LPIPS: torchvision's "
                       "alexnet-owt-7be5be79.pth or a saved lpips.LPIPS(net='alex') state dict (needs the lpips "
                       "package and torchvision)")


def _weights(args: argparse.Namespace, flag: str, default_name: str | None) -> tuple[Path | None, str | None, bool]:
    """(path to load, reason when none, whether the user named it)."""
    given = getattr(args, flag, None)
    if given is not None:
        if not Path(given).is_file():
            raise UsageError(f"--{flag} {given}: file not found")
        return Path(given), None, True
    model_dir = getattr(args, "propainter_model_dir", None)
    if default_name is None:
        return None, f"no --{flag} given", False
    if not model_dir:
        return None, f"no --{flag} given (nor --propainter_model_dir, where {default_name} is looked for)", False
    default = Path(model_dir) / default_name
    if not default.is_file():
        return None, f"no --{flag} given and {default} not found", False
    return default, None, False


def learned_from_args(args: argparse.Namespace, device: str) -> LearnedMetrics:
    """Load the learned metrics' networks the flags name (see the module doc)."""
    paths = {flag: _weights(args, flag, name) for flag, name in
             (("i3d_path", I3D_FILE), ("raft_path", RAFT_FILE), ("lpips_path", None))}
    metrics = LearnedMetrics.from_paths(paths["i3d_path"][0], paths["raft_path"][0], paths["lpips_path"][0],
                                        device=device, diffueraser_repo=getattr(args, "diffueraser_repo", None))
    for flag, names in (("i3d_path", ("vfid",)), ("raft_path", ("ewarp", "ewarp_hole")), ("lpips_path", ("lpips",))):
        path, reason, named = paths[flag]
        if reason is not None:
            for name in names:
                metrics.reasons[name] = reason
        elif named and metrics.reasons.get(names[0]):
            raise UsageError(metrics.reasons[names[0]])
    metrics.weights = {flag: (file_sha256(p[0], "weights file") if p[0] is not None and p[1] is None else None)
                       for flag, p in paths.items()}
    return metrics


class LearnedClipMetrics:
    """Per-clip provider: ``ewarp``, ``ewarp_hole``, ``lpips`` (``NotMeasured`` with the reason when absent)."""

    specs = LEARNED_CLIP_SPECS

    def __init__(self, learned: LearnedMetrics):
        self.learned = learned

    def settings(self) -> dict[str, Any]:
        weights = self.learned.weights
        return {"name": "learned", "version": 1, "raft_sha256": weights.get("raft_path"),
                "raft_iters": self.learned.raft_iters if self.learned.raft is not None else None,
                "lpips_sha256": weights.get("lpips_path"),
                "not_measured": {s.name: self.learned.reasons.get(s.name) for s in self.specs}}

    def measure(self, gt: np.ndarray, output: np.ndarray, hole: np.ndarray) -> dict[str, Any]:
        values: dict[str, Any] = dict(self.learned.clip_metrics(gt, output, hole))
        for spec in self.specs:
            if spec.name not in values:
                values[spec.name] = NotMeasured(self.learned.reasons.get(spec.name, "not measured"))
        return values


class VFIDMetric:
    """Set provider: each clip's I3D activations (GT and output, stored with the clip's result), combined
    into the Frechet distance over the split."""

    specs = (VFID_SPEC,)

    def __init__(self, learned: LearnedMetrics):
        self.learned = learned

    def settings(self) -> dict[str, Any]:
        return {"name": "vfid", "version": 1, "i3d_sha256": self.learned.weights.get("i3d_path"),
                "not_measured": self.learned.reasons.get("vfid")}

    def features(self, gt: np.ndarray, output: np.ndarray, hole: np.ndarray) -> Any:
        if self.learned.i3d is None:
            return NotMeasured(self.learned.reasons.get("vfid", "not measured"))
        return {"gt": self.learned.i3d_activations(gt).tolist(), "output": self.learned.i3d_activations(output).tolist()}

    def combine(self, features: Sequence[Any]) -> dict[str, Any]:
        if len(features) < 2:
            return {"vfid": NotMeasured(f"VFID needs at least 2 clips, the split has {len(features)}")}
        real = np.array([f["gt"] for f in features], np.float64)
        fake = np.array([f["output"] for f in features], np.float64)
        try:
            return {"vfid": frechet_distance(real, fake)}
        except ValueError as exc:
            return {"vfid": NotMeasured(str(exc))}


def providers(learned: LearnedMetrics) -> tuple[LearnedClipMetrics, VFIDMetric]:
    return LearnedClipMetrics(learned), VFIDMetric(learned)

