"""Reported numbers: the committed paper tables load with the values read, and malformed files are refused."""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.core.errors import InputError
from benchmarks.reports.reported import REPORTED_DIR, ReportedEntry, ReportedTable, load_all, load_reported

ENTRY: dict[str, Any] = {
    "table": "Table 1",
    "variant": {"backbone": "vgg16", "dimension": 4096, "training_set": "pitts30k", "reranking": False},
    "dataset": "pitts30k",
    "protocol": "recall",
    "metric": "recall@1",
    "value": 84.1,
    "source": "Table 1, row conv5, column r@1",
    "confidence": "read_in_paper",
}
DOCUMENT: dict[str, Any] = {
    "method": "toy",
    "paper": {"title": "A toy paper", "authors": ["A. Author"], "venue": "CVPR 2016", "year": 2016,
              "arxiv": "1511.07247"},
    "entries": [ENTRY],
    "not_read": ["Figure 5 is a plot"],
    "notes": ["K = 64"],
}


def write(tmp_path: Path, document: Any, name: str = "toy") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def entries(reported: ReportedTable, /, **where: Any) -> list[ReportedEntry]:
    """The entries whose fields (or variant keys) equal ``where``."""
    return [e for e in reported.entries
            if all(getattr(e, k) == v if hasattr(e, k) else e.variant.get(k) == v for k, v in where.items())]


@pytest.fixture(scope="module")
def committed() -> dict[str, ReportedTable]:
    return {table.method: table for table in load_all()}


def test_committed_files_load_and_match_their_names(committed):
    assert {"netvlad", "mscfp"} <= set(committed)
    assert sorted(committed) == sorted(p.stem for p in REPORTED_DIR.glob("*.yaml"))
    assert committed["netvlad"].paper.arxiv == "1511.07247" and committed["mscfp"].paper.arxiv == "2004.09695"


def test_every_committed_entry_says_where_it_was_read(committed):
    for table in committed.values():
        for entry in table.entries:
            assert entry.source.strip(), f"{table.method}: an entry has no source"
            if entry.confidence == "read_in_paper":
                assert table.paper.arxiv in entry.source or entry.table in entry.source, entry.source


def test_netvlad_table1_is_alexnet_on_pitts30k_val(committed):
    table1 = entries(committed["netvlad"], table="Table 1", dataset="pitts30k", protocol="recall")
    assert {e.metric: e.value for e in table1} == {"recall@1": 84.1, "recall@5": 94.6, "recall@10": 95.5}
    assert all(e.variant["backbone"] == "alexnet" and e.variant["evaluation_split"] == "val" for e in table1)
    assert all(e.confidence == "quoted_by_third_party" and "pytorch-NetVlad" in e.source for e in table1)


def test_netvlad_compact_retrieval_table(committed):
    table4 = {(e.dataset, e.variant.get("query_crop"), e.variant.get("holidays_rotated")): e.value
              for e in entries(committed["netvlad"], table="Table 4", metric="map", dimension=256)}
    assert table4 == {("oxford5k", True, None): 63.5, ("oxford5k", False, None): 62.5,
                      ("paris6k", True, None): 73.5, ("paris6k", False, None): 72.0,
                      ("holidays", None, False): 79.9, ("holidays", None, True): 84.3}


def test_netvlad_plotted_recalls_are_listed_as_not_read(committed):
    netvlad = committed["netvlad"]
    assert not entries(netvlad, dataset="pitts250k") and not entries(netvlad, dataset="tokyo247")
    assert any("Pitts250k-test" in line and "Tokyo 24/7" in line for line in netvlad.not_read)


def test_mscfp_reports_original_oxford_paris_and_holidays(committed):
    mscfp = committed["mscfp"]
    assert {e.dataset for e in mscfp.entries} == {"holidays", "oxford5k", "paris6k"}
    assert {e.dataset: e.value for e in entries(mscfp, table="Table 3")} == {
        "holidays": 93.2, "oxford5k": 83.8, "paris6k": 89.3}
    assert [e.value for e in entries(mscfp, table="Table 1", dataset="oxford5k", local_pooling="2x2")] == [79.6]
    assert [e.value for e in entries(mscfp, table="Table 2", dataset="paris6k", test_resolutions="336+504")] == [88.9]
    assert any("ROxford5k" in line for line in mscfp.not_read) and mscfp.notes


