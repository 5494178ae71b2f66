"""``run_bench.py report``: default leaderboard, tables × formats, --out, --figures, and one-line
usage errors with exit code 2."""

from __future__ import annotations

import csv
import hashlib
import io

import pytest

from benchmark.cli import main
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from tests.benchmark.report.fixtures import paper_root, write_trial


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps at the terminal width; keep one message on one line


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return paper_root(tmp_path_factory.mktemp("cli"))


def _snapshot(storage: StorageRoot) -> dict[str, str]:
    return {
        str(p.relative_to(storage.results)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in storage.results.rglob("*")
        if p.is_file()
    }


def test_default_report_is_the_leaderboard(root, capsys):
    assert main(["report", str(root.root)]) == 0
    out = capsys.readouterr().out
    assert "Leaderboard: m1 / s1" in out and "Leaderboard: m2 / s2" in out
    assert "oracle λ=1 (test data)" in out and "zeroshot" in out
    assert "per trial: mean over eval tasks" in out
    assert "Weaving gain" not in out


def test_all_tables_as_markdown_on_stdout(root, capsys):
    assert main(["report", str(root.root), "--table", "all", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    for title in (
        "### Leaderboard: m1 / s1",
        "### Weaving gain over the data-free baseline none (λ=1)",
        "### Pooling-function ablation: s1",
        "### Weaving vs the oracle λ (oracle uses test data): s1",
    ):
        assert title in out
    assert "| ties | avg A\\* (best on test data) | 45.00 | 53.00 | +8.00 |" in out


def test_csv_out_is_written_and_results_are_untouched(root, tmp_path, capsys):
    before = _snapshot(root)
    target = tmp_path / "reports" / "gain.csv"
    assert main(["report", str(root.root), "--table", "weaving-gain", "--format", "csv", "--out", str(target)]) == 0
    assert f"wrote weaving-gain (csv) to {target}" in capsys.readouterr().out
    lines = target.read_text().splitlines()
    assert lines[0].startswith("# table: weaving-gain") and lines[1].startswith("# aggregation: accuracy %")
    rows = list(csv.reader(io.StringIO("\n".join(line for line in lines if not line.startswith("#")))))
    assert rows[1][:5] == ["ta", "avg A* (best on test data)", "20.0000", "50.0000", "30.0000"]
    # written again with other content: replaced in place, no temp debris, results unchanged
    assert main(["report", str(root.root), "--table", "pooling-ablation", "--format", "csv", "--out", str(target)]) == 0
    assert target.read_text().startswith("# table: pooling-ablation")
    assert [p.name for p in target.parent.iterdir()] == ["gain.csv"]
    assert _snapshot(root) == before


def test_latex_out_and_figures(root, tmp_path, capsys):
    tex, figures = tmp_path / "t.tex", tmp_path / "figs"
    assert (
        main(
            [
                "report",
                str(root.root),
                "--table",
                "oracle",
                "--format",
                "latex",
                "--out",
                str(tex),
                "--figures",
                str(figures),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert r"\label{tab:ww-oracle}" in tex.read_text()
    names = sorted(p.name for p in figures.iterdir())
    assert names == ["best_lambda_m1.png", "lambda_curves_m1_s1.png"]
    assert all(f"wrote figure {figures / n}" in out for n in names)


def test_test_data_columns_are_labelled_in_every_format(root, capsys):
    r = str(root.root)
    expected = {
        "table": ["oracle λ (test data)", "weaving - oracle (test data)", "+weaving (avg A*)"],
        "markdown": [
            "| oracle λ (test data) | oracle (test data) | weaving - oracle (test data) |",
            "+weaving (avg A\\*)",
        ],
        "latex": [r"oracle $\lambda$ (test data) & oracle (test data) & weaving - oracle (test data)"],
        "csv": ["oracle_lambda_test_data,oracle_test_data,weaving_minus_oracle_test_data"],
    }
    for fmt, needles in expected.items():
        assert main(["report", r, "--table", "oracle", "--format", fmt]) == 0
        out = capsys.readouterr().out
        for needle in needles:
            assert needle in out, (fmt, needle)
    assert main(["report", r, "--table", "oracle", "--format", "csv", "--weaving", "randmix,collaborative"]) == 0
    assert "randmix A*, fixed before looking at results" in capsys.readouterr().out


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith("error:") and len(out.splitlines()) == 1, out
    return out


def test_usage_errors_are_one_line_with_exit_code_2(root, tmp_path, capsys):
    r = str(root.root)
    assert "valid: model, pretrained, setup" in _error(capsys, ["report", r, "--by", "merger,colour"])
    assert "no results under" in _error(capsys, ["report", str(tmp_path / "missing")])
    assert "inside the results dataset" in _error(capsys, ["report", r, "--out", str(root.results / "x.parquet")])
    assert "inside the results dataset" in _error(capsys, ["report", r, "--figures", str(root.results)])
    assert "is a directory" in _error(capsys, ["report", r, "--out", str(tmp_path)])
    assert "drop --by" in _error(capsys, ["report", r, "--table", "oracle", "--by", "merger"])
    assert "drop --weaving" in _error(capsys, ["report", r, "--table", "weaving-gain", "--weaving", "avg,plain"])
    assert "give POOLING,VARIANT" in _error(capsys, ["report", r, "--table", "oracle", "--weaving", "avg"])
    assert not (root.results / "x.parquet").exists()


def test_roots_without_usable_results_fail_clearly(tmp_path, capsys):
    empty = StorageRoot.at(tmp_path / "empty").ensure()
    assert "no finished trials" in _error(capsys, ["report", str(empty.root)])
    failed = StorageRoot.at(tmp_path / "failed").ensure()
    write_trial(failed, {"a": 0.0}, status="error", error="boom")
    assert "(1 error row(s))" in _error(capsys, ["report", str(failed.root)])
    fixed_only = StorageRoot.at(tmp_path / "fixed").ensure()
    write_trial(fixed_only, {"a": 0.5}, pooling="none")
    assert "oracle trials" in _error(capsys, ["report", str(fixed_only.root), "--table", "oracle"])
    assert results.read_results(fixed_only).num_rows == 1
