"""LaTeX helpers of the generated tables: escaping, and tables that fit the text width of a default page.

A table wider than the page is split into column chunks (the label columns repeated in each), each chunk
scaled down to ``\\linewidth`` if it is still too wide and never scaled up; widths are estimated from the
characters of the cells at ``\\scriptsize``, and the scaling (graphicx) catches what the estimate misses.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

PACKAGES_NOTE = ("% needs in the preamble: \\usepackage{booktabs} (rules) and \\usepackage{graphicx} "
                 "(\\resizebox, which fits each table to \\linewidth)")
TEXT_WIDTH_PT = 345.0  # \textwidth of a default article page (10 pt, letter or a4)
CHAR_PT = 3.2          # the mean width of a character at \scriptsize (7 pt Computer Modern)
COLUMN_SEP_PT = 12.0   # 2 \tabcolsep
_COMMAND = re.compile(r"\\[a-zA-Z]+\{([^{}]*)\}")
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def escape_tex(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(char, char) for char in text)


def width_pt(texts: Sequence[str]) -> float:
    """Estimated width of a column holding ``texts`` (escaped TeX: commands count as their argument)."""
    visible = [_COMMAND.sub(r"\1", text).replace("\\", "") for text in texts]
    return max((len(text) for text in visible), default=0) * CHAR_PT + COLUMN_SEP_PT


def column_chunks(labels_pt: float, widths_pt: Sequence[float], budget_pt: float = TEXT_WIDTH_PT) -> list[list[int]]:
    """Consecutive column indices, as many per chunk as fit ``budget_pt`` beside the label columns (at least one)."""
    chunks: list[list[int]] = []
    used = budget_pt
    for index, width in enumerate(widths_pt):
        if not chunks or used + width > budget_pt:
            chunks.append([])
            used = labels_pt
        chunks[-1].append(index)
        used += width
    return chunks


def fit_to_width(tabular: str) -> str:
    """``tabular`` scaled down to ``\\linewidth`` when wider (graphicx), at its natural size otherwise."""
    return f"\\resizebox{{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}}{{!}}{{%\n{tabular.rstrip()}}}\n"


def table_float(table: pd.DataFrame, labels: int, caption: str, label: str, notes: Sequence[str]) -> str:
    """A ``table`` environment of ``table`` (escaped TeX cells; its first ``labels`` columns name the rows) in
    column chunks that fit the page, each without the rows that have no number in it, then ``notes``."""
    widths = [width_pt([*column, *table[column]]) for column in table.columns]
    parts = []
    for chunk in column_chunks(sum(widths[:labels]), widths[labels:]):
        part = table.iloc[:, [*range(labels), *(labels + i for i in chunk)]]
        part = part[(part.iloc[:, labels:] != "").any(axis=1)]
        parts.append(fit_to_width(part.to_latex(index=False, escape=False, multicolumn_format="c",
                                                column_format="l" * labels + "r" * len(chunk))))
    text = "".join(f"\\par {escape_tex(note)}\n" for note in notes)
    return (f"\\begin{{table}}[ht]\n\\centering\n\\caption{{{escape_tex(caption)}}}\n\\label{{{label}}}\n"
            "\\scriptsize\n" + "\\par\\medskip\n".join(parts)
            + (f"{{\\footnotesize\n{text}}}\n" if text else "") + "\\end{table}\n")
