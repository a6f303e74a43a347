"""MSCFP's whole test protocol against its authors' code (issue 18): multi-scale, whitened, on a real photo.

``tests/data/mscfp_authors_protocol.npz`` holds what the authors' evaluation (github.com/fede-vaccaro/NetVlad at
1896f71: ``extract_features_revisitop.py`` ``ConfigDataset`` and its main loop, ``utils.py``
``predict_generator_with_netlvad`` and ``transform``, with ``netvlad_model.py`` ``get_transform(shape)`` as at
30279e3, the one the script calls) computes for matplotlib's ``grace_hopper.jpg`` as a database image and as two
cropped queries, on the weights :func:`seeded_whitened_mscfp` builds (``tests/data/SOURCES.md`` says how it was
made). The suite's evaluator path, under MSCFP's declared protocol, must reproduce it.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.evaluation.extract import extract
from methods.mscfp import MSCFPMethod
from tests.test_mscfp_reference import cosine, seeded_mscfp

REFERENCE = Path(__file__).parent / "data" / "mscfp_authors_protocol.npz"
WHITEN_DIM = 256
# One box larger than the authors' 256-pixel pad square on one side, one smaller on both (Pillow rounds: halves
# to even), so the white padding shows on one axis, then on both.
BOXES = np.array([[150.3, 40.6, 330.5, 300.2], [200.5, 350.4, 341.6, 470.5]])


def photo_path() -> Path:
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@torch.no_grad()
def seeded_whitened_mscfp() -> tuple[MSCFPMethod, torch.Tensor]:
    """:func:`seeded_mscfp` with a WHITEN_DIM whitening W (x - m): W and m drawn from a generator seeded 2; returns
    the model and m (the authors' PCA mean; their components are W scaled by their explained variance)."""
    model = seeded_mscfp(whiten_dim=WHITEN_DIM)
    generator = torch.Generator().manual_seed(2)
    dim = model.vlad.output_dim
    weight = torch.randn(WHITEN_DIM, dim, generator=generator) / dim ** 0.5
    mean = torch.randn(dim, generator=generator) * 0.005
    assert model.whitening is not None
    model.whitening.linear.weight.copy_(weight)
    model.whitening.linear.bias.copy_(-weight @ mean)
    return model, mean


@functools.lru_cache(maxsize=None)
def ours(**protocol_changes: object) -> tuple[np.ndarray, np.ndarray]:
    """(1, D) database and (2, D) query descriptors of the photo by the evaluator's pipeline under MSCFP's protocol."""
    model, _ = seeded_whitened_mscfp()
    protocol = dataclasses.replace(MSCFPMethod.protocol, **protocol_changes)
    db = extract(model, [photo_path()], protocol)
    queries = extract(model, [photo_path()] * len(BOXES), protocol, boxes=BOXES)
    return db, queries


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return dict(data)


def test_the_protocol_is_the_authors() -> None:
    protocol = MSCFPMethod.protocol
    assert (protocol.resize, protocol.max_size, protocol.scales) == ("square", 336, (1.5, 1.0, 2 / 3))
    assert (protocol.query_scale, protocol.query_pad, protocol.resize_kernel) == (0.7, 256, "lanczos")
    assert protocol.scale_combination == "sum_before_whitening"


def test_seeded_weights_are_the_ones_the_reference_was_made_with(reference: dict[str, np.ndarray]) -> None:
    model, mean = seeded_whitened_mscfp()
    assert model.whitening is not None
    assert model.whitening.linear.weight.double().sum().item() == pytest.approx(float(reference["sum_whitening"]),
                                                                               rel=1e-5)
    assert mean.double().sum().item() == pytest.approx(float(reference["sum_mean"]), rel=1e-6)


def test_database_image_and_queries_match_the_authors(reference: dict[str, np.ndarray]) -> None:
    db, queries = ours()
    assert db.shape == (1, WHITEN_DIM) and queries.shape == (2, WHITEN_DIM)
    assert cosine(db[0], reference["db"][0]) >= 0.99999
    for row in range(2):
        assert cosine(queries[row], reference["queries"][row]) >= 0.99999


@pytest.mark.parametrize("change", [{"scale_combination": "average_descriptors"}, {"resize_kernel": "bilinear"},
                                    {"query_pad": None}])
def test_each_protocol_detail_matters(reference: dict[str, np.ndarray], change: dict[str, object]) -> None:
    db, queries = ours(**change)
    worst = min(cosine(db[0], reference["db"][0]), *(cosine(q, r) for q, r in zip(queries, reference["queries"],
                                                                                  strict=True)))
    assert worst < 0.9999
