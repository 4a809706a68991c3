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


def test_every_python_block_runs_in_order_in_one_fresh_interpreter():
    """Issue 19: README's python blocks ran only in the reader's head (an undefined my_fa_updates,
    ce on the tour's regression y, a 4-column x for a 30-input net, `...` in the SCG block). They
    now run as written, in order, in one fresh interpreter; and the training figures the text
    quotes (seed 0, 20 epochs: BP 0.969, FA 0.953 on digits) are what block 7 / its BP twin give."""
    import os
    import subprocess
    import sys

    pytest = __import__("pytest")
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    pytest.importorskip("array_api_strict")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 10
    script = "\n".join(f"exec(compile({b!r}, 'README python block {i}', 'exec'))" for i, b in enumerate(blocks))
    script += (
        "\nfa_acc = history[-1]['test_accuracy']"
        "\nnet_bp = ri.Network.init([64, 64, 64, 10], activation='tanh', seed=0)"
        "\n_, _, hb = train(get_rule('bp', loss='ce'), net_bp, data, optimizer=ri.optim.Adam(lr=1e-3), epochs=20,"
        " batch_size=32, seed=0, angles=False)"
        "\nprint(f'FIGURES bp={hb[-1][\"test_accuracy\"]:.3f} fa={fa_acc:.3f}')\n")
    root = README.parent
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    bp, fa = re.search(r"FIGURES bp=([0-9.]+) fa=([0-9.]+)", r.stdout).groups()
    assert f"BP {bp} and FA {fa} test accuracy" in README.read_text(), (bp, fa)
