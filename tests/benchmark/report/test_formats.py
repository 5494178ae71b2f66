"""Markdown, LaTeX and CSV renderings: same numbers as the table model, the caption carried along,
special characters escaped, LaTeX that compiles (checked structurally; compiled when pdflatex exists)."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess

import pytest
from rich.console import Console

from benchmark.report.formats import (
    Column,
    ReportTable,
    Stat,
    latex_escape,
    render_rich,
    render_text,
    rich_text,
    to_csv,
    to_latex,
    to_markdown,
)
from benchmark.report.tables import build_tables
from benchmark.results import store as results
from tests.benchmark.report.fixtures import paper_root


def _tricky() -> ReportTable:
    columns = [
        Column("setup", "text", "setup"),
        Column("merger", "text", "merger"),
        Column("λ", "text", "lambda"),
        Column("accuracy %", "pct", "accuracy"),
        Column("gain", "gain", "gain"),
    ]
    rows = [
        ["mtl_8", "task_arithmetic", "0.1–1·10", Stat(0.71234, 0.0123, 3), 0.05],
        ["mtl_8", "R&D|50% #1", "-", Stat(0.5), -0.0125],
        ["dg", "ties", "1", None, float("nan")],
    ]
    return ReportTable(
        "demo",
        "Demo_table & friends",
        columns,
        rows,
        "per trial: mean over tasks; 100% = expert",
        ["note with A* and 5%"],
        sections=1,
    )


def _data_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_markdown_has_one_table_per_section_with_alignment_caption_and_escapes():
    text = to_markdown([_tricky()])
    assert "### Demo_table & friends: mtl_8" in text and "### Demo_table & friends: dg" in text
    assert "| merger | λ | accuracy % | gain |" in text
    assert "|:---|:---|---:|---:|" in text
    assert "| task_arithmetic | 0.1–1·10 | 71.23 ± 1.23 | +5.00 |" in text
    assert "| R&D\\|50% #1 | - | 50.00 | -1.25 |" in text  # a pipe would split the cell
    assert "| ties | 1 | - | - |" in text
    assert text.count("*per trial: mean over tasks; 100% = expert*") == 1  # once, after the last section
    assert text.index("### Demo_table & friends: dg") < text.index("*per trial")
    assert "> note with A\\* and 5%" in text


def test_latex_escapes_specials_and_stays_ascii():
    assert latex_escape("task_arithmetic 50% R&D #1 $x$ {y} ~^\\") == (
        r"task\_arithmetic 50\% R\&D \#1 \$x\$ \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{}"
    )
    assert latex_escape("71.2 ± 0.3, λ=0.1–1·10, Δ") == r"71.2 $\pm$ 0.3, $\lambda$=0.1--1$\cdot$10, $\Delta$"
    assert latex_escape("ü") == "?"
    text = to_latex([_tricky()])
    assert text.isascii()
    assert r"task\_arithmetic & 0.1--1$\cdot$10 & 71.23 $\pm$ 1.23 & +5.00 \\" in text
    assert r"R\&D|50\% \#1 & - & 50.00 & -1.25 \\" in text
    assert r"\caption{Demo\_table \& friends. per trial: mean over tasks; 100\% = expert note with A* and 5\%}" in text
    assert "% aggregation: per trial: mean over tasks; 100\\% = expert" in text


def _check_latex_structure(text: str) -> int:
    """Environments balanced, braces balanced, every tabular row has as many cells as the column
    spec; returns the number of tabular rows checked."""
    assert text.count(r"\begin{table}") == text.count(r"\end{table}") >= 1
    assert text.count(r"\begin{tabular}") == text.count(r"\end{tabular}") == text.count(r"\begin{table}")
    unescaped = re.sub(r"\\[{}]", "", text)
    assert unescaped.count("{") == unescaped.count("}")
    checked = 0
    for block in re.findall(r"\\begin\{tabular\}\{([lrc]+)\}\n(.*?)\\end\{tabular\}", text, flags=re.S):
        spec, body = block
        for line in body.splitlines():
            if line == r"\hline":
                continue
            assert line.endswith(r" \\"), line
            multi = re.fullmatch(r"\\multicolumn\{(\d+)\}\{l\}\{.*\} \\\\", line)
            if multi:
                assert int(multi.group(1)) == len(spec)
            else:
                cells = re.split(r"(?<!\\)&", line[: -len(r" \\")])
                assert len(cells) == len(spec), line
            checked += 1
    return checked


def test_latex_of_every_paper_table_is_structurally_a_compilable_table(tmp_path):
    table = results.read_results(paper_root(tmp_path))
    tables, notes = build_tables(table, "all", ("model", "setup", "merger", "pooling", "variant"))
    assert not notes and len(tables) == 4
    text = to_latex(tables)
    assert text.isascii()
    n_rows = _check_latex_structure(text)
    assert n_rows >= sum(len(t.rows) for t in tables)
    for key in ("leaderboard", "weaving-gain", "pooling-ablation", "oracle"):
        assert f"\\label{{tab:ww-{key}}}" in text
    assert "uses test data" in text and r"oracle $\lambda$" in text
    assert _check_latex_structure(to_latex([_tricky()])) == 6  # header + 2 section rows + 3 rows


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed; structure is tested above")
def test_latex_compiles_with_pdflatex(tmp_path):
    table = results.read_results(paper_root(tmp_path))
    tables, _ = build_tables(table, "all", ("model", "setup", "merger", "pooling", "variant"))
    doc = "\\documentclass{article}\n\\begin{document}\n" + to_latex(tables + [_tricky()]) + "\\end{document}\n"
    (tmp_path / "t.tex").write_text(doc)
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 1000


def test_csv_carries_numbers_in_percent_std_columns_and_the_caption_as_comments():
    text = to_csv([_tricky()])
    lines = text.splitlines()
    assert lines[0] == "# table: demo — Demo_table & friends"
    assert lines[1] == "# aggregation: per trial: mean over tasks; 100% = expert"
    assert lines[2] == "# note: note with A* and 5%"
    rows = list(csv.reader(io.StringIO("\n".join(_data_lines(text)))))
    assert rows[0] == ["setup", "merger", "lambda", "accuracy", "accuracy_std", "gain"]
    assert rows[1] == ["mtl_8", "task_arithmetic", "0.1–1·10", "71.2340", "1.2300", "5.0000"]
    assert rows[2] == ["mtl_8", "R&D|50% #1", "-", "50.0000", "", "-1.2500"]  # one seed: no std
    assert rows[3] == ["dg", "ties", "1", "", "", ""]


def test_csv_of_a_paper_table_has_no_empty_std_columns(tmp_path):
    table = results.read_results(paper_root(tmp_path))
    (gain,), _ = build_tables(table, "weaving-gain", ())
    header, first = list(csv.reader(io.StringIO("\n".join(_data_lines(to_csv([gain]))))))[:2]
    assert not any(h.endswith("_std") for h in header)
    assert header[:5] == ["merger", "weaving", "s1_baseline", "s1_woven", "s1_gain"]
    assert first[:5] == ["ta", "avg A* (best on test data)", "20.0000", "50.0000", "30.0000"]


def test_rich_rendering_prints_each_section_with_the_caption():
    console = Console(record=True, width=200, color_system=None)
    render_rich([_tricky()], console)
    text = console.export_text()
    assert "Demo_table & friends: mtl_8" in text and "Demo_table & friends: dg" in text
    assert "71.23 ± 1.23" in text and "+5.00" in text
    assert text.count("per trial: mean over tasks; 100% = expert") == 1  # once, under the last section
    assert text.index("Demo_table & friends: dg") < text.index("per trial: mean over tasks")
    assert rich_text([_tricky()]) == render_text([_tricky()], "table")
    with pytest.raises(ValueError, match="unknown format 'html'.*markdown, latex, csv"):
        render_text([_tricky()], "html")
