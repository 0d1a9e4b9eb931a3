#!/usr/bin/env python
"""Generate DPO preference pairs (GT vs. flawed inpainting) for video inpainting.

Same flags as ``regdpo generate``; see ``python generate_dpo_negatives.py --help`` and docs/generate.md.
"""

import sys
from pathlib import Path

try:
    try:
        from regdpo import interrupts
    except ImportError:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
        from regdpo import interrupts
    interrupts.record_interrupts()  # a Ctrl-C that a library's import turns into another error is still one
    from regdpo.generate.cli import main
except BaseException as exc:  # Ctrl-C while Python loads the modules (perhaps wrapped by a library): nothing started
    behind = interrupts.interrupt_behind(exc) if "interrupts" in globals() else (
        exc if isinstance(exc, KeyboardInterrupt) else None)
    if behind is None:
        raise
    print("\ngenerate_dpo_negatives.py: interrupted", file=sys.stderr)
    sys.exit(interrupts.exit_status(behind) if "interrupts" in globals() else 130)

if __name__ == "__main__":
    sys.exit(main())
