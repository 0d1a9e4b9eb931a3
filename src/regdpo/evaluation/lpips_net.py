"""LPIPS (Zhang et al. 2018) from the ``lpips`` package, without its download.

``lpips.LPIPS(net="alex")`` ships its linear calibration layers (``weights/v0.1/alex.pth``, inside
the wheel) but fetches the ImageNet AlexNet backbone from the torchvision hub. Here the backbone is
built without weights (``pnet_rand=True``, nothing is downloaded) and filled from ``--lpips_path``,
which is either

- torchvision's AlexNet checkpoint (``alexnet-owt-7be5be79.pth``, keys ``features.*`` /
  ``classifier.*``; what ``lpips`` would have downloaded to ``~/.cache/torch/hub/checkpoints``), or
- a whole ``lpips.LPIPS(net="alex").state_dict()`` saved with ``torch.save``.

Needs ``lpips`` (the ``[lpips]`` extra) and the torchvision build that matches torch; without them LPIPS is not measured.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

BATCH = 8
"""Frames per forward pass."""


class LPIPSDistance:
    """``video_distance``: LPIPS-Alex v0.1 between two clips, mean over frames (0 = identical)."""

    def __init__(self, model: torch.nn.Module, device: str):
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = device

    @torch.no_grad()
    def video_distance(self, gt: np.ndarray, output: np.ndarray) -> float:
        """``gt`` / ``output``: uint8 ``[T, H, W, 3]`` -> mean per-frame LPIPS of the whole frames."""
        values = []
        for start in range(0, len(gt), BATCH):
            a, b = (torch.from_numpy(np.ascontiguousarray(v[start:start + BATCH])).to(self.device)
                    .permute(0, 3, 1, 2).float() / 127.5 - 1 for v in (gt, output))
            values.append(self.model(a, b).flatten().double().cpu())
        return float(torch.cat(values).mean())


def backbone_state(state: dict) -> dict:
    """``lpips.LPIPS`` keys for a torchvision AlexNet state dict (``features.N`` -> ``net.sliceK.N``);
    a whole LPIPS state dict is returned as it is."""
    if any(k.startswith("net.slice") for k in state):
        return state
    if not any(k.startswith("features.") for k in state):
        raise ValueError("neither a torchvision AlexNet nor an LPIPS state dict")
    slices = {0: 1, 1: 1, 2: 2, 3: 2, 4: 2, 5: 3, 6: 3, 7: 3, 8: 4, 9: 4, 10: 5, 11: 5}  # lpips' split of features
    out = {}
    for key, value in state.items():
        if key.startswith("features."):
            index, rest = key[len("features."):].split(".", 1)
            out[f"net.slice{slices[int(index)]}.{index}.{rest}"] = value
    return out


def load_lpips(path: str | Path, device: str = "cpu") -> LPIPSDistance:
    """LPIPS-Alex with the backbone of ``path`` (see the module doc). Raises ``ImportError`` without
    ``lpips`` / torchvision, ``ValueError`` naming the file when its keys do not fit."""
    import lpips  # noqa: PLC0415 - optional ([lpips] extra)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated"
        model = lpips.LPIPS(pretrained=True, net="alex", version="0.1", pnet_rand=True, verbose=False)
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    wanted = backbone_state(state)
    own = model.state_dict()
    backbone = [k for k in own if k.startswith("net.")]
    missing = [k for k in backbone if k not in wanted]
    if missing:
        raise ValueError(f"{path}: no {missing[0]} (an AlexNet backbone is needed)")
    for key in wanted:
        if key in own and wanted[key].shape != own[key].shape:
            raise ValueError(f"{path}: {key} has shape {tuple(wanted[key].shape)}, not {tuple(own[key].shape)}")
    model.load_state_dict({k: v for k, v in wanted.items() if k in own}, strict=False)
    return LPIPSDistance(model, device)
