"""The wheel ships only the ``regdpo`` package: a top-level ``dataset`` package would shadow the
``dataset/`` folder of the user's own training repository."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_wheel_holds_only_the_regdpo_package(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("regdpo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"regdpo"}
    assert "regdpo/regions.py" in names and "regdpo/py.typed" in names
    assert not any(n.startswith(("dataset/", "tests/", "bench/")) for n in names)
