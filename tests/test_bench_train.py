"""bench/bench_train.py --memory full / gpu run through (at tiny sizes, on CPU) and print the tables
docs/training.md holds; skipped without a DiffuEraser checkout."""

from __future__ import annotations

import pytest

from helpers import load_bench
from model_fixtures import DE_REPO, needs_diffueraser

pytestmark = [needs_diffueraser(), pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")]


def test_memory_full_and_gpu_paths_run_at_tiny_size(capsys):
    from regdpo.backends.models_source import import_source
    from regdpo.backends.models_tiny import TINY

    mem = load_bench("bench_train_memory")
    source = import_source(DE_REPO)
    figures = mem.run_full(source, [2, 4], [64], TINY)
    out = capsys.readouterr().out
    for header in (mem.STATIC_HEADER, mem.SAVED_HEADER, mem.FITS_HEADER):
        assert header in out.splitlines()
    saved = figures["saved"]
    for tm in ("motion", "spatial", "both"):
        assert saved[(tm, "all", 4, 64, "bf16")]["saved"] < saved[(tm, "blocks", 4, 64, "bf16")]["saved"] \
            < saved[(tm, "off", 4, 64, "bf16")]["saved"]
        assert saved[(tm, "off", 4, 64, "fp32")]["saved"] > saved[(tm, "off", 4, 64, "bf16")]["saved"]
    gpu = mem.run_gpu(source, 2, 64, "motion", "all", "no", "cpu", TINY)
    assert gpu["peak"] is None and gpu["meta"]["calls"] > 0 and gpu["meta"]["saved"] > 0
    assert "not measured (no CUDA)" in capsys.readouterr().out
