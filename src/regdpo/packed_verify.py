"""``regdpo verify OUT`` of a packed dataset (``OUT/index.json``, ``regdpo pack``): every shard, every sample.

Per shard, streamed once: present with the size ``index.json`` records, reads as a tar to its end, holds
exactly the samples the index lists, and its SHA-256 is the recorded one. Per sample: a valid clip record,
every member it implies (GT, mask and crop frames) and nothing else, every PNG decoded in full (chunk CRCs
checked), masks grey 0 / 255, each entry's boxes the bounding boxes of its masks' holes, each crop of its
box's size and equal to the GT outside the hole. One line per problem, naming the shard (and the sample and
member); a damaged shard is one line. Exit 1 when anything is wrong.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import format as fmt
from . import packed_format as pf
from .errors import FormatError
from .json_io import read_json
from .png_check import UnusablePNG, decode_png
from .progress import plural
from .shard_io import HashingReader, PackedSample, is_url, iter_raw_samples, join, open_binary, read_index


def check_sample(sample: PackedSample) -> list[str]:
    """The problems of one sample's pixels (members are already known present): one line each."""
    problems: list[str] = []
    record = sample.record
    size = (record["width"], record["height"])

    def decoded(member: str, mode: str) -> np.ndarray | None:
        try:
            got_mode, pixels = decode_png(sample.member(member), size if mode != "crop" else None)
        except UnusablePNG as exc:
            problems.append(f"{sample.where}: {sample.key}.{member}: {exc}")
            return None
        want = "RGB" if mode in ("RGB", "crop") else "L"
        if got_mode != want:
            problems.append(f"{sample.where}: {sample.key}.{member}: mode {got_mode}, expected {want}")
            return None
        return pixels

    gts = [decoded(pf.gt_member(t), "RGB") for t in range(record["num_frames"])]
    for k, entry in enumerate(sample.entries):
        meta: fmt.VideoMeta = entry["video"]
        for t in range(record["num_frames"]):
            mask = decoded(pf.mask_member(k, t), "L")
            if mask is None:
                continue
            if not np.isin(mask, (0, fmt.MASK_HOLE_VALUE)).all():
                problems.append(f"{sample.where}: {sample.key}.{pf.mask_member(k, t)}: mask is not binary 0 / 255")
                continue
            hole = mask != 0
            box = entry["boxes"][t]
            if pf.hole_box(hole) != box:
                problems.append(f"{sample.where}: entry {meta.name} frame {t}: box {box} is not the hole's "
                                f"bounding box {pf.hole_box(hole)}")
                continue
            if box is None or gts[t] is None:
                continue
            for stream in meta.streams:
                member = pf.crop_member(k, stream.stream, t)
                patch = decoded(member, "crop")
                if patch is None:
                    continue
                if patch.shape[:2] != (box[1] - box[0], box[3] - box[2]):
                    problems.append(f"{sample.where}: {sample.key}.{member}: {patch.shape[1]}x{patch.shape[0]}, "
                                    f"its box is {box[3] - box[2]}x{box[1] - box[0]}")
                    continue
                differs = np.any(patch != pf.crop(gts[t], box), axis=-1) & ~pf.crop(hole, box)
                if differs.any():
                    problems.append(f"{sample.where}: {sample.key}.{member}: differs from the GT at "
                                    f"{int(differs.sum())} pixel(s) outside the hole")
    return problems


def verify_shard(location: str, shard: dict[str, Any]) -> list[str]:
    """Every check of one shard listed in the index; the problems, one line each, naming the shard."""
    name = shard["name"]
    url = join(location, name)
    try:
        stream = HashingReader(open_binary(url))
    except FileNotFoundError:
        return [f"{name}: missing (index.json lists it)"]
    except OSError as exc:
        return [f"{name}: cannot read ({exc.strerror or exc})"]
    problems: list[str] = []  # the samples'
    listed = {s["key"]: s for s in shard["samples"]}
    seen: list[str] = []
    try:
        for raw in iter_raw_samples(stream, url):
            key = str(raw.get("__key__"))
            seen.append(key)
            try:
                sample = PackedSample.from_raw(raw, name)
            except FormatError as exc:
                problems.append(str(exc))
                continue
            want = listed.get(key)
            if want is None:
                problems.append(f"{name}: sample {key} is not listed in index.json")
                continue
            if pf.index_sample(sample.record) != want:
                problems.append(f"{name}: sample {key} differs from its index.json record")
            problems += check_sample(sample)
        stream.drain()
        damage = None
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        damage = (f"truncated or damaged tar after {plural(len(seen), 'sample')} ({str(exc).split(' @ ')[0]}); "
                  f"repack it (regdpo pack)")
    finally:
        stream.close()
    if damage is None and stream.nbytes != shard["bytes"]:
        damage = f"{stream.nbytes} bytes, index.json records {shard['bytes']} (truncated or replaced)"
    elif damage is None and stream.sha256.hexdigest() != shard["sha256"]:
        damage = "SHA-256 differs from index.json (changed or damaged since it was packed)"
    absent = [k for k in listed if k not in seen]
    if damage is None and absent:
        damage = f"{plural(len(absent), 'sample')} of index.json absent (first {absent[0]})"
    if damage is not None:  # the shard as a whole: one line (what its samples showed is a consequence)
        first = f"; {plural(len(problems), 'sample problem')}, first: {problems[0]}" if problems else ""
        return [f"{name}: {damage}{first}"]
    return problems


def verify_packed(location: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Verify a packed dataset; returns the report (``--json``)."""
    index = read_index(location)
    problems: list[str] = []
    bad: list[str] = []
    if not is_url(location) and (Path(location) / pf.PACK_WORK_DIR).exists():
        line = f"{pf.PACK_WORK_DIR}: an unfinished pack is there (run regdpo pack ... --resume)"
        problems.append(line)
        log(line)
    for shard in index["shards"]:
        found = verify_shard(location, shard)
        for line in found:
            log(line)
        problems += found
        if found:
            bad.append(shard["name"])
    return {"root": location, "packed": True, "shards": len(index["shards"]), "shards_with_problems": bad,
            "samples": index["num_samples"], "pairs": index["num_pairs"], "problems": problems}


def summary(result: dict[str, Any]) -> str:
    return (f"{result['root']}: packed dataset, {plural(result['shards'], 'shard')} verified "
            f"({plural(result['samples'], 'sample')}, {plural(result['pairs'], 'pair')}), "
            f"{result['shards'] - len(result['shards_with_problems'])} ok, "
            f"{len(result['shards_with_problems'])} with problems, {plural(len(result['problems']), 'problem')}")


def looks_packed(root: Path) -> bool:
    path = root / pf.INDEX_FILE
    if not (path.is_file() or path.is_symlink() or path.exists()):  # a FIFO or a link there: reported below
        return False
    try:
        return pf.is_packed(read_json(path))
    except (OSError, ValueError):  # (a FormatError is a ValueError)
        return True  # an unreadable index.json: let the packed path report it
