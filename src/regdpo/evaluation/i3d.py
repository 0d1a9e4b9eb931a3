"""The Inception-v1 I3D network (Carreira & Zisserman 2017) as the video-inpainting VFID uses it.

The published VFID figures (FuseFormer, E2FGVI, ProPainter) come from ProPainter's ``core/metrics.py``:
the RGB I3D of ``i3d_rgb_imagenet.pt``, fed one clip at a time as RGB in [0, 1] (no mean/std
normalisation), and read out as the mean over time, height and width of the last inception block
(``Mixed_5c``, 1024 values per clip). Two details decide the numbers and are kept here on purpose:

- TensorFlow "SAME" padding, computed from each input's size, before every convolution and max pool;
  zeros are padded, also before the max pools;
- the network is never switched to inference mode there (``init_i3d_model`` does not call ``eval()``),
  so every BatchNorm normalises with the statistics of the clip itself (batch of one) and the running
  statistics stored in the file are unused. :class:`I3DFeatures` does the same (without updating
  the stored statistics), so its activations equal theirs on the same weights.

This is our own definition of that architecture: the parameter names follow the checkpoint's, so
``i3d_rgb_imagenet.pt`` loads strictly (its ``logits.*`` classifier, which the features never reach,
is dropped).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 1024
"""Values per clip: the channels of ``Mixed_5c``."""

BN_EPS = 1e-3

# (name, input channels, branch widths: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | pool -> 1x1) of each inception block
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def same_padding(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad ``x [B, C, T, H, W]`` as TensorFlow's "SAME" does for ``kernel`` / ``stride``
    (the smaller half before, the larger after)."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):
        total = max(k - (s if size % s == 0 else size % s), 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class ConvBN(nn.Module):
    """Convolution (no bias) -> BatchNorm with the input's own statistics -> ReLU, "SAME" padded."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, padding=0, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=BN_EPS, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(same_padding(x, self.conv3d.kernel_size, self.conv3d.stride))
        x = F.batch_norm(x, None, None, self.bn.weight, self.bn.bias, training=True, eps=self.bn.eps)
        return F.relu(x)


class SameMaxPool(nn.Module):
    """Max pool after zero "SAME" padding."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(same_padding(x, self.kernel, self.stride), self.kernel, self.stride)


class Mixed(nn.Module):
    """One inception block: four branches concatenated along the channels."""

    def __init__(self, cin: int, widths: tuple[int, ...]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = ConvBN(cin, w0)
        self.b1a, self.b1b = ConvBN(cin, w1a), ConvBN(w1a, w1b, (3, 3, 3))
        self.b2a, self.b2b = ConvBN(cin, w2a), ConvBN(w2a, w2b, (3, 3, 3))
        self.b3a, self.b3b = SameMaxPool((3, 3, 3), (1, 1, 1)), ConvBN(cin, w3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class I3DFeatures(nn.Sequential):
    """RGB I3D up to ``Mixed_5c``; :meth:`clip_features` is the VFID activation of one clip."""

    def __init__(self) -> None:
        layers: list[tuple[str, nn.Module]] = [
            ("Conv3d_1a_7x7", ConvBN(3, 64, (7, 7, 7), (2, 2, 2))),
            ("MaxPool3d_2a_3x3", SameMaxPool((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", ConvBN(64, 64)),
            ("Conv3d_2c_3x3", ConvBN(64, 192, (3, 3, 3))),
            ("MaxPool3d_3a_3x3", SameMaxPool((1, 3, 3), (1, 2, 2))),
        ]
        for name, (cin, widths) in _MIXED.items():
            if name == "Mixed_4b":
                layers.append(("MaxPool3d_4a_3x3", SameMaxPool((3, 3, 3), (2, 2, 2))))
            if name == "Mixed_5b":
                layers.append(("MaxPool3d_5a_2x2", SameMaxPool((2, 2, 2), (2, 2, 2))))
            layers.append((name, Mixed(cin, widths)))
        super().__init__(OrderedDict(layers))

    @torch.no_grad()
    def clip_features(self, frames: np.ndarray) -> np.ndarray:
        """``frames``: uint8 RGB ``[T, H, W, 3]`` -> float32 ``[1024]`` (mean of ``Mixed_5c``)."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"I3D expects uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
        device = next(self.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
        x = x.permute(3, 0, 1, 2).unsqueeze(0).float().div(255)  # [1, 3, T, H, W] in [0, 1]
        return self(x).mean(dim=(2, 3, 4))[0].float().cpu().numpy()


def load_i3d(path: str | Path, device: str | torch.device = "cpu") -> I3DFeatures:
    """The network with the weights of ``path`` (ProPainter's ``i3d_rgb_imagenet.pt`` layout).

    Raises ``ValueError`` naming the file when it is not such a checkpoint."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not an I3D state dict")
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    net = I3DFeatures()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{path}: not an RGB I3D checkpoint of ProPainter's layout ({first})") from exc
    return net.to(device).requires_grad_(False)