def test_mscfp_tables_1_and_3_differ_by_test_resolution(committed):
    mscfp = committed["mscfp"]
    both = entries(mscfp, table="Table 1", dataset="holidays", local_pooling="2x2+3x3")
    ours = entries(mscfp, table="Table 3", dataset="holidays")
    assert [(e.variant["test_resolutions"], e.value) for e in both + ours] == [("336", 92.3), ("224+336+504", 93.2)]
    same_as_table2 = entries(mscfp, table="Table 2", dataset="holidays", test_resolutions="224+336+504")
    assert [e.value for e in same_as_table2] == [93.2]


def test_remap_abstract_holidays_is_the_rotated_figure(committed):
    remap = committed["remap"]
    abstract = {(e.dataset, e.variant["holidays_rotated"]): e.value for e in entries(remap, table="Abstract")}
    assert abstract == {("holidays", True): 95.5, ("oxford5k", False): 91.5, ("mpeg", False): 80.1}
    table6 = {e.variant["holidays_rotated"]: e.value
              for e in entries(remap, table="Table VI", dataset="holidays", reranking=False)}
    assert table6 == {False: 92.0, True: 95.5}


def test_dolg_paper_tables_are_uncropped_and_the_readme_gives_the_cropped_rows(committed):
    dolg = committed["dolg"]
    paper = [e for e in dolg.entries if e.table != "official README"]
    assert paper and all(e.variant["query_crop"] is False for e in paper)
    easy = {(e.dataset, e.variant["backbone"]): e.value for e in entries(dolg, metric="map_easy")}
    assert easy == {("roxford5k", "resnet50"): 93.17, ("rparis6k", "resnet50"): 95.95}
    cropped = {e.value for e in entries(dolg, table="official README", backbone="resnet50", query_crop=True,
                                        dataset="roxford5k")}
    assert cropped == {81.2, 62.55}
    (r50,) = [r for r in dolg.reproductions if r.weights == "resnet50.gldv2"]
    assert not any(r50.covers(e) for e in paper)


def test_netvlad_full_size_retrieval_as_quoted(committed):
    quoted = {(e.dataset, e.variant.get("query_crop"), e.variant.get("holidays_rotated")): e.value
              for e in entries(committed["netvlad"], table="Quoted full-size", dimension=4096)}
    assert quoted == {("oxford5k", True, None): 71.6, ("paris6k", True, None): 79.7, ("holidays", None, True): 87.5}
    assert all(e.confidence == "quoted_by_third_party" for e in entries(committed["netvlad"], dimension=4096))


def test_committed_entry_count(committed):
    assert {method: len(table.entries) for method, table in committed.items()} == {
        "dolg": 50, "gem": 12, "mscfp": 24, "netvlad": 12, "remap": 68}


def test_valid_file_round_trip(tmp_path):
    second = {**ENTRY, "variant": {**ENTRY["variant"], "query_crop": True}, "tolerance": 0.5, "note": "crop"}
    table = load_reported(write(tmp_path, {**DOCUMENT, "entries": [ENTRY, second]}))
    assert table.method == "toy" and table.paper.authors == ("A. Author",) and table.paper.year == 2016
    first, crop = table.entries
    assert (first.value, first.tolerance, first.note) == (84.1, 1.0, None)
    assert (crop.variant["query_crop"], crop.tolerance, crop.note) == (True, 0.5, "crop")
    assert table.not_read == ("Figure 5 is a plot",) and table.notes == ("K = 64",)
    assert load_all(tmp_path) == [table] and load_all(tmp_path / "empty") == []


def test_reproductions_map_our_weights_to_the_variants_they_cover(tmp_path):
    second = {**ENTRY, "variant": {**ENTRY["variant"], "backbone": "alexnet"}}
    reproduction = {"weights": "vgg16.ours", "variant": {"backbone": "vgg16", "dimension": 4096},
                    "deviations": ["queries at 480 px"]}
    table = load_reported(write(tmp_path, {**DOCUMENT, "entries": [ENTRY, second], "reproductions": [reproduction]}))
    (parsed,) = table.reproductions
    assert (parsed.weights, parsed.deviations) == ("vgg16.ours", ("queries at 480 px",))
    assert [parsed.covers(entry) for entry in table.entries] == [True, False]


