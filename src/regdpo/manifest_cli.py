"""``regdpo manifest ROOT``: rebuild manifest.json from the per-video records."""

from __future__ import annotations

import argparse

from .writer import clear_staging, rebuild_manifest


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder (e.g. dpo_data)")
    parser.add_argument(
        "--keep-staging", action="store_true", help="do not remove the .staging/ leftovers of a killed run"
    )


def run(args: argparse.Namespace) -> int:
    if not args.keep_staging:
        clear_staging(args.root)
    manifest = rebuild_manifest(args.root)
    d = manifest.to_dict()
    print(
        f"{args.root}/manifest.json: {d['num_videos']} videos, {d['num_pairs']} pairs "
        f"({', '.join(f'{k} {v}' for k, v in d['pairs_per_type'].items())}), "
        f"{len(manifest.failed)} failed, {len(manifest.skipped)} skipped"
    )
    return 0
