"""Full decoding of a stored PNG for ``regdpo verify`` (folders) and its packed counterpart: every chunk's
CRC checked, the whole body decoded, the size compared; a failure is ``UnusablePNG`` with the reason."""

from __future__ import annotations

import io

import numpy as np


class UnusablePNG(Exception):
    """A PNG that cannot be used: its message says why (one line, no file name: the caller adds it)."""


def decode_png(data: bytes, size: tuple[int, int] | None) -> "tuple[str, np.ndarray]":
    """(mode, pixels) of PNG bytes decoded in full, checking every chunk's CRC; ``UnusablePNG`` if it is not a
    complete PNG of ``size`` (width, height; ``None``: any)."""
    from PIL import Image

    if not data:
        raise UnusablePNG("empty file (0 bytes)")
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise UnusablePNG("not a PNG file (placeholder or other format)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if size is not None and img.size != size:
                raise UnusablePNG(f"is {img.size[0]}x{img.size[1]}, expected {size[0]}x{size[1]}")
            img.verify()  # chunk CRCs
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # the whole body: a truncated or corrupt one raises
            return img.mode, np.asarray(img)
    except UnusablePNG:
        raise
    except Exception as exc:  # PIL raises several types for broken files
        raise UnusablePNG(f"does not decode ({exc})") from None
