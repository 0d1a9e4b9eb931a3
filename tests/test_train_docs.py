"""docs/training.md's figure tables are the bench's output: same headers, same rows (runs in CI)."""

from __future__ import annotations

import re

from helpers import REPO, load_bench

DOC = (REPO / "docs" / "training.md").read_text()


def table(header: str) -> list[list[str]]:
    """The rows (cells) under ``header`` in docs/training.md."""
    lines = DOC.splitlines()
    assert header in lines, f"docs/training.md has no table headed {header!r}"
    i = lines.index(header)
    assert re.fullmatch(r"(\|---)+\|", lines[i + 1])
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    width = header.count("|") - 1
    assert rows and all(len(r) == width for r in rows)
    return rows


def test_speed_table_is_the_bench_table():
    bench = load_bench("bench_train")
    rows = table(bench.SPEED_HEADER)
    assert [r[0] for r in rows] == [c.replace("+", " + ").replace("_", " ") for c in bench.CONFIGURATIONS]
    assert "python bench/bench_train.py" in DOC


def test_memory_tables_are_the_bench_tables():
    mem = load_bench("bench_train_memory")
    static, saved, fits = table(mem.STATIC_HEADER), table(mem.SAVED_HEADER), table(mem.FITS_HEADER)
    assert {r[0] for r in static} == {r[0] for r in saved} == {r[0] for r in fits} == {"motion", "spatial", "both"}
    assert {r[1] for r in saved} == {"off", "blocks", "all"} and {r[1] for r in fits} == {"off", "all"}
    assert fits and all(r[3:] and all(c.isdigit() for c in r[3:]) for r in fits)
    assert [c.strip() for c in mem.FITS_HEADER.strip("|").split("|")[3:]] == [f"{c} GB" for c in mem.CARDS_GB]
    assert "4.85x fewer bytes" in DOC  # the full-size reference saving, as --memory full prints it
    assert "pending a GPU run" in DOC
