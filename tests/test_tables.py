"""Tables: matching results to reported entries, cells and footnotes, the paper layout, determinism, and the
checks `python -m benchmarks check` runs (tolerances, freshness of committed tables, regression of re-runs)."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.evaluation.results import RESULTS_DIR, Provenance, RunResult, load_result, write_result
from benchmarks.reports import grids, latex, matching, tables
from benchmarks.reports.reported import REPORTED_DIR, Reproduction, load_all
from methods.mscfp import MSCFPMethod

PAPER: dict[str, Any] = {
    "method": "toy",
    "paper": {"title": "A toy_paper & friends", "authors": ["Ada Lovelace", "Alan Turing"], "venue": "CVPR 2016",
              "year": 2016, "arxiv": "1511.07247"},
    "entries": [
        {"table": "Table 2", "variant": {"backbone": "resnet50", "dimension": 2048, "training_set": "gldv2",
                                         "reranking": False, "query_crop": crop},
         "dataset": "oxford5k", "protocol": "oxford", "metric": "map", "value": value, "source": "Table 2",
         "confidence": "read_in_paper"}
        for crop, value in ((True, 80.0), (False, 78.0))
    ] + [
        {"table": "Table 3", "variant": {"backbone": backbone, "dimension": 2048, "training_set": "gldv2",
                                         "reranking": False},
         "dataset": "roxford5k", "protocol": "revisited", "metric": metric, "value": value, "source": "Table 3",
         "confidence": confidence, "tolerance": 2.0}
        for backbone, metric, value, confidence in (
            ("resnet50", "map_medium", 60.0, "quoted_by_third_party"), ("resnet50", "map_hard", 35.0, "unverified"),
            ("resnet101", "map_medium", 65.0, "read_in_paper"))
    ],
    "reproductions": [{"weights": "resnet50.ours", "variant": {"backbone": "resnet50"},
                       "deviations": ["images at 512 px, not 1024"]}],
}


def toy_result(dataset: str, protocol: str, metrics: dict[str, float], weights: str = "resnet50.ours",
               cropped: bool = True, dim: int = 2048, method: str = "toy",
               per_query: dict[str, list[float | None]] | None = None) -> RunResult:
    provenance = Provenance(git_commit="c" * 40, git_dirty=False, weights_sha256=None, dataset_manifest_sha256=None,
                            ground_truth_sha256="b" * 64, descriptor_sha256=None,
                            environment={"python": "3.11", "torch": "2", "device": "cpu"}, seed=0,
                            date="2026-11-22T07:00:00+00:00", wall_time_s=1.0, command="python -m benchmarks x")
    return RunResult(method=method, weights=weights, dataset=dataset, protocol=protocol,
                     config={"method": {"backbone": weights.split(".")[0]}, "descriptor_dim": dim,
                             "protocol": {"queries_cropped": cropped}},
                     metrics=metrics, per_query=per_query or {}, provenance=provenance)


@pytest.fixture
def toy(tmp_path: Path) -> tuple[Path, Path]:
    """(reported dir, results dir) of the toy paper and three runs of its weights (and one of other weights)."""
    reported, results = tmp_path / "reported", tmp_path / "results"
    reported.mkdir()
    (reported / "toy.yaml").write_text(yaml.safe_dump(PAPER, sort_keys=False), encoding="utf-8")
    write_result(toy_result("oxford5k", "oxford", {"map": 0.7755}, cropped=False), results)
    write_result(toy_result("roxford5k", "revisited", {"map_medium": 0.6123, "map_hard": 0.34, "map_easy": 0.8},
                            dim=512), results)
    write_result(toy_result("roxford5k", "revisited", {"map_medium": 0.5}, weights="resnet18.other"), results)
    return reported, results


def frame_of(toy: tuple[Path, Path]):
    return matching.long_frame(load_all(toy[0]), matching.load_results(toy[1]))


def row(frame, **where: Any) -> dict[str, Any]:
    selected = frame
    for key, value in where.items():
        selected = selected[selected[key] == value]
    assert len(selected) == 1, selected
    return selected.iloc[0].to_dict()


def test_percent_is_the_one_conversion():
    assert matching.percent(0.6123) == pytest.approx(61.23)


def test_a_result_reproduces_entries_of_its_mapped_variant_only(toy):
    frame = frame_of(toy)
    medium = row(frame, table="Table 3", row="backbone=resnet50", metric="map_medium")
    assert medium["weights"] == "resnet50.ours" and medium["reproduced"] == pytest.approx(61.23)
    assert medium["difference"] == pytest.approx(1.23) and medium["tolerance"] == 2.0
    assert medium["provenance"] == "results/roxford5k/toy/resnet50.ours.json @ cccccccccccc"
    # the resnet101 variant is reported but nobody reproduces it
    r101 = row(frame, table="Table 3", row="backbone=resnet101")
    assert (r101["weights"], r101["provenance"]) == ("", "Table 3") and math.isnan(r101["reproduced"])
    # map_easy has no reported counterpart, nor does the other weights' run: rows of ours only
    assert row(frame, table="", metric="map_easy")["reproduced"] == pytest.approx(80.0)
    other = row(frame, weights="resnet18.other")
    assert other["table"] == "" and math.isnan(other["reported"]) and other["reproduced"] == pytest.approx(50.0)


def test_query_crop_of_the_variant_must_match_the_run(toy):
    frame = frame_of(toy)
    cropped, full = row(frame, setting="crop"), row(frame, setting="full")
    assert math.isnan(cropped["reproduced"])  # the run used whole queries
    assert full["reproduced"] == pytest.approx(77.55) and full["difference"] == pytest.approx(-0.45)


def test_deviations_declared_and_detected(toy):
    medium = row(frame_of(toy), table="Table 3", row="backbone=resnet50", metric="map_medium")
    assert medium["deviations"] == "images at 512 px, not 1024; 512-D descriptors, not the paper's 2048-D"


def test_a_protocol_other_than_the_methods_is_a_deviation():
    """A result extracted with a protocol the method does not declare (``train --protocol``) says so where it
    stands beside a reported number; one extracted as declared says nothing."""
    committed = load_result(RESULTS_DIR / "synth_landmarks" / "mscfp" / "effl0.untrained.json")  # the demo's squares
    assert matching.protocol_departures(committed) == [
        "test protocol: max_size 128, not the method's 336", "test protocol: query_pad 96, not the method's 256"]
    declared = dataclasses.asdict(MSCFPMethod.protocol)
    as_declared = dataclasses.replace(committed, config={**committed.config, "protocol": declared})
    assert matching.protocol_departures(as_declared) == []
    assert matching.protocol_departures(toy_result("roxford5k", "revisited", {"map_medium": 0.5})) == []  # unknown


def test_uncropped_revisited_queries_are_a_deviation():
    entry = next(e for table in load_all(REPORTED_DIR) for e in table.entries if "query_crop" not in e.variant)
    weights = f"{entry.variant['backbone']}.x"
    reproduction = Reproduction(weights=weights, variant={"backbone": entry.variant["backbone"]})
    result = toy_result("roxford5k", "revisited", {"map_medium": 0.5}, weights=weights, cropped=False,
                        dim=entry.variant["dimension"])
    assert matching._deviations(entry, reproduction, result) == [
        "queries not cropped to their boxes (the revisited protocol crops them)"]


def test_cells_show_reported_marks_reproduced_notes_and_difference():
    sup = lambda m: f"^{m}"  # noqa: E731
    cell = grids.Cell(60.0, "quoted_by_third_party", 61.23, [1, 2])
    assert grids.cell_text(cell, sup) == "60.0^q / 61.2^1,2 (+1.2)"
    assert grids.cell_text(grids.Cell(35.0, "read_in_paper", 30.0), sup) == "35.0 / 30.0 (-5.0)"
    assert grids.cell_text(grids.Cell(35.0, "unverified"), sup) == "35.0^u"
    assert grids.cell_text(grids.Cell(None, "", 41.66), sup) == "41.7"
    assert grids.cell_text(grids.Cell(50.0, "read_in_paper", 49.96), sup) == "50.0 / 50.0 (+0.0)"  # never "-0.0"
    assert matching.metric_label("mp@10_hard") == "mP@10 H" and matching.metric_label("recall@5") == "R@5"


def test_paper_layout_rows_are_variants_columns_are_datasets_with_settings(toy):
    files = tables.generate(load_all(toy[0]), matching.load_results(toy[1]))
    md = files["toy.md"]
    assert md.splitlines()[0] == tables.GENERATED_MD
    assert "| variant | oxford5k (crop) mAP | oxford5k (full) mAP |" in md
    # the crop and full entries share a row label; the reproduced one names its weights
    assert "| resnet50, 2048-D | 80.0 |  |" in md
    assert "| resnet50, 2048-D [resnet50.ours] |  | 78.0 / 77.5<sup>1</sup> (-0.5) |" in md
    assert "| backbone=resnet50 [resnet50.ours] | 60.0<sup>q</sup> / 61.2<sup>1,2</sup> (+1.2) | " \
           "35.0<sup>u</sup> / 34.0<sup>1,2</sup> (-1.0) |" in md
    assert "\n1: images at 512 px, not 1024.\n" in md and "\n2: 512-D descriptors, not the paper's 2048-D.\n" in md
    tex = files["toy.tex"]
    assert r"\caption{toy: Lovelace et al. (CVPR 2016, arXiv 1511.07247), Table 3: reported / reproduced " \
           "(difference), in points}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert tex.splitlines()[1] == latex.PACKAGES_NOTE
    # the marks the table uses are explained under it, in the document, not only in the comment header
    assert "\\par q: quoted by a third party (read from a copy of the paper's table, not the paper itself).\n" \
           "\\par u: unverified.\n" in tex
    assert r"60.0\textsuperscript{q} / 61.2\textsuperscript{1,2} (+1.2)" in tex
    assert r"35.0\textsuperscript{u} / 34.0\textsuperscript{1,2} ($-$1.0)" in tex
    assert r"toy\_paper \& friends" in tex  # escaped in the comment header


def test_combined_tables_gather_methods_and_our_unmatched_runs(toy):
    files = tables.generate(load_all(toy[0]), matching.load_results(toy[1]))
    revisited = files["benchmark_revisited.md"]
    assert "| method | variant | roxford5k mAP M | roxford5k mAP H | rparis6k mAP M | rparis6k mAP H |" in revisited
    assert "+1m" not in revisited  # optional columns appear only with numbers
    lines = [line for line in revisited.splitlines() if line.startswith("| toy |")]
    assert [line.split(" | ")[1] for line in lines] == [
        "Table 3: backbone=resnet50 [resnet50.ours]", "Table 3: backbone=resnet101", "resnet18.other"]
    assert files["benchmark_places.md"].endswith("No reported or reproduced numbers yet.\n")
    assert "| toy | Table 2: resnet50, 2048-D (crop) | 80.0 |" in files["benchmark_classic.md"]


def test_generation_is_deterministic_and_prunes_stale_files(toy, tmp_path):
    reported, results = load_all(toy[0]), matching.load_results(toy[1])
    files = tables.generate(reported, results)
    assert files == tables.generate(reported, results)
    assert all("2026" not in text for text in files.values())  # no dates, even though results carry them
    out = tmp_path / "tables"
    assert len(tables.write_files(out, files, prune=True)) == len(files)
    assert tables.write_files(out, files, prune=True) == [] and tables.stale_files(out, files) == []
    (out / "toy.tex").write_text((out / "toy.tex").read_text() + "% edited\n")
    (out / "old.md").write_text(tables.GENERATED_MD + "\nold\n")
    (out / "README.md").write_text("# written by hand\n")
    assert tables.stale_files(out, files) == ["old.md", "toy.tex"]
    tables.write_files(out, files, prune=True)
    assert not (out / "old.md").exists() and (out / "README.md").exists() and tables.stale_files(out, files) == []


def test_committed_tables_are_fresh():
    files = tables.generate(load_all(), matching.load_results(RESULTS_DIR))
    assert tables.stale_files(tables.TABLES_DIR, files) == [], "run `make tables` and commit"


def run(*args: str) -> tuple[int, str]:
    outcome = CliRunner().invoke(cli, list(args))
    return outcome.exit_code, outcome.output


def test_check_passes_then_fails_on_a_perturbed_result(toy, tmp_path):
    reported, results = toy
    out = tmp_path / "tables"
    code, _ = run("tables", "--reported", str(reported), "--results", str(results), "--out", str(out))
    assert code == 0
    common = ("--reported", str(reported), "--results", str(results), "--tables", str(out))
    code, output = run("check", *common)
    assert code == 0 and "3 numbers, all within tolerance" in output and "up to date" in output
    path = results / "roxford5k" / "toy" / "resnet50.ours.json"
    data = json.loads(path.read_text())
    data["metrics"]["map_medium"] = 0.6301  # 63.0 against the reported 60.0, tolerance 2.0
    path.write_text(json.dumps(data))
    code, output = run("check", *common)
    assert code == 1
    assert "1 of 3 reproduced numbers miss their reported value" in output
    assert "roxford5k map_medium     60.00       63.01        3.01       2.00" in output
    assert "differ from the committed ones: benchmark_revisited.md, benchmark_revisited.tex, numbers.csv, toy.md" \
        in output


def test_tables_for_one_paper_prints_its_markdown(toy, tmp_path):
    code, output = run("tables", "--paper", "toy", "--print", "--reported", str(toy[0]), "--results", str(toy[1]),
                       "--out", str(tmp_path / "t"))
    assert code == 0 and "## toy, Table 3 (arXiv 1511.07247)" in output and "61.2<sup>1,2</sup>" in output
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["toy.md", "toy.tex"]
    assert run("tables", "--paper", "nobody", "--reported", str(toy[0]))[0] == 2


def test_regression_check_of_re_made_embedded_results(tmp_path):
    """`check --rerun DIR`: a faithful re-run passes; one metric moved by 0.6 points, or a missing file, fails."""
    rerun = tmp_path / "rerun"
    shutil.copytree(RESULTS_DIR, rerun)
    assert tables.regressions(RESULTS_DIR, rerun).empty
    code, output = run("check", "--rerun", str(rerun))
    assert code == 0 and "every metric within 0.5 points" in output
    assert "no result reproduces a reported number yet" in output  # not "0 numbers, all within tolerance"
    moved = rerun / "synth_places" / "netvlad" / "effl0.untrained.json"
    data = json.loads(moved.read_text())
    data["metrics"]["recall@5"] += 0.006
    data["per_query"] = {}  # a metric edited alone: with its per-query values kept the file would be refused
    moved.write_text(json.dumps(data))
    (rerun / "synth_landmarks" / "mscfp" / "effl0.untrained.json").unlink()
    found = tables.regressions(RESULTS_DIR, rerun)
    assert sorted(set(found["result"])) == ["synth_landmarks/mscfp/effl0.untrained.json",
                                           "synth_places/netvlad/effl0.untrained.json"]
    rows = found[["metric", "difference"]].round(6).fillna(0).values.tolist()
    assert rows == [["(not re-made)", 0], ["recall@5", 0.6]]
    code, output = run("check", "--rerun", str(rerun))
    assert code == 1 and "2 problem(s), metrics moved by more than 0.5 points or results not re-made" in output
    assert run("check", "--rerun", str(rerun), "--regression-tolerance", "1")[0] == 1  # the missing file remains


def test_committed_results_are_within_the_reported_tolerances():
    frame = matching.long_frame(load_all(), matching.load_results(RESULTS_DIR))
    assert tables.out_of_tolerance(frame).empty
