"""Mining: NetVLAD's GPS tuples (PlaceMiner) and MSCFP's Algorithm 1, on hand-built data with hand-computed answers."""
from __future__ import annotations

import numpy as np
import pytest

from methods.mining import (
    PlaceMiner,
    mscfp_triplets,
    pairwise_sq_distances,
    sample_mining_batch,
    select_in_ranking,
)

# Database in metres; distances from query 0 at the origin in the comments.
DB_UTM = np.array([
    [6.0, 8.0],     # 0: 10 m exactly -> potential positive (inclusive)
    [3.0, 4.0],     # 1: 5 m -> potential positive, the GPS-closest
    [10.5, 0.0],    # 2: 10.5 m -> band, neither
    [15.0, 20.0],   # 3: 25 m exactly -> band, not a definite negative (> 25 needed)
    [25.5, 0.0],    # 4: 25.5 m -> definite negative
    [0.0, 30.0],    # 5: 30 m
    [-40.0, 0.0],   # 6: 40 m
    [0.0, -50.0],   # 7: 50 m
    [100.0, 0.0],   # 8: 100 m
])
QUERY_UTM = np.array([
    [0.0, 0.0],        # 0: positives {0, 1}, negatives {4..8} (5)
    [1000.0, 1000.0],  # 1: no positive, 9 negatives
    [10.0, 10.0],      # 2: positives {0 (4.5 m), 1 (9.2 m)}; 2..5 within 10..25 m; negatives {6, 7, 8} (3)
])


def descriptors_1d(values: dict[int, float], default: float = 0.0) -> np.ndarray:
    """(9, 1) database descriptors; query descriptor is 0 so d² = value²."""
    d = np.full((len(DB_UTM), 1), default)
    for i, v in values.items():
        d[i, 0] = v
    return d


QUERY_DESCRIPTOR = np.array([0.0])
# d²: positives 0 -> 0.01, 1 -> 0.09; negatives 5 -> 0.04, 6 -> 0.0625, 4 -> 0.0784, 7 -> 0.16, 8 -> 1.0.
# Band images 2 and 3 sit on the query (d² = 0): they would be the hardest if they were wrongly taken as negatives.
HARD_DB = descriptors_1d({0: 0.1, 1: 0.3, 2: 0.0, 3: 0.0, 4: 0.28, 5: 0.2, 6: -0.25, 7: 0.4, 8: 1.0})