def entry_with(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        document["entries"][0].update(changes)
    return mutate


def drop_entry_field(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda document: document["entries"][0].pop(name)


INVALID: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "bad metric key": (entry_with(metric="recall1"), r"entries\[0\]\.metric 'recall1'"),
    "bad difficulty": (entry_with(metric="map_extreme"), r"entries\[0\]\.metric"),
    "bad confidence": (entry_with(confidence="read_it"), r"entries\[0\]\.confidence must be one of"),
    "duplicate entry": (lambda d: d["entries"].append(copy.deepcopy(ENTRY)), r"entries\[1\] duplicates entry 0"),
    "same key, other table, other value": (
        lambda d: d["entries"].append({**copy.deepcopy(ENTRY), "table": "Table 3", "value": 85.0}),
        r"entries\[1\] \(Table 3, 85\) and entries\[0\] \(Table 1, 84\.1\) have the same variant, dataset, "
        r"protocol and metric but different values"),
    "method is not the file stem": (lambda d: d.update(method="other"), r"'other' must equal the file name 'toy'"),
    "missing source": (drop_entry_field("source"), r"entries\[0\] lacks source"),
    "empty source read in paper": (entry_with(source="  "), r"entries\[0\]\.source must be a non-empty string"),
    "value is text": (entry_with(value="84.1%"), r"entries\[0\]\.value must be a number"),
    "value is a bool": (entry_with(value=True), r"entries\[0\]\.value must be a number"),
    "value out of range": (entry_with(value=184.1), r"entries\[0\]\.value must be a number in \[0, 100\]"),
    "value is NaN": (entry_with(value=float("nan")), r"entries\[0\]\.value"),
    "unknown protocol": (entry_with(protocol="revisted"), r"entries\[0\]\.protocol must be one of"),
    "dataset not an id": (entry_with(dataset="Pitts30k"), r"entries\[0\]\.dataset"),
    "variant lacks dimension": (lambda d: d["entries"][0]["variant"].pop("dimension"),
                                r"entries\[0\]\.variant\.dimension must be int"),
    "dimension as text": (lambda d: d["entries"][0]["variant"].update(dimension="4096"),
                          r"entries\[0\]\.variant\.dimension must be int"),
    "reranking not bool": (lambda d: d["entries"][0]["variant"].update(reranking="no"),
                           r"entries\[0\]\.variant\.reranking must be bool"),
    "variant value a list": (lambda d: d["entries"][0]["variant"].update(scales=[1, 2]),
                             r"entries\[0\]\.variant\.scales must be a scalar"),
    "negative tolerance": (entry_with(tolerance=-1), r"entries\[0\]\.tolerance must be a positive number"),
    "unknown entry field": (entry_with(sorce="x"), r"entries\[0\] has unknown field\(s\) sorce"),
    "unknown top-level field": (lambda d: d.update(note="x"), r"the file has unknown field\(s\) note"),
    "arxiv id unquoted": (lambda d: d["paper"].update(arxiv=1511.07247), r"paper\.arxiv 1511\.07247 must be a quoted"),
    "no authors": (lambda d: d["paper"].update(authors=[]), r"paper\.authors must be non-empty"),
    "year as text": (lambda d: d["paper"].update(year="2016"), r"paper\.year an int"),
    "not_read not a list": (lambda d: d.update(not_read="plots"), r"not_read must be a list of strings"),
    "empty note line": (lambda d: d.update(notes=[""]), r"notes\[0\] must be a non-empty string"),
    "no entries": (lambda d: d.update(entries=[]), r"entries must be a non-empty list"),
    "entry not a mapping": (lambda d: d.update(entries=["84.1"]), r"entries\[0\] must be a mapping"),
    "reproduction of no entry": (lambda d: d.update(reproductions=[{"weights": "vgg16.ours", "variant": {
        "backbone": "alexnet"}}]), r"reproductions\[0\]\.variant matches no entry's variant"),
    "reproduction weights not arch.tag": (lambda d: d.update(reproductions=[{"weights": "vgg16", "variant": {
        "backbone": "vgg16"}}]), r"reproductions\[0\]\.weights must be a weights name"),
    "reproduction without variant": (lambda d: d.update(reproductions=[{"weights": "vgg16.ours", "variant": {}}]),
                                     r"reproductions\[0\]\.variant must be a non-empty mapping"),
    "reproductions not a list": (lambda d: d.update(reproductions={"weights": "vgg16.ours"}),
                                 r"reproductions must be a list"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_file_is_refused_naming_the_field(tmp_path, case):
    mutate, message = INVALID[case]
    document = copy.deepcopy(DOCUMENT)
    mutate(document)
    path = write(tmp_path, document)
    with pytest.raises(InputError, match=message) as raised:
        load_reported(path)
    assert raised.value.path == str(path)


@pytest.mark.parametrize("text", ["method: [unclosed\n", "- just\n- a list\n"])
def test_unreadable_or_non_mapping_yaml_is_refused(tmp_path, text):
    path = tmp_path / "toy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="cannot read reported numbers|the file must be a mapping"):
        load_reported(path)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read reported numbers"):
        load_reported(tmp_path / "absent.yaml")
