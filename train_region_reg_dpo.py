#!/usr/bin/env python
"""Region-Reg-DPO fine-tuning of DiffuEraser on a regdpo ``dpo_data`` folder.

Thin over ``regdpo.train.loop``; run it with ``accelerate launch`` for several GPUs. See
``python train_region_reg_dpo.py --help`` and docs/training.md.
"""

import sys
from pathlib import Path

try:
    from regdpo.train.loop import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from regdpo.train.loop import main

if __name__ == "__main__":
    sys.exit(main())