def test_pairwise_sq_distances_matches_direct() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(6, 5)).astype(np.float32)
    direct = ((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(-1)
    got = pairwise_sq_distances(a, b)
    assert got.dtype == np.float64 and got.shape == (4, 6)
    np.testing.assert_allclose(got, direct, rtol=1e-12, atol=1e-12)
    assert pairwise_sq_distances(a, a).diagonal().min() >= 0.0


def test_gps_boundaries_and_band() -> None:
    miner = PlaceMiner(DB_UTM, QUERY_UTM)
    np.testing.assert_array_equal(miner.potential_positives(0), [0, 1])  # 10 m exactly is in
    np.testing.assert_array_equal(miner.potential_positives(1), [])
    np.testing.assert_array_equal(miner.potential_positives(2), [0, 1])
    np.testing.assert_array_equal(miner.is_definite_negative(0, np.arange(9)),
                                  [False, False, False, False, True, True, True, True, True])  # 25 m is out
    np.testing.assert_array_equal(miner.is_definite_negative(1, np.arange(9)), [True] * 9)
    np.testing.assert_array_equal(np.flatnonzero(miner.is_definite_negative(2, np.arange(9))), [6, 7, 8])
    band = ~miner.is_definite_negative(0, np.arange(9)) & ~np.isin(np.arange(9), miner.potential_positives(0))
    np.testing.assert_array_equal(np.flatnonzero(band), [2, 3])


def test_trainable_queries_need_a_positive_and_enough_negatives() -> None:
    # query 0 has exactly 5 negatives, query 2 has 3, query 1 no positive
    np.testing.assert_array_equal(PlaceMiner(DB_UTM, QUERY_UTM, n_negatives=5).trainable_queries, [0])
    np.testing.assert_array_equal(PlaceMiner(DB_UTM, QUERY_UTM, n_negatives=6).trainable_queries, [])
    np.testing.assert_array_equal(PlaceMiner(DB_UTM, QUERY_UTM, n_negatives=3).trainable_queries, [0, 2])


def test_select_best_positive_and_hardest_violating_negatives() -> None:
    miner = PlaceMiner(DB_UTM, QUERY_UTM)
    t = miner.select(0, QUERY_DESCRIPTOR, HARD_DB)
    assert t is not None and t.query == 0
    assert t.positive == 0  # descriptor-closest (d² 0.01), not the GPS-closest image 1 (d² 0.09)
    # violate when d² < 0.01 + 0.1: 5 (0.04), 6 (0.0625), 4 (0.0784); 7 (0.16) and 8 (1.0) give zero loss
    np.testing.assert_array_equal(t.negatives, [5, 6, 4])

    swapped = HARD_DB.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    t = PlaceMiner(DB_UTM, QUERY_UTM).select(0, QUERY_DESCRIPTOR, swapped)
    assert t is not None and t.positive == 1

    t = PlaceMiner(DB_UTM, QUERY_UTM, n_negatives=2).select(0, QUERY_DESCRIPTOR, HARD_DB)
    assert t is not None
    np.testing.assert_array_equal(t.negatives, [5, 6])


def test_select_returns_none_when_no_negative_violates() -> None:
    easy = descriptors_1d({0: 0.1, 1: 0.3, 4: 0.34, 5: 0.5, 6: -0.6, 7: 0.7, 8: 1.0})  # d² >= 0.1156 > 0.11
    assert PlaceMiner(DB_UTM, QUERY_UTM).select(0, QUERY_DESCRIPTOR, easy) is None
    # the same negatives violate once the best positive is farther: 0.1156 < 0.0225 + 0.1
    farther = easy.copy()
    farther[0, 0] = 0.15
    t = PlaceMiner(DB_UTM, QUERY_UTM).select(0, QUERY_DESCRIPTOR, farther)
    assert t is not None
    np.testing.assert_array_equal(t.negatives, [4])


def test_query_without_positive_is_rejected() -> None:
    with pytest.raises(ValueError, match="no potential positive"):
        PlaceMiner(DB_UTM, QUERY_UTM).select(1, QUERY_DESCRIPTOR, HARD_DB)


def test_remembered_negatives_are_considered_again() -> None:
    # One sampled negative per call: without the memory every tuple would hold at most one negative.
    all_violate = descriptors_1d({0: 0.1, 1: 0.3, 4: 0.28, 5: 0.2, 6: -0.25, 7: 0.3, 8: 0.32})
    miner = PlaceMiner(DB_UTM, QUERY_UTM, n_negatives=10, n_sampled_negatives=1, seed=0)
    previous: list[int] = []
    for _ in range(40):
        t = miner.select(0, QUERY_DESCRIPTOR, all_violate)
        assert t is not None
        current = t.negatives.tolist()
        assert set(previous) <= set(current) and len(current) <= len(previous) + 1  # all remembered, one new at most
        previous = current
    assert previous == [5, 6, 4, 7, 8]  # every negative found, hardest first

    # the memory holds the n hardest seen so far: with n = 2 the two hardest overall end up returned
    miner = PlaceMiner(DB_UTM, QUERY_UTM, n_negatives=2, n_sampled_negatives=1, seed=0)
    results = [miner.select(0, QUERY_DESCRIPTOR, all_violate) for _ in range(40)]
    negatives = [r.negatives.tolist() for r in results if r is not None]
    assert len(negatives) == 40 and all(len(n) <= 2 for n in negatives)
    assert negatives[-1] == [5, 6]


def test_negatives_are_remembered_even_when_none_violates() -> None:
    easy = descriptors_1d({0: 0.1, 1: 0.3, 4: 0.34, 5: 0.5, 6: -0.6, 7: 0.7, 8: 1.0})
    hard = descriptors_1d({0: 0.9, 1: 0.95, 4: 0.34, 5: 0.5, 6: -0.6, 7: 0.7, 8: 0.9})  # all d² < 0.81 + 0.1
    miner = PlaceMiner(DB_UTM, QUERY_UTM, n_negatives=10, n_sampled_negatives=1, seed=0)
    assert all(miner.select(0, QUERY_DESCRIPTOR, easy) is None for _ in range(30))
    t = miner.select(0, QUERY_DESCRIPTOR, hard)  # samples one negative, but the 30 earlier draws are remembered
    assert t is not None and t.positive == 0
    np.testing.assert_array_equal(t.negatives, [4, 5, 6, 7, 8])


def test_select_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[list[int]]:
        miner = PlaceMiner(DB_UTM, QUERY_UTM, n_negatives=2, n_sampled_negatives=2, seed=seed)
        out = []
        for _ in range(6):
            t = miner.select(0, QUERY_DESCRIPTOR, HARD_DB)
            out.append([] if t is None else t.negatives.tolist())
        return out

    assert run(7) == run(7)
    assert len({str(run(s)) for s in range(10)}) > 1  # the sample does depend on the seed


# --- MSCFP Algorithm 1 -------------------------------------------------------------------------------------

T, F = True, False


def test_case_a_semi_hard_takes_last_positive_before_first_negative() -> None:
    assert select_in_ranking([T, T, T, F, T, F], threshold=20, prefer_semi_hard=True) == (2, 3)
    # a single positive before the first negative is enough (paper's j > 2 with the query at position 1)
    assert select_in_ranking([T, F, F, T], threshold=20, prefer_semi_hard=True) == (0, 1)
    # the threshold does not apply to semi-hard triplets
    assert select_in_ranking([T, F, F, F, F], threshold=1, prefer_semi_hard=True) == (0, 1)


def test_case_b_hard_takes_first_positive_after_first_negative() -> None:
    assert select_in_ranking([T, T, T, F, T, F], threshold=20, prefer_semi_hard=False) == (4, 3)
    assert select_in_ranking([T, F, F, T], threshold=20, prefer_semi_hard=False) == (3, 1)
    # first neighbour is a negative: case A is impossible, so even a semi-hard preference gives a hard triplet
    for prefer in (True, False):
        assert select_in_ranking([F, F, T, T], threshold=3, prefer_semi_hard=prefer) == (2, 0)


def test_case_c_drops_positive_beyond_threshold() -> None:
    # p - f = 4 negatives outrank the positive: kept when t = 5, dropped when t = 4
    assert select_in_ranking([F, F, F, F, T], threshold=5, prefer_semi_hard=False) == (4, 0)
    assert select_in_ranking([F, F, F, F, T], threshold=4, prefer_semi_hard=False) is None
    assert select_in_ranking([F, F, T, T], threshold=2, prefer_semi_hard=True) is None
    # counted from the first negative, not from the top of the ranking
    assert select_in_ranking([T, T, T, F, T], threshold=2, prefer_semi_hard=False) == (4, 3)


def test_impossible_rankings() -> None:
    for prefer in (True, False):
        assert select_in_ranking([T, T, T], threshold=20, prefer_semi_hard=prefer) is None  # no negative
        assert select_in_ranking([F, F, F], threshold=20, prefer_semi_hard=prefer) is None  # no positive
        assert select_in_ranking([], threshold=20, prefer_semi_hard=prefer) is None
    # hard chosen, no positive after the first negative: dropped, no fall-back to semi-hard
    assert select_in_ranking([T, T, F, F], threshold=20, prefer_semi_hard=False) is None
    assert select_in_ranking(np.array([T, T, F, F]), threshold=20, prefer_semi_hard=True) == (1, 2)


# 1-D descriptors; class A = 0, B = 1, C = 2 (a single image: never gives a triplet).
BATCH_X = np.array([0.0, 0.12, 0.3, 0.65, 0.55, 5.0, 1.4])[:, None]
BATCH_LABELS = np.array([0, 0, 1, 0, 1, 2, 1])
# Rankings by |x_q - x| (query excluded), hand-computed:
#   q0: 1A 2B 4B 3A 6B 5C -> semi (0,1,2), hard: first A after 2 is 3 (p - f = 2) -> (0,3,2)
#   q1: 0A 2B 4B 3A 6B 5C -> semi (1,0,2), hard (1,3,2)
#   q3: 4B 2B 1A 0A 6B 5C -> first neighbour negative: hard (3,1,4) whatever the coin (p - f = 2)
#   q2: 1A 4B ...         -> (2,4,1);  q4: 3A 2B ... -> (4,2,3);  q6: 3A 4B ... -> (6,4,3)   (p - f = 1)
SEMI = {0: (0, 1, 2), 1: (1, 0, 2)}
HARD = {0: (0, 3, 2), 1: (1, 3, 2), 3: (3, 1, 4), 2: (2, 4, 1), 4: (4, 2, 3), 6: (6, 4, 3)}


def test_mscfp_triplets_are_the_hand_computed_ones() -> None:
    anchors: dict[int, set[int]] = {0: set(), 1: set()}
    semi_count = both_possible = 0
    for seed in range(400):
        triplets = mscfp_triplets(BATCH_X, BATCH_LABELS, threshold=20, rng=np.random.default_rng(seed))
        assert triplets == mscfp_triplets(BATCH_X, BATCH_LABELS, threshold=20, rng=np.random.default_rng(seed))
        assert sorted(BATCH_LABELS[a] for a, _, _ in triplets) == [0, 1]  # one per class, none for class C
        for t in triplets:
            a = t[0]
            anchors[int(BATCH_LABELS[a])].add(a)
            assert t in (SEMI.get(a), HARD[a])
            if a in SEMI:
                both_possible += 1
                semi_count += t == SEMI[a]
    assert anchors == {0: {0, 1, 3}, 1: {2, 4, 6}}  # the query is drawn among the class's images
    assert both_possible > 200
    assert 0.4 < semi_count / both_possible < 0.6  # the coin is fair


def test_mscfp_coin_and_threshold() -> None:
    for seed in range(20):
        always = mscfp_triplets(BATCH_X, BATCH_LABELS, 20, np.random.default_rng(seed), semi_hard_prob=1.0)
        never = mscfp_triplets(BATCH_X, BATCH_LABELS, 20, np.random.default_rng(seed), semi_hard_prob=0.0)
        assert all(t == SEMI.get(t[0], HARD[t[0]]) for t in always)
        assert all(t == HARD[t[0]] for t in never)
        # t = 2 drops every class-A hard triplet (p - f = 2) but keeps class B's (p - f = 1)
        tight = mscfp_triplets(BATCH_X, BATCH_LABELS, 2, np.random.default_rng(seed))
        assert all(t in SEMI.values() or BATCH_LABELS[t[0]] == 1 for t in tight)
        assert sum(BATCH_LABELS[t[0]] == 1 for t in tight) == 1


def test_mscfp_duplicate_descriptors_exclude_the_query_by_index() -> None:
    # images 0 (class 0) and 1 (class 1) share a descriptor; equal distances rank by batch index
    x = np.array([0.0, 0.0, 0.5, 0.9])[:, None]
    labels = np.array([0, 1, 0, 1])
    # q0: 1B 2A 3B; q1: 0A 2A 3B; q2: 3B 0A 1B; q3: 2A 0A 1B: the first neighbour is always a negative
    expected = {0: (0, 2, 1), 1: (1, 3, 0), 2: (2, 0, 3), 3: (3, 1, 2)}
    seen = set()
    for seed in range(40):
        for t in mscfp_triplets(x, labels, threshold=20, rng=np.random.default_rng(seed)):
            assert t == expected[t[0]]
            seen.add(t[0])
    assert seen == {0, 1, 2, 3}


def test_sample_mining_batch() -> None:
    labels = np.repeat(np.arange(8), np.arange(1, 9))  # class c has c + 1 images; class 0 is a singleton
    sizes = np.bincount(labels)
    for seed in range(50):
        batch = sample_mining_batch(labels, n_classes=3, batch_size=12, rng=np.random.default_rng(seed))
        assert len(batch) <= 12 and len(np.unique(batch)) == len(batch)
        chosen = np.unique(labels[batch])
        assert len(chosen) == 3 and 0 not in chosen
        for c in chosen:  # 12 // 3 = 4 per class, fewer only when the class is smaller
            assert (labels[batch] == c).sum() == min(4, sizes[c])
        np.testing.assert_array_equal(batch, sample_mining_batch(labels, 3, 12, np.random.default_rng(seed)))
    assert len({tuple(sample_mining_batch(labels, 3, 12, np.random.default_rng(s))) for s in range(10)}) > 1

    everything = sample_mining_batch(labels, n_classes=20, batch_size=14, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(np.unique(labels[everything]), np.arange(1, 8))  # all 7 eligible classes, 2 each
    assert len(everything) == 14
    with pytest.raises(ValueError, match="fewer than 2"):
        sample_mining_batch(labels, n_classes=3, batch_size=5, rng=np.random.default_rng(0))


def test_sample_mining_batch_paper_settings() -> None:
    labels = np.repeat(np.arange(1000), 5)
    batch = sample_mining_batch(labels, n_classes=512, batch_size=2048, rng=np.random.default_rng(0))
    assert len(batch) == 2048 and len(np.unique(batch)) == 2048
    np.testing.assert_array_equal(np.bincount(np.unique(labels[batch], return_counts=True)[1]), [0, 0, 0, 0, 512])
