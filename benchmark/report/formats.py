"""Rendering report tables: rich (terminal), Markdown, LaTeX and CSV from one table model.

Every table is built once as a :class:`ReportTable` (typed cells, not strings) and rendered by each
format, so the numbers are identical everywhere and only the typography changes. Each format
carries the table's caption — the aggregation order — because the order changes the numbers
(a mean of per-task ratios is not the ratio of means) and a reader of an exported table has no
other way to know it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

FORMATS = ("table", "markdown", "latex", "csv")


@dataclass(frozen=True)
class Stat:
    """A measure kept as a fraction, with its spread over seeds when there are several."""

    mean: float
    std: float | None = None
    n: int = 1

    @property
    def missing(self) -> bool:
        return self.mean is None or math.isnan(self.mean)


#: What a column whose cells were chosen on the test sets carries in its header, in every format.
TEST_DATA_LABEL = " (test data)"


@dataclass(frozen=True)
class Column:
    """``kind``: text (str), pct (Stat shown ×100), gain (float fraction shown as signed points), int,
    ci (a ``(low, high)`` pair of fractions shown as a signed interval in points).

    ``test_data``: the column's cells were chosen by looking at test-set results (the oracle λ and
    everything computed from it). Its header then says so in every format — rich, Markdown and
    LaTeX show the label with " (test data)", CSV suffixes the key with ``_test_data`` — because an
    exported table travels without the notes of the terminal."""

    label: str
    kind: str = "text"
    key: str = ""
    test_data: bool = False

    @property
    def shown_label(self) -> str:
        if self.test_data and "test data" not in self.label:
            return self.label + TEST_DATA_LABEL
        return self.label

    @property
    def csv_key(self) -> str:
        key = self.key or self.label
        return key + "_test_data" if self.test_data and "test_data" not in key else key


@dataclass
class ReportTable:
    """One table of a report. The first ``sections`` columns split the display into blocks
    (one per distinct value, e.g. per model/setup) and are dropped from the block's columns;
    CSV keeps them as ordinary columns, because a CSV is read by programs, not people."""

    key: str
    title: str
    columns: list[Column]
    rows: list[list[Any]]
    caption: str
    notes: list[str] = field(default_factory=list)
    sections: int = 0
    styles: list[str | None] = field(default_factory=list)
    uses_test_data: bool = False

    def blocks(self) -> list[tuple[tuple, list[Column], list[tuple[list[Any], str | None]]]]:
        """(section values, columns, [(cells, style)]) in first-appearance order."""
        styles = self.styles or [None] * len(self.rows)
        out: dict[tuple, list] = {}
        for row, style in zip(self.rows, styles):
            out.setdefault(tuple(row[: self.sections]), []).append((row[self.sections :], style))
        return [(values, self.columns[self.sections :], rows) for values, rows in out.items()]


# ----------------------------------------------------------------------------------------- cells


def cell_text(value: Any, kind: str, show_std: bool = True) -> str:
    """Human text of a cell (Unicode; LaTeX translates it afterwards)."""
    if value is None:
        return "-"
    if kind == "pct":
        stat = value if isinstance(value, Stat) else Stat(float(value))
        if stat.missing:
            return "-"
        text = f"{100 * stat.mean:.2f}"
        if show_std and stat.std is not None and stat.n > 1:
            text += f" ± {100 * stat.std:.2f}"
        return text
    if kind == "gain":
        return "-" if math.isnan(value) else f"{100 * value:+.2f}"
    if kind == "ci":
        low, high = value
        return f"[{100 * low:+.2f}, {100 * high:+.2f}]"
    return str(value)


def _block_title(table: ReportTable, values: tuple) -> str:
    return f"{table.title}: {' / '.join(str(v) for v in values)}" if values else table.title


# ------------------------------------------------------------------------------------------ rich


def render_rich(tables: Iterable[ReportTable], console: Console) -> None:
    """Blocks one after the other, then the caption once (a rich caption would be wrapped to the
    width of each, often narrow, block and repeated under every one)."""
    for table in tables:
        for values, columns, rows in table.blocks():
            out = Table(title=_block_title(table, values))
            for col in columns:
                out.add_column(col.shown_label, justify="left" if col.kind == "text" else "right")
            for cells, style in rows:
                out.add_row(*(cell_text(v, c.kind) for v, c in zip(cells, columns)), style=style)
            console.print(out)
        console.print(table.caption, style="dim", highlight=False, markup=False)
        for note in table.notes:
            console.print(note, style="yellow", highlight=False, markup=False)


def rich_text(tables: Iterable[ReportTable], width: int = 200) -> str:
    """The rich rendering as plain text (for ``--out`` with ``--format table``)."""
    console = Console(file=io.StringIO(), record=True, width=width, color_system=None)
    render_rich(tables, console)
    return console.export_text()


# -------------------------------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def to_markdown(tables: Iterable[ReportTable]) -> str:
    parts = []
    for table in tables:
        for values, columns, rows in table.blocks():
            lines = [f"### {_md_escape(_block_title(table, values))}", ""]
            lines.append("| " + " | ".join(_md_escape(c.shown_label) for c in columns) + " |")
            lines.append("|" + "|".join(":---" if c.kind == "text" else "---:" for c in columns) + "|")
            for cells, _ in rows:
                lines.append("| " + " | ".join(_md_escape(cell_text(v, c.kind)) for v, c in zip(cells, columns)) + " |")
            parts.append("\n".join(lines))
        parts.append(f"*{_md_escape(table.caption)}*")
        parts += [f"> {_md_escape(note)}" for note in table.notes]
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------- LaTeX

#: Characters LaTeX treats specially, and the Unicode our cells use, as pdflatex-safe ASCII.
_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "λ": r"$\lambda$",
    "Λ": r"$\Lambda$",
    "Δ": r"$\Delta$",
    "θ": r"$\theta$",
    "τ": r"$\tau$",
    "·": r"$\cdot$",
    "×": r"$\times$",
    "÷": r"$\div$",
    "→": r"$\rightarrow$",
    "−": "-",
    "–": "--",
    "—": "---",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "≈": r"$\approx$",
    "’": "'",
    "‘": "`",
    "“": "``",
    "”": "''",
    "…": r"\dots{}",
    "⚠": "(!)",
}


def latex_escape(text: str) -> str:
    """Escape for pdflatex; any other non-ASCII character becomes ``?`` so the file always compiles."""
    return "".join(_LATEX.get(ch, ch if ord(ch) < 128 else "?") for ch in text)


def to_latex(tables: Iterable[ReportTable]) -> str:
    """One ``table`` float per report table, plain ``tabular`` with ``\\hline`` (no package needed);
    sections become full-width italic rows inside the tabular, as papers group setups."""
    parts = []
    for table in tables:
        columns = table.columns[table.sections :]
        spec = "".join("l" if c.kind == "text" else "r" for c in columns)
        caption = latex_escape(table.title) + ". " + latex_escape(table.caption)
        if table.notes:
            caption += " " + " ".join(latex_escape(n) for n in table.notes)
        lines = [
            f"% {latex_escape(table.title)}",
            f"% aggregation: {latex_escape(table.caption)}",
            "% plain tabular, no package needed; a wide table fits with table* or \\resizebox{\\linewidth}{!}{...}",
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            f"\\caption{{{caption}}}",
            f"\\label{{tab:ww-{table.key}}}",
            f"\\begin{{tabular}}{{{spec}}}",
            r"\hline",
            " & ".join(latex_escape(c.shown_label) for c in columns) + r" \\",
            r"\hline",
        ]
        for values, _, rows in table.blocks():
            if values:
                label = latex_escape(" / ".join(str(v) for v in values))
                lines.append(f"\\multicolumn{{{len(columns)}}}{{l}}{{\\textit{{{label}}}}} \\\\")
            for cells, _ in rows:
                lines.append(" & ".join(latex_escape(cell_text(v, c.kind)) for v, c in zip(cells, columns)) + r" \\")
            if values:
                lines.append(r"\hline")
        if lines[-1] != r"\hline":
            lines.append(r"\hline")
        lines += [r"\end{tabular}", r"\end{table}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------- CSV


def to_csv(tables: Iterable[ReportTable]) -> str:
    """Machine-readable: percentages as numbers, mean and std in separate columns, the caption as
    ``#`` comment lines (``pandas.read_csv(..., comment="#")`` skips them). Several tables are
    separated by a blank line and a ``# table:`` comment."""
    buffer = io.StringIO()
    first = True
    for table in tables:
        if not first:
            buffer.write("\n")
        first = False
        buffer.write(f"# table: {table.key} — {table.title}\n")
        buffer.write(f"# aggregation: {table.caption}\n")
        for note in table.notes:
            buffer.write(f"# note: {note}\n")
        writer = csv.writer(buffer, lineterminator="\n")
        # a std column only where some cell has a spread (leaderboards), not for tables of means
        with_std = [
            col.kind == "pct" and any(isinstance(row[i], Stat) and row[i].std is not None for row in table.rows)
            for i, col in enumerate(table.columns)
        ]
        header = []
        for col, std in zip(table.columns, with_std):
            if col.kind == "ci":  # an interval is two numbers: its bounds in points
                header += [f"{col.csv_key}_low", f"{col.csv_key}_high"]
            else:
                header += [col.csv_key, f"{col.csv_key}_std"] if std else [col.csv_key]
        writer.writerow(header)
        for row in table.rows:
            out = []
            for value, col, std in zip(row, table.columns, with_std):
                if col.kind == "pct":
                    stat = value if isinstance(value, Stat) else (None if value is None else Stat(float(value)))
                    out.append("" if stat is None or stat.missing else _num(100 * stat.mean))
                    if std:
                        out.append(
                            ""
                            if stat is None or stat.std is None or stat.missing or stat.n < 2
                            else _num(100 * stat.std)
                        )
                elif col.kind == "gain":
                    out.append("" if value is None or math.isnan(value) else _num(100 * value))
                elif col.kind == "ci":
                    out += ["", ""] if value is None else [_num(100 * value[0]), _num(100 * value[1])]
                else:
                    out.append("" if value is None else value)
            writer.writerow(out)
    return buffer.getvalue()


def _num(x: float) -> str:
    return f"{x:.4f}"


def render_text(tables: list[ReportTable], fmt: str) -> str:
    if fmt == "markdown":
        return to_markdown(tables)
    if fmt == "latex":
        return to_latex(tables)
    if fmt == "csv":
        return to_csv(tables)
    if fmt == "table":
        return rich_text(tables)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
