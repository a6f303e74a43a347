"""``python -m benchmarks extract``: the evaluator's rows for any images, with clear one-line errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchmarks.commands.extract import parse_box
from benchmarks.commands.main import cli
from benchmarks.core.errors import InputError
from benchmarks.evaluation.evaluate import EvaluateOptions, extract_descriptors
from datasets import load_plugins as load_datasets
from methods.netvlad import NetVLADMethod
from methods.weights import save_checkpoint
from tests.test_train import TINY_NETVLAD


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "w.pt"
    save_checkpoint(path, NetVLADMethod(TINY_NETVLAD), "resnet18.test", {})
    return path


@pytest.fixture(scope="module")
def evaluated(embedded_root: Path, checkpoint: Path):
    dataset = load_datasets().get("synth_landmarks")()
    options = EvaluateOptions(data_root=embedded_root, cache=False)
    return extract_descriptors(NetVLADMethod, str(checkpoint), dataset, options)


def test_rows_equal_the_evaluators_database_rows_in_the_order_given(embedded_root, checkpoint, evaluated, tmp_path):
    order = [5, 0, 17]
    paths = [evaluated.loaded.db_paths[i] for i in order]
    out = tmp_path / "sub" / "db.npy"
    code, text = run("extract", "--method", "netvlad", "--weights", checkpoint, *paths, "--out", out,
                     "--root", embedded_root, "--device", "cpu")
    assert code == 0, text
    rows = np.load(out)
    assert rows.dtype == np.float32 and rows.shape == (3, evaluated.db.shape[1])
    np.testing.assert_allclose(rows, evaluated.db[order], rtol=0, atol=1e-6)
    assert f"3 x {rows.shape[1]} descriptors" in text
    assert [p.name for p in out.parent.iterdir()] == ["db.npy"]  # no temporary file left


def test_query_box_crops_as_the_evaluator_crops_a_query(embedded_root, checkpoint, evaluated, tmp_path):
    assert evaluated.queries_cropped
    box = evaluated.loaded.ground_truth.query_boxes[2]
    out = tmp_path / "q.npy"
    code, text = run("extract", "--method", "netvlad", "--weights", checkpoint, evaluated.loaded.query_paths[2],
                     "--query-box", ",".join(map(str, box)), "--out", out, "--root", embedded_root)
    assert code == 0, text
    np.testing.assert_allclose(np.load(out), evaluated.queries[2:3], rtol=0, atol=1e-6)
    uncropped = tmp_path / "whole.npy"
    assert run("extract", "--method", "netvlad", "--weights", checkpoint, evaluated.loaded.query_paths[2],
               "--out", uncropped, "--root", embedded_root)[0] == 0
    assert float((np.load(uncropped) @ np.load(out).T)[0, 0]) < 0.9999


@pytest.mark.parametrize("args, message", [
    (("--method", "netvlda"), "unknown method 'netvlda'; did you mean netvlad?"),
    (("--query-box", "1,2,3"), "--query-box '1,2,3' must be four numbers X1,Y1,X2,Y2"),
    (("--query-box", "10,5,4,20"), "must have 0 <= X1 < X2 and 0 <= Y1 < Y2"),
    (("--query-box", "0,0,nan,9"), "must be four numbers"),
])
def test_bad_input_is_one_line_and_writes_nothing(embedded_root, checkpoint, evaluated, tmp_path, args, message):
    options = {"--method": "netvlad", "--weights": str(checkpoint), "--out": str(tmp_path / "x.npy"),
               "--root": str(embedded_root), **dict(zip(args[::2], args[1::2], strict=True))}
    code, text = run("extract", evaluated.loaded.db_paths[0], *[v for pair in options.items() for v in pair])
    assert code == 2 and message in text and len(text.strip().splitlines()) == 1 and "Traceback" not in text
    assert not (tmp_path / "x.npy").exists()


def test_a_missing_image_is_named_before_any_model_is_loaded(tmp_path):
    missing = tmp_path / "absent.jpg"
    code, text = run("extract", "--method", "netvlad", "--weights", tmp_path / "no-such.pt", missing, missing,
                     "--out", tmp_path / "x.npy", "--root", tmp_path / "data")
    assert code == 2 and text.strip() == f"error: {missing}: no such image (and 1 more)"


def test_parse_box_keeps_fractional_coordinates():
    assert parse_box("0.5,1,30.25,40") == (0.5, 1.0, 30.25, 40.0)
    with pytest.raises(InputError, match="four numbers"):
        parse_box("a,b,c,d")
