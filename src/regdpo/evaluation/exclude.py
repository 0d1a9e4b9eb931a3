"""``--exclude_evalset``: keep the sources of an eval set out of data generation and training.

A source is identified by its dataset kind and its id (``evalset.source_key``): the DAVIS sequence name,
the YouTube-VOS video id, or for ``--video_root`` the file's stem or the frame folder's name; the same pair
the generator records in every video's ``meta.json`` (``source.dataset``, ``source.id``) and the eval set in
``evalset.json``. The root folder a source was found under is not part of it, so a DAVIS copy elsewhere on
disk is still the same scene; a YouTube-VOS id is the same video in any split folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, TypeVar

from .. import format as fmt
from ..errors import FormatError
from .evalset import load_evalset, source_key

S = TypeVar("S")


def evalset_source_keys(path: str | Path, flag: str = "--exclude_evalset") -> set[str]:
    """The source keys of the eval set at ``path`` (every split)."""
    return load_evalset(path, flag).source_keys()


def without_evalset_sources(sources: Sequence[S], keys: set[str]) -> tuple[list[S], list[S]]:
    """(kept, excluded) of generator sources (``VideoSource``): excluded = those whose key is in ``keys``."""
    kept, excluded = [], []
    for s in sources:
        (excluded if source_key(s.dataset, s.source_id) in keys else kept).append(s)  # type: ignore[attr-defined]
    return kept, excluded


def manifest_without_sources(root: str | Path, manifest_path: str | Path | None,
                             keys: set[str]) -> tuple[fmt.Manifest, list[str], list[str]]:
    """(the manifest without the videos made from a source in ``keys``, their names, the names of videos whose
    ``meta.json`` records no source: kept, as nothing says they are eval clips)."""
    manifest = fmt.load_manifest(root, manifest_path)
    kept, excluded, unknown = [], [], []
    for entry in manifest.videos:
        try:
            source = fmt.read_video_meta(root, entry.name).source
        except (FormatError, OSError) as exc:
            raise FormatError(f"--exclude_evalset: cannot read the source of video {entry.name} ({exc})") from None
        if not source.get("dataset") or source.get("id") is None:
            unknown.append(entry.name)
            kept.append(entry)
        elif source_key(str(source["dataset"]), str(source["id"])) in keys:
            excluded.append(entry.name)
        else:
            kept.append(entry)
    return fmt.Manifest(kept, manifest.failed, manifest.skipped), excluded, unknown
