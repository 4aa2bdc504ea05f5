"""The generator of the docs' benchmark figures fills every block and refuses broken ones."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import docs_tables


def test_an_empty_block_is_filled_with_the_indentation_of_its_marker():
    page = "text\n  <!-- bench:world -->\n  <!-- /bench:world -->\nmore\n"
    out = docs_tables.render(page)
    lines = out.splitlines()
    assert lines[0] == "text" and lines[-1] == "more"
    assert lines[1] == "  <!-- bench:world -->" and lines[-2] == "  <!-- /bench:world -->"
    assert len(lines) > 4 and all(line.startswith("  ") for line in lines[2:-2])
    assert "env steps/s" in out
    assert docs_tables.render(out) == out  # rendering is stable: --check passes on a rendered page


def test_unclosed_and_unknown_blocks_are_errors():
    with pytest.raises(SystemExit, match="not closed"):
        docs_tables.render("<!-- bench:world -->\nno end\n")
    with pytest.raises(SystemExit, match="unknown bench block 'nope'"):
        docs_tables.render("<!-- bench:nope -->\n<!-- /bench:nope -->\n")
