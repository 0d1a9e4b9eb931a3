"""README's main job as a new user runs it: generate, then the loading block, verbatim, from a fresh folder.

The loading block needs `transformers` (the [models] extra) for `CLIPTokenizer`; the SD 1.5 tokenizer
folder it reads is stood in by a tiny real `CLIPTokenizer` saved where the block looks
(`weights/stable-diffusion-v1-5/tokenizer`). Without transformers (CI) the test skips, saying so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers import REPO

pytest.importorskip("transformers", reason="the README's loading block uses transformers.CLIPTokenizer ([models] extra)")


def _loading_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    block = next(b for b in blocks if "DPODataset(args, tokenizer)" in b)
    return block + "\nassert sample['pixel_values_pos'].shape[0] == 22 and sample['input_ids'].shape[-1] == 77\n"


def test_readme_generate_then_load_runs_as_written(tmp_path):
    from regdpo.backends.models_tiny import _text_model

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    gen = subprocess.run([sys.executable, str(REPO / "generate_dpo_negatives.py"), "--no_progress"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert gen.returncode == 0, gen.stderr
    _text_model(tmp_path / "weights" / "stable-diffusion-v1-5")  # where the block's from_pretrained looks
    run = subprocess.run([sys.executable, "-c", _loading_block()], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
