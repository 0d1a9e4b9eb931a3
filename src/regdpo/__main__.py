"""``python -m regdpo``: the ``regdpo`` command."""

import sys

try:
    from . import interrupts

    interrupts.record_interrupts()
    from .cli import main
except BaseException as exc:  # Ctrl-C while Python loads the command (perhaps wrapped by a library): nothing started
    from .interrupts import exit_status, interrupt_behind

    if interrupt_behind(exc) is None:
        raise
    print("\nregdpo: interrupted", file=sys.stderr)
    sys.exit(exit_status(interrupt_behind(exc)))

sys.exit(main())
