"""``regdpo manifest ROOT``: rebuild manifest.json from the per-video records."""

from __future__ import annotations

import argparse

import sys

from .progress import plural
from .writer import clear_staging, idle_lock, rebuild_manifest


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder (e.g. dpo_data)")
    parser.add_argument(
        "--keep-staging", action="store_true", help="do not remove the .staging/ leftovers of a killed run"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import FormatError

    if not Path(args.root).is_dir():
        raise FormatError(f"dataset root {args.root} does not exist or is not a folder")
    from .safe_io import check_writable

    check_writable(args.root, "dataset root")  # manifest.json is written there
    if not args.keep_staging:
        with idle_lock(args.root) as idle:  # .staging/ belongs to a running generator: never touched then
            if idle:
                clear_staging(args.root)
            else:
                print(f"{args.root}: a generator is running there; its .staging/ is left alone", file=sys.stderr)
    manifest = rebuild_manifest(args.root)
    d = manifest.to_dict()
    print(
        f"{args.root}/manifest.json: {plural(d['num_videos'], 'video')}, {plural(d['num_pairs'], 'pair')} "
        f"({', '.join(f'{k} {v}' for k, v in d['pairs_per_type'].items())}), "
        f"{len(manifest.failed)} failed, {len(manifest.skipped)} skipped"
    )
    return 0
