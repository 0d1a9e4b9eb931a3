"""Training-script entry points kept at the paths users import (``dataset.dpo_dataset``,
``dataset.region_mask_utils``). Not part of the installed wheel: the code lives in ``regdpo``.
This file only makes ``dataset`` a regular package in this checkout, so that an unrelated
installed package named ``dataset`` cannot shadow it."""
