"""README's theorem table stays in step with what `refimpl verify` runs (proofs.THEOREMS)."""

import pathlib
import re

import proofs

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _table_names():
    text = README.read_text()
    section = text.split("## Theorems (`refimpl verify`)", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+\.[A-Za-z0-9_]+)`", section, re.M)


def test_every_registered_theorem_has_a_row_and_every_row_is_registered():
    rows = _table_names()
    names = [t.name for t in proofs.THEOREMS]
    assert sorted(set(rows)) == sorted(rows), "duplicate rows in README's theorem table"
    assert [n for n in names if n not in rows] == [], "registered theorems missing from README's table"
    assert [r for r in rows if r not in names] == [], "README rows that `refimpl verify` does not run"


def test_readme_mentions_the_two_setup_commands():
    text = README.read_text()
    assert "make verify" in text and "make test" in text


def test_theorem_table_is_what_verify_markdown_prints(capsys):
    """Issue 19: `refimpl verify --markdown` gave 3 columns where README has 4; README's table is
    now exactly its output (regenerate: `python -m refimpl verify --markdown`)."""
    from refimpl.cli import main

    assert main(["verify", "--markdown"]) == 0
    md = capsys.readouterr().out.strip()
    assert md.splitlines()[0].count("|") == 5
    assert md in README.read_text(), "README's theorem table differs from `refimpl verify --markdown`"
