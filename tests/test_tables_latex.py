"""Every generated .tex compiles with pdflatex (booktabs), as a researcher would \\input it; skipped without pdflatex
(.ci/run installs Debian's texlive-latex-base and texlive-latex-recommended)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from benchmarks.evaluation.results import write_result
from benchmarks.reports import matching, tables
from benchmarks.reports.reported import load_all
from tests.test_tables import PAPER, toy_result

pytestmark = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")

DOCUMENT = r"""\documentclass{article}
\usepackage[T1]{fontenc}
\usepackage{booktabs}
\usepackage[landscape, margin=1cm]{geometry}
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
