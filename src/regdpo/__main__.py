"""``python -m regdpo``: the ``regdpo`` command."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while Python loads the command: nothing has started
    print("\nregdpo: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
