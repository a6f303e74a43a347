"""Stored results and reported numbers: each attack edits or damages a file the way a hand, a tool or a disk
might, and loading it ends in one InputError naming the file and what is wrong, never a wrong number."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.core.errors import InputError
from benchmarks.core.strict_load import MAX_DEPTH, read_json, read_yaml
from benchmarks.evaluation.results import load_result, write_result
from benchmarks.reports.reported import load_reported
from tests.test_reported import DOCUMENT, ENTRY
from tests.test_results import make_result


def stored_result(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = write_result(make_result(), tmp_path)
    return path, json.loads(path.read_text())


def refused(path: Path, message: str) -> InputError:
    with pytest.raises(InputError, match=message) as error:
        load_result(path)
    assert error.value.path == str(path)
    return error.value


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["metrics"].update(map_medium=0.9), r"metric map_medium = 0.9 disagrees with its per-query values"),
    (lambda d: d["per_query"]["ap_hard"].__setitem__(1, 0.5), r"metric map_hard = 0.625 disagrees .*\(0.375\)"),
    (lambda d: d["per_query"]["ap_easy"].__setitem__(1, 0.5), "metric map_easy = 0.25 disagrees .*0.375"),
    (lambda d: d["per_query"]["ap_medium"].__setitem__(0, -0.5), r"per_query.ap_medium\[0\] = -0.5 is not a "),
    (lambda d: d["per_query"]["ap_medium"].__setitem__(0, "0.5"), r"per_query.ap_medium\[0\] = '0.5'"),
    (lambda d: d["per_query"]["ap_medium"].append(0.5), r"per_query lists have different lengths \[2, 3\]"),
    (lambda d: d["per_query"].update(apx=[0.1, 0.2]), "per_query key 'apx'"),
])
def test_per_query_values_that_disagree_with_the_metrics(tmp_path: Path, change: Callable[[dict], None],
                                                         message: str) -> None:
    path, data = stored_result(tmp_path)
    change(data)
    path.write_text(json.dumps(data))
    refused(path, message)


def test_recall_is_checked_against_first_hits(tmp_path: Path) -> None:
    recall = replace(make_result(), protocol="recall", metrics={"recall@1": 0.25, "recall@5": 0.75},
                     per_query={"first_hit": [1, 3, None, 2]})
    path = write_result(recall, tmp_path)
    assert load_result(path).metrics["recall@5"] == 0.75
    data = json.loads(path.read_text())
    data["per_query"]["first_hit"][2] = 7  # a miss turned into a hit beyond 5: recall@5 still 0.75, consistent
    path.write_text(json.dumps(data))
    assert load_result(path).per_query["first_hit"][2] == 7
    data["per_query"]["first_hit"][2] = 4
    path.write_text(json.dumps(data))
    refused(path, r"metric recall@5 = 0.75 disagrees with its per-query values \(1.0\)")
    data["per_query"]["first_hit"][2] = 0
    path.write_text(json.dumps(data))
    refused(path, r"per_query.first_hit\[2\] = 0 is not a rank >= 1")


def test_nan_per_query_values_are_not_json(tmp_path: Path) -> None:
    path, data = stored_result(tmp_path)
    path.write_text(json.dumps(data).replace("0.25, null", "NaN, null", 1))
    refused(path, "not valid JSON .*NaN is not a JSON number")


def test_a_duplicated_json_key(tmp_path: Path) -> None:
    path, data = stored_result(tmp_path)
    text = json.dumps(data)
    path.write_text(text.replace('"metrics": {', '"metrics": {"map_medium": 0.99, ', 1))
    refused(path, "key 'map_medium' appears twice in one object")


def test_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path, data = stored_result(tmp_path)
    raw = json.dumps(data).encode()
    path.write_bytes(raw[:20] + b"\xff\xfe" + raw[20:])
    refused(path, r"result is not UTF-8 text \(byte 20: b'\\xff\\xfe")


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 200_000])
def test_absurdly_nested_json(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "nested.json"
    path.write_text("[" * depth + "]" * depth)
    with pytest.raises(InputError, match=f"nests deeper than {MAX_DEPTH} levels") as error:
        read_json(path, "result")
    assert error.value.path == str(path)
    assert read_json(_written(tmp_path / "ok.json", "[" * MAX_DEPTH + "]" * MAX_DEPTH), "x") is not None


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def reported_file(tmp_path: Path, text: str) -> Path:
    return _written(tmp_path / "toy.yaml", text)


def test_a_duplicated_yaml_key_in_reported_numbers(tmp_path: Path) -> None:
    text = yaml.safe_dump(DOCUMENT, sort_keys=False).replace("  value: 84.1\n", "  value: 84.1\n  value: 48.1\n")
    assert yaml.safe_load(text)["entries"][0]["value"] == 48.1  # what the standard loader would have reported
    path = reported_file(tmp_path, text)
    duplicated = r"key 'value' appears twice in one mapping.*line \d+, column 3: value: 48.1"
    with pytest.raises(InputError, match=duplicated) as error:
        load_reported(path)
    assert error.value.path == str(path)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    body = yaml.safe_dump({k: v for k, v in DOCUMENT.items() if k != "entries"}, sort_keys=False)
    entry = yaml.safe_dump([{**ENTRY}], sort_keys=False).replace("- ", "- &base\n  ", 1)
    text = f"{body}entries:\n{entry}- {{<<: *base, metric: recall@5, value: 90.0}}\n"
    table = load_reported(reported_file(tmp_path, text))
    assert [(e.metric, e.value) for e in table.entries] == [("recall@1", 84.1), ("recall@5", 90.0)]


def test_reported_numbers_that_are_not_utf8_or_nested_absurdly(tmp_path: Path) -> None:
    path = tmp_path / "toy.yaml"
    path.write_bytes(yaml.safe_dump(DOCUMENT).encode().replace(b"A toy paper", b"A to\xe9 paper"))
    with pytest.raises(InputError, match=r"reported numbers is not UTF-8 text \(byte \d+: b'\\xe9 pa'\)"):
        load_reported(path)
    with pytest.raises(InputError, match=f"nests deeper than {MAX_DEPTH} levels"):
        read_yaml(_written(path, "[" * 5000 + "]" * 5000), "reported numbers")
    with pytest.raises(InputError, match="nests deeper than"):
        read_yaml(_written(path, "a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)), "reported numbers")
