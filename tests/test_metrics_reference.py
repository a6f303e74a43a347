"""The metrics on the real ground truth: protocol facts, the slow oracle to 1e-9, and values the official
revisitop evaluation printed for a deterministic ranking (see tests/data/SOURCES.md)."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.evaluation.metrics import recall_at_n, revisited_scores
from datasets.formats import read_place_npz, read_revisited_gnd
from tests.conftest import GND, PLACES
from tests.slow_metrics import slow_ap, slow_precision

# compute_map of github.com/filipradenovic/revisitop (python/evaluate.py, be39832) on deterministic_ranks
OFFICIAL = {
    ("roxford5k", "easy"): (0.6921248813564678, 1.0, 0.8999999999999998, 0.8044117647058825),
    ("roxford5k", "medium"): (0.5471677538240229, 0.9857142857142858, 0.8828571428571432, 0.835714285714286),
    ("roxford5k", "hard"): (0.37876358421565814, 0.8571428571428571, 0.7514285714285714, 0.6299999999999997),
    ("rparis6k", "easy"): (0.6623053040543115, 1.0, 0.9914285714285713, 0.9642857142857143),
    ("rparis6k", "medium"): (0.5694131120466488, 1.0, 1.0, 1.0),
    ("rparis6k", "hard"): (0.46066348370073507, 1.0, 1.0, 1.0),
}


def deterministic_ranks(gnd) -> np.ndarray:
    """(n_queries, n_db): a pseudo-random order from integer hashing, pushed towards easy, junk and hard."""
    ids = np.arange(gnd.n_db, dtype=np.int64)
    rows = []
    for q in range(gnd.n_queries):
        s = ((ids * 2654435761 + q * 40503) % 1000003) / 1000003.0
        s[gnd.easy[q]] += 0.6
        s[gnd.hard[q]] += 0.4
        s[gnd.junk[q]] += 0.5
        rows.append(np.argsort(-s, kind="stable"))
    return np.stack(rows)


@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_equal_to_the_official_evaluation(name):
    gnd = read_revisited_gnd(GND[name])
    scores = revisited_scores(deterministic_ranks(gnd), gnd.easy, gnd.hard, gnd.junk, gnd.n_db)
    for difficulty, s in scores.items():
        expected = OFFICIAL[(name, difficulty)]
        assert (s.map, s.mp(1), s.mp(5), s.mp(10)) == pytest.approx(expected, abs=1e-9, rel=0)


@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_equal_to_the_straightforward_loop_on_real_ground_truth(name):
    gnd = read_revisited_gnd(GND[name])
    rng = np.random.default_rng(7)
    heads = deterministic_ranks(gnd)[:, :300]  # informative heads, random tails
    ranks = np.stack([np.r_[h, rng.permutation(np.setdiff1d(np.arange(gnd.n_db), h))] for h in heads])
    scores = revisited_scores(ranks, gnd.easy, gnd.hard, gnd.junk, gnd.n_db)
    settings = {"easy": lambda q: (gnd.easy[q], np.r_[gnd.junk[q], gnd.hard[q]]),
                "medium": lambda q: (np.r_[gnd.easy[q], gnd.hard[q]], gnd.junk[q]),
                "hard": lambda q: (gnd.hard[q], np.r_[gnd.junk[q], gnd.easy[q]])}
    for difficulty, ok_junk in settings.items():
        for q in range(gnd.n_queries):
            ok, junk = ok_junk(q)
            if ok.size == 0:
                assert np.isnan(scores[difficulty].ap[q])
                continue
            assert abs(scores[difficulty].ap[q] - slow_ap(ranks[q], ok, junk)) < 1e-9
            assert abs(scores[difficulty].precision[10][q] - slow_precision(ranks[q], ok, junk, 10)) < 1e-9


def test_roxford_scores_68_easy_queries_and_an_oracle_ranking_scores_one():
    gnd = read_revisited_gnd(GND["roxford5k"])
    assert (gnd.n_db, gnd.n_queries) == (4993, 70)
    assert [q for q in range(70) if gnd.easy[q].size == 0] == [11, 66]
    positives = [np.r_[gnd.easy[q], gnd.hard[q]] for q in range(70)]
    oracle = np.stack([np.r_[p, np.setdiff1d(np.arange(gnd.n_db), p)] for p in positives])
    scores = revisited_scores(oracle, gnd.easy, gnd.hard, gnd.junk, gnd.n_db)
    assert [scores[d].n_queries for d in ("easy", "medium", "hard")] == [68, 70, 70]
    assert scores["medium"].map == 1.0 and scores["medium"].mp(10) == 1.0
    assert scores["easy"].map == 1.0  # the easy images lead
    assert scores["hard"].map == 1.0  # the easy images before the hard ones are junk in Hard: removed


def test_ranking_with_truncated_lists_never_scores_above_the_full_ranking():
    gnd = read_revisited_gnd(GND["rparis6k"])
    full = deterministic_ranks(gnd)
    s_full = revisited_scores(full, gnd.easy, gnd.hard, gnd.junk, gnd.n_db)
    s_100 = revisited_scores(full[:, :100], gnd.easy, gnd.hard, gnd.junk, gnd.n_db)
    for d in ("easy", "medium", "hard"):
        assert np.all(s_100[d].ap <= s_full[d].ap + 1e-12)
        assert s_100[d].map < s_full[d].map


@pytest.mark.parametrize(("name", "lo", "hi"), [("pitts30k_test", 24, None), ("tokyo247", 48, 240)])
def test_place_ground_truth_positive_counts(name, lo, hi):
    gt = read_place_npz(PLACES[name])
    assert gt.threshold == 25.0
    d2 = ((gt.utm_queries[:, None, :] - gt.utm_db[None, :, :]) ** 2).sum(-1)
    counts = (d2 <= 25.0**2).sum(1)
    assert counts.min() == lo and (hi is None or counts.max() == hi)
    # an oracle that ranks each query's nearest database image first has Recall@1 = 1
    oracle = np.argsort(d2, axis=1, kind="stable")[:, :25]
    assert recall_at_n(oracle, gt.utm_queries, gt.utm_db, gt.threshold, ns=(1,)).recall(1) == 1.0


def test_tokyo_panorama_collapse_on_real_coordinates():
    gt = read_place_npz(PLACES["tokyo247"], panorama_size=12)
    assert gt.n_db == 6332 * 12
    assert np.all(gt.utm_db.reshape(6332, 12, 2) == gt.utm_db[::12, None, :])  # cutouts share coordinates
    d2 = ((gt.utm_queries[:, None, :] - gt.utm_db[None, ::12, :]) ** 2).sum(-1)
    far = np.argsort(-d2, axis=1, kind="stable")[:, :3] * 12  # three far panoramas ...
    near = np.argmin(d2, axis=1)[:, None] * 12
    # ... listed with all their 12 cutouts, then the nearest panorama: rank 4 collapsed, rank 37 flat
    pred = np.concatenate([(far[:, :, None] + np.arange(12)).reshape(-1, 36), near], axis=1)
    collapsed = recall_at_n(pred, gt.utm_queries, gt.utm_db, 25.0, ns=(1, 5, 10), panorama_size=12)
    assert collapsed.first_hit.tolist() == [4] * gt.n_queries and collapsed.recall(5) == 1.0
    flat = recall_at_n(pred, gt.utm_queries, gt.utm_db, 25.0, ns=(1, 5, 10, 20, 37))
    assert flat.first_hit.tolist() == [37] * gt.n_queries and flat.recall(20) == 0.0
