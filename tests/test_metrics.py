"""Hand-computed cases and property tests (against tests/slow_metrics.py) of benchmarks.evaluation.metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.core.errors import InputError
from benchmarks.evaluation.metrics import oxford_scores, ranking_scores, recall_at_n, revisited_scores
from tests.slow_metrics import slow_ap, slow_first_hit, slow_precision


def one(ranking, positives, junk=(), n_db=5, kappas=(1, 5, 10)):
    scores = oxford_scores(np.array([ranking]), [np.array(positives, int)], [np.array(junk, int)], n_db, kappas)
    return scores.ap[0], {k: scores.precision[k][0] for k in kappas}


def test_ap_by_hand_positives_at_ranks_1_and_3():
    ap, p = one([0, 1, 2, 3, 4], [0, 2])
    # positive at rank 1: (1 + 1/1)/2 * 1/2; at rank 3: (1/2 + 2/3)/2 * 1/2
    assert ap == pytest.approx(19 / 24, abs=1e-15)
    assert p == {1: 1.0, 5: pytest.approx(2 / 3), 10: pytest.approx(2 / 3)}  # divided by min(3, k)


def test_junk_before_a_positive_is_removed_from_the_ranking():
    assert one([3, 0, 1, 2, 4], [0, 2], junk=[3])[0] == pytest.approx(19 / 24, abs=1e-15)
    ap, p = one([0, 1, 2, 3, 4], [0, 2], junk=[1])  # junk between the positives: they become ranks 1, 2
    assert ap == 1.0 and p == {1: 1.0, 5: 1.0, 10: 1.0}


def test_junk_after_the_last_positive_changes_nothing():
    assert one([0, 1, 2, 3, 4], [0, 2], junk=[4])[0] == pytest.approx(19 / 24, abs=1e-15)


def test_truncated_ranking_counts_missing_positives_as_not_retrieved():
    ap, p = one([1, 0], [0, 2])
    assert ap == pytest.approx(0.125, abs=1e-15)  # (0/1 + 1/2)/2 * 1/2; the missing positive adds nothing
    assert p[1] == 0.0 and p[5] == pytest.approx(1 / 5)  # last positive lies beyond the list: divide by k
    full_ap, _ = one([1, 0, 3, 4, 2], [0, 2])
    assert full_ap == pytest.approx(0.125 + (1 / 4 + 2 / 5) / 4) and full_ap > ap


def test_query_without_positives_is_excluded_from_the_mean():
    ranks = np.array([[0, 1, 2], [2, 1, 0]])
    scores = oxford_scores(ranks, [np.array([0]), np.array([], int)], [np.array([], int)] * 2, 3)
    assert math.isnan(scores.ap[1]) and scores.n_queries == 1 and scores.map == 1.0
    assert scores.to_dict()["ap"] == [1.0, None]


def test_revisited_settings_by_hand():
    # easy {0}, hard {1}, junk {2}; ranking 3, 1, 2, 0
    s = revisited_scores(np.array([[3, 1, 2, 0]]), [[0]], [[1]], [[2]], n_db=4)
    assert s["easy"].ap[0] == pytest.approx(0.25)  # junk 1, 2 removed: 3, 0
    assert s["medium"].ap[0] == pytest.approx(5 / 12)  # junk 2 removed: 3, 1, 0
    assert s["hard"].ap[0] == pytest.approx(0.25)  # junk 0, 2 removed: 3, 1
    assert s["medium"].mp(1) == 0.0 and s["medium"].mp(5) == pytest.approx(2 / 3)


def test_recall_by_hand_inclusive_threshold_and_every_query_counted():
    utm_db = np.array([[12.5 * i, 0.0] for i in range(10)])  # db 2 is exactly 25 m from the origin
    utm_q = np.array([[0.0, 0.0], [1000.0, 0.0]])
    scores = recall_at_n(np.array([[5, 2, 7, 9, 8], [0, 1, 2, 3, 4]]), utm_q, utm_db, 25.0, ns=(1, 2, 5))
    assert scores.first_hit.tolist() == [2, 0]
    assert (scores.recall(1), scores.recall(2), scores.recall(5)) == (0.0, 0.5, 0.5)


def test_recall_with_panorama_collapse():
    utm_db = np.array([[100.0, 0.0]] * 8 + [[0.0, 0.0]] * 2)  # only panorama 4 (ids 8, 9) is near the query
    pred = np.array([[0, 1, 2, 9]])  # 0 and 1 are one panorama of 2: the collapsed list is 0, 2, 9
    flat = recall_at_n(pred, np.zeros((1, 2)), utm_db, 25.0, ns=(3, 4))
    collapsed = recall_at_n(pred, np.zeros((1, 2)), utm_db, 25.0, ns=(3,), panorama_size=2)
    assert flat.first_hit.tolist() == [4] and flat.recall(3) == 0.0
    assert collapsed.first_hit.tolist() == [3] and collapsed.recall(3) == 1.0


def test_recall_refuses_a_list_too_short_to_decide():
    utm_db = np.array([[100.0, 0.0]] * 10)
    with pytest.raises(InputError, match="recall@5 is undetermined"):
        recall_at_n(np.array([[0, 1, 2]]), np.zeros((1, 2)), utm_db, 25.0, ns=(1, 5))
    with pytest.raises(InputError, match="distinct panoramas"):
        recall_at_n(np.array([[0, 1, 2, 3]]), np.zeros((1, 2)), utm_db, 25.0, ns=(3,), panorama_size=2)
    # a hit inside the list decides every N; so does a list that covers the whole database
    assert recall_at_n(np.array([[0, 1]]), np.zeros((1, 2)), np.zeros((10, 2)), ns=(5,)).recall(5) == 1.0
    assert recall_at_n(np.array([[1, 0]]), np.zeros((1, 2)), utm_db[:2], ns=(5,)).recall(5) == 0.0


@pytest.mark.parametrize(
    ("ranks", "message"),
    [
        (np.array([0, 1, 2]), "must be 2-D"),
        (np.array([[0.0, 1.0, 2.0]]), "integer database ids"),
        (np.array([[0, 1, 5]]), "id 5, outside the database's 0..4"),
        (np.array([[0, -1, 2]]), "id -1"),
        (np.array([[0, 1, 1]]), "lists database id 1 more than once"),
        (np.array([[0, 1], [1, 0]]), "2 rows but the ground truth has 1 queries"),
        (np.zeros((1, 0), int), "is empty"),
    ],
)
def test_bad_rankings_are_named(ranks, message):
    with pytest.raises(InputError, match=message):
        oxford_scores(ranks, [np.array([0])], [np.array([], int)], n_db=5, source="r.npy")


def test_duplicate_predictions_are_refused():
    with pytest.raises(InputError, match="lists database id 3 more than once"):
        recall_at_n(np.array([[3, 1, 3]]), np.zeros((1, 2)), np.zeros((5, 2)), ns=(1,))


@st.composite
def ranking_problems(draw):
    n_db = draw(st.integers(1, 25))
    n_queries = draw(st.integers(1, 4))
    ranks, positives, junk = [], [], []
    k = draw(st.integers(1, n_db))
    for _ in range(n_queries):
        perm = draw(st.permutations(range(n_db)))
        ranks.append(perm[:k])
        labels = draw(st.lists(st.sampled_from("pjn"), min_size=n_db, max_size=n_db))
        positives.append(np.array([i for i, lab in enumerate(labels) if lab == "p"], int))
        junk.append(np.array([i for i, lab in enumerate(labels) if lab == "j"], int))
    return np.array(ranks), positives, junk, n_db


@given(ranking_problems())
def test_vectorised_ap_and_precision_equal_the_straightforward_loop(problem):
    ranks, positives, junk, n_db = problem
    scores = ranking_scores(ranks, {"s": (positives, junk)}, n_db, kappas=(1, 3, 10))["s"]
    for q in range(len(ranks)):
        expected = slow_ap(ranks[q], positives[q], junk[q])
        assert (math.isnan(expected) and math.isnan(scores.ap[q])) or abs(scores.ap[q] - expected) < 1e-12
        for k in (1, 3, 10):
            expected = slow_precision(ranks[q], positives[q], junk[q], k)
            got = scores.precision[k][q]
            assert (math.isnan(expected) and math.isnan(got)) or abs(got - expected) < 1e-12


@st.composite
def recall_problems(draw):
    panorama = draw(st.sampled_from([None, 1, 2, 3]))
    n_groups = draw(st.integers(1, 8))
    n_db = n_groups * (panorama or 1)
    coords = st.tuples(st.integers(0, 6), st.integers(0, 6)).map(lambda t: [10.0 * t[0], 10.0 * t[1]])
    utm_db = np.array(draw(st.lists(coords, min_size=n_db, max_size=n_db)))
    utm_q = np.array(draw(st.lists(coords, min_size=1, max_size=4)))
    pred = np.array([draw(st.permutations(range(n_db))) for _ in utm_q])  # complete lists: always decidable
    return pred, utm_q, utm_db, panorama


@given(recall_problems(), st.sampled_from([10.0, 14.15, 25.0]))
def test_vectorised_recall_equals_the_straightforward_loop(problem, threshold):
    pred, utm_q, utm_db, panorama = problem
    scores = recall_at_n(pred, utm_q, utm_db, threshold, ns=(1, 2, 5), panorama_size=panorama)
    expected = [slow_first_hit(pred[q], utm_q[q], utm_db, threshold, panorama) for q in range(len(pred))]
    assert scores.first_hit.tolist() == expected
    for n in (1, 2, 5):
        assert scores.recall(n) == pytest.approx(np.mean([0 < e <= n for e in expected]))
