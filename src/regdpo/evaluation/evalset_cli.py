"""``regdpo evalset OUT``: freeze an evaluation set (clips, masks, ``evalset.json`` with every file's SHA-256)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli_types import MAX_FPS, MAX_FRAMES, MAX_SIDE, integer, real
from ..errors import UsageError
from ..progress import plural
from ..safe_io import check_writable

DESCRIPTION = """\
Freeze an evaluation set: one clip per source video (a scene is in one split only), its GT frames and
masks as lossless PNG, and OUT/evalset.json listing every clip, its split, its source and the SHA-256 of
every file. Default protocol: ProPainter's (432 x 240, 24 frames, stationary masks). `regdpo generate`
and train_region_reg_dpo.py take --exclude_evalset OUT to never use these sources; `regdpo eval OUT`
compares models on it. See docs/evaluation.md.
"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("out", type=Path, metavar="OUT", help="folder to create (must not exist)")
    src = parser.add_argument_group("sources (as `regdpo generate`; none = the embedded sample videos)")
    src.add_argument("--davis_root", type=Path, help="DAVIS 2017 folder (JPEGImages/480p/<seq>/*.jpg)")
    src.add_argument("--davis_split", help="only the sequences of ImageSets/2017/<split>.txt (e.g. val)")
    src.add_argument("--ytvos_root", type=Path, help="YouTube-VOS folder")
    src.add_argument("--ytvos_split", default="train", help="YouTube-VOS split (default: %(default)s)")
    src.add_argument("--video_root", type=Path, help="folder of video files and/or frame folders")
    src.add_argument("--assumed_fps", type=real(None, MAX_FPS), default=30.0,
                     help="frame rate of frame folders and of files that report none (recorded only)")
    proto = parser.add_argument_group("protocol")
    proto.add_argument("--split", action="append", default=[], metavar="NAME:N",
                       help="a split of N clips, e.g. --split dev:5 --split test:20 (each source in one split)")
    proto.add_argument("--masks", type=Path, default=None, metavar="FOLDER",
                       help="your masks instead of seeded stationary ones: FOLDER/<source id>/*.png in frame "
                       "order, white = hole (one image = the same mask for every frame); only sources with a "
                       "mask folder are used")
    proto.add_argument("--nframes", type=integer(2, MAX_FRAMES), default=24, help="frames per clip (default 24)")
    proto.add_argument("--height", type=integer(8, MAX_SIDE), default=240, help="clip height, a multiple of 8 "
                       "(default 240)")
    proto.add_argument("--width", type=integer(8, MAX_SIDE), default=432, help="clip width, a multiple of 8 "
                       "(default 432)")
    proto.add_argument("--seed", type=integer(0, 2**31 - 1), default=0, help="which sources go to which split, "
                       "clip starts and masks (default 0)")
    parser.add_argument("--no_progress", action="store_true", help="no per-clip lines")


def run(args: argparse.Namespace) -> int:
    from ..generate.sources import discover_sources, input_folder
    from .evalset_build import Protocol, build_evalset, parse_splits

    splits = parse_splits(args.split)
    for flag in ("height", "width"):
        if getattr(args, flag) % 8:
            raise UsageError(f"--{flag} {getattr(args, flag)}: must be a multiple of 8 (DiffuEraser's VAE)")
    out = Path(args.out)
    if out.exists() or out.is_symlink():
        raise UsageError(f"OUT {out}: already exists; an eval set is frozen once made (choose a new folder)")
    masks = input_folder(args.masks, "--masks") if args.masks is not None else None
    if args.davis_split is not None and args.davis_root is None:
        raise UsageError(f"--davis_split {args.davis_split} needs --davis_root")
    check_writable(out.parent, "OUT's folder")
    sources = discover_sources(args.davis_root, args.davis_split, args.ytvos_root, args.ytvos_split,
                               args.video_root, args.assumed_fps)
    protocol = Protocol(nframes=args.nframes, height=args.height, width=args.width, seed=args.seed,
                        masks_folder=masks)

    def log(line: str) -> None:
        if not args.no_progress:
            print(f"regdpo evalset: {line}", file=sys.stderr, flush=True)

    data = build_evalset(out, sources, splits, protocol, log=log)
    per_split = ", ".join(f"{name} {sum(c['split'] == name for c in data['clips'])}" for name, _ in splits)
    print(f"{out}: {plural(len(data['clips']), 'clip')} ({per_split}) of {args.width}x{args.height}, "
          f"{args.nframes} frames, {protocol.to_dict()['masks']} masks; "
          f"{plural(len(data['skipped']), 'source')} skipped")
    return 0
