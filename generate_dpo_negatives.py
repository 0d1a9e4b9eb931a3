#!/usr/bin/env python
"""Generate DPO preference pairs (GT vs. flawed inpainting) for video inpainting.

Same flags as ``regdpo generate``; see ``python generate_dpo_negatives.py --help`` and docs/generate.md.
"""

import sys
from pathlib import Path

try:
    try:
        from regdpo.generate.cli import main
    except ImportError:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
        from regdpo.generate.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python loads the modules: nothing has started
    print("\ngenerate_dpo_negatives.py: interrupted", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
