"""Every generated .tex compiles with pdflatex (booktabs, graphicx) on a default article page without overflowing
it, as a researcher would \\input it; skipped without pdflatex
(.ci/run installs Debian's texlive-latex-base and texlive-latex-recommended)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from benchmarks.evaluation.results import write_result
from benchmarks.reports import grids, latex, matching, tables
from benchmarks.reports.reported import load_all
from tests.test_tables import PAPER, toy_result

pytestmark = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")

DOCUMENT = r"""\documentclass{article}
\usepackage[T1]{fontenc}
\usepackage{booktabs}
\usepackage{graphicx}
\begin{document}
%s
\end{document}
"""


def compile_tex(folder: Path, names: list[str]) -> None:
    (folder / "all.tex").write_text(DOCUMENT % "\n".join(f"\\input{{{name}}}" for name in names), encoding="utf-8")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "all.tex"], cwd=folder,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    assert (folder / "all.pdf").stat().st_size > 1000
    log = (folder / "all.log").read_text(encoding="latin-1")
    assert "Overfull \\hbox" not in log, log[log.find("Overfull"):][:300]  # every table fits a default page


def test_committed_tables_compile(tmp_path):
    names = sorted(p.name for p in tables.TABLES_DIR.glob("*.tex"))
    assert "benchmark_embedded.tex" in names
    for name in names:
        shutil.copy(tables.TABLES_DIR / name, tmp_path / name)
    compile_tex(tmp_path, names)


def test_marks_footnotes_and_special_characters_compile(tmp_path):
    """The toy paper has every mark, deviation footnotes, and '&', '_' in its title."""
    (tmp_path / "reported").mkdir()
    (tmp_path / "reported" / "toy.yaml").write_text(yaml.safe_dump(PAPER), encoding="utf-8")
    write_result(toy_result("roxford5k", "revisited", {"map_medium": 0.6123, "map_hard": 0.3}, dim=512),
                 tmp_path / "results")
    files = tables.generate(load_all(tmp_path / "reported"), matching.load_results(tmp_path / "results"))
    assert r"\textsuperscript{1,2}" in files["toy.tex"]
    tables.write_files(tmp_path, {k: v for k, v in files.items() if k.endswith(".tex")}, prune=False)
    compile_tex(tmp_path, sorted(k for k in files if k.endswith(".tex")))


def test_a_wide_table_is_split_into_column_chunks_that_fit_the_page(tmp_path):
    grid = grids.Grid("wide", ("variant",))
    for i in range(12):
        cell = grid.cell(("resnet50, 2048-D",), (f"roxford5k+1m (crop {i})", "mAP M"))
        cell.reported, cell.confidence = 60.0 + i, "read_in_paper"
    grid.cell(("resnet101",), ("roxford5k+1m (crop 0)", "mAP M")).reproduced = 61.25
    tex = grids.grid_latex(grid, "tab:wide", "A wide table: reported / reproduced")
    widths = [latex.width_pt([f"roxford5k+1m (crop {i})", "mAP M"]) for i in range(12)]
    chunks = latex.column_chunks(latex.width_pt(["variant", "resnet50, 2048-D"]), widths)
    assert [len(chunk) for chunk in chunks] == [3, 3, 3, 3]  # each chunk fits 345 pt beside the label column
    assert tex.count(r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%") == 4  # never enlarged
    assert tex.count(r"\begin{tabular}{lrrr}") == 4 and tex.count("resnet50, 2048-D &") == 4  # labels repeated
    assert tex.count("resnet101 &") == 1  # a row without numbers in a chunk is left out of it
    assert tex.count(r"\caption{") == 1 and tex.count(r"\end{table}") == 1
    (tmp_path / "wide.tex").write_text(tex, encoding="utf-8")
    compile_tex(tmp_path, ["wide.tex"])
