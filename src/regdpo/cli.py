"""The ``regdpo`` command.

Each subcommand lives in its own module exposing ``configure_parser(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``regdpo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from . import __version__
from .cli_types import OneLineParser
from .errors import DATA_EXIT, RegdpoError, Terminated, exit_code, os_error_line, out_of_space
from .interrupts import exit_status, run_interruptible, sigterm_as_interrupt
from .progress import setup_cli_logging

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("regdpo.generate.cli", "generate GT/mask/negative clips into a dpo_data folder"),
    "launch": ("regdpo.launch", "one generate worker per GPU on this machine, one progress line, one manifest"),
    "manifest": ("regdpo.manifest_cli", "rebuild dpo_data/manifest.json from the per-video records"),
    "audit": ("regdpo.audit.cli", "measure that every negative shows its defect (audit.json, audit.html)"),
    "preview": ("regdpo.audit.preview", "side-by-side preview clips and a contact sheet"),
    "select": ("regdpo.curate.select_cli", "keep per source clip the negatives of medium difficulty "
               "(manifest.selected.json)"),
    "prune": ("regdpo.curate.prune", "delete the candidate negatives that `regdpo select` left out"),
    "verify": ("regdpo.verify", "decode every file of every video and check the format's invariants "
               "(and checksums); of a packed dataset, every shard"),
    "pack": ("regdpo.pack", "a dataset (or a selection) as tar shards, one sample per source clip, for training at "
             "scale"),
    "unpack": ("regdpo.unpack", "a packed dataset back into dpo_data folders (pixel-identical)"),
    "score": ("regdpo.train.score_cli", "the reference model's margin per pair (score.json, for regdpo select)"),
    "evalset": ("regdpo.evaluation.evalset_cli", "freeze an evaluation set: clips and masks by source video, "
                "split by scene, every file hashed (evalset.json)"),
    "eval": ("regdpo.evaluation.cli", "compare models on an eval set with paired statistics (eval.json, eval.html)"),
    "export": ("regdpo.train.export", "a training checkpoint-N folder as DiffuEraser weights (unet_main/, brushnet/)"),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(  # one-line usage errors, for every subcommand too (their parsers are of this class)
        prog="regdpo", description="Build preference-pair (DPO) datasets for video inpainting (DiffuEraser)."
    )
    parser.add_argument("--version", action="version", version=f"regdpo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.command_parsers = {}  # name -> its parser, for the subcommand's usage on a bad flag
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        parser.command_parsers[name] = p
        if name == wanted:  # only the chosen command's module is imported
            importlib.import_module(module).configure_parser(p)
    return parser


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    options: set[str] = set()
    for action in parser._actions:
        options.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= _long_options(sub)
    return options


def normalize_flag_spelling(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """Accept ``--max-videos`` for ``--max_videos`` and the reverse.

    ``generate`` keeps the PRD's underscore flags (users run them verbatim), ``audit`` and
    ``preview`` use dashes; either spelling works everywhere. A flag is rewritten only when
    it is unknown as typed and known in the other spelling.
    """
    known = _long_options(parser)
    out: list[str] = []
    for i, token in enumerate(argv):
        if token == "--":
            return out + list(argv[i:])
        if token.startswith("--"):
            flag, eq, value = token.partition("=")
            if flag not in known:
                for other in ("--" + flag[2:].replace("-", "_"), "--" + flag[2:].replace("_", "-")):
                    if other in known:
                        token = other + eq + value
                        break
        out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    return run_interruptible(lambda: _run_command(argv), "regdpo")


def _run_command(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(normalize_flag_spelling(argv, parser))
    if unknown:  # the subcommand's usage, not the top level's
        parser.command_parsers.get(args.command, parser).unknown_arguments(unknown)
    if args.command is None:
        parser.print_help()
        return 2
    setup_cli_logging()
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        with sigterm_as_interrupt():
            return int(module.run(args) or 0)
    except RegdpoError as exc:
        print(f"regdpo {args.command}: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:  # the file system refused (read-only, no permission, a file in the way): a data error
        if not exc.filename and out_of_space(exc):  # a write that names no file (a library's own writer)
            print(f"regdpo {args.command}: error: out of disk space or over a file-size limit ({exc.strerror}); "
                  f"free space and run it again", file=sys.stderr)
            return DATA_EXIT
        if not exc.filename:
            raise  # not about a path the user can fix: a bug, keep its traceback
        print(f"regdpo {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return DATA_EXIT
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: files are written atomically, temporaries removed
        print(f"\nregdpo {args.command}: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}",
              file=sys.stderr)
        return exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
