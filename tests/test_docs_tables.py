"""The tables README.md and docs/ quote from a bench agree with what the bench writes: each table that follows a
`<!-- bench: python bench/NAME.py ... -->` (or `python -m bench.NAME`) line has the header columns of one of the
bench's tables (bench/NAME.py's HEADER, SUMMARY_HEADER, LOADER_HEADER, ...), in order, so that a bench whose output changes fails here until the docs are rerun."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BENCH_LINE = re.compile(r"<!-- bench: (?:\S+=\S+ )*python (?:bench/(\w+)\.py|-m bench\.(\w+))")


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def quoted_tables() -> list[tuple[str, str, str]]:
    """(where, bench name, header row) of every markdown table right under a bench line."""
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = BENCH_LINE.search(line)
            if m and i + 1 < len(lines) and lines[i + 1].startswith("|"):
                found.append((f"{path.name}:{i + 1}", m.group(1) or m.group(2), lines[i + 1]))
    return found


def expected_headers(bench: str) -> list[list[str]]:
    """The header columns of each table bench/NAME.py writes (its module's *HEADER constants)."""
    module = importlib.import_module(f"bench.{bench}")
    headers = [getattr(module, name) for name in dir(module) if name.endswith("HEADER")]
    assert headers, f"bench/{bench}.py has no HEADER: its quoted table cannot be checked"
    return [cells(h) if isinstance(h, str) else [c.strip() for c in h] for h in headers]


def contains(row: list[str], part: list[str]) -> bool:
    return any(row[i:i + len(part)] == part for i in range(len(row) - len(part) + 1))


def test_docs_quote_bench_tables():
    assert {bench for _, bench, _ in quoted_tables()} >= {"pareto", "robustness", "pipeline", "generate"}


@pytest.mark.parametrize("where, bench, header", quoted_tables())
def test_quoted_table_has_the_benchs_header(where, bench, header):
    wants = expected_headers(bench)
    assert any(contains(cells(header), want) for want in wants), \
        f"{where}: the table quoted from bench/{bench}.py has header {header!r}, the bench writes {wants}"


def test_a_changed_header_is_caught():
    assert not contains(cells("| model | choice | NDS |"), ["model", "NDS"])
    assert contains(cells("| frames | n | NDS full |"), ["n", "NDS full"])
