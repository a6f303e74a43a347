"""Training-tuple mining: NetVLAD's GPS-supervised tuples and MSCFP's ranking-based triplets (Algorithm 1).

Pure numpy/scipy; the training loop computes the descriptors and passes them in.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


def pairwise_sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (M, N) between rows of ``a`` (M, D) and ``b`` (N, D), in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)  # the expansion can go slightly negative for coincident points


@dataclass(frozen=True, eq=False)
class Tuple:
    """One NetVLAD training tuple: query index, best potential positive (db index), negatives (n,) db indices."""

    query: int
    positive: int
    negatives: np.ndarray


class PlaceMiner:
    """Weakly supervised tuple mining of NetVLAD (Arandjelovic et al., CVPR 2016, Sec. 4 and Appendix).

    Database images within ``positive_radius`` metres of a query (inclusive) are its potential positives,
    those farther than ``negative_radius`` its definite negatives; the band in between is neither.
    ``select`` takes the best potential positive (closest in descriptor space) and the hardest negatives
    among a fresh random sample of definite negatives together with the negatives that were hardest for this
    query at its previous selection (a per-query memory), as in the authors' training.

    db_utm: (N, 2) database easting/northing in metres; query_utm: (Q, 2).
    """

    def __init__(self, db_utm: np.ndarray, query_utm: np.ndarray, positive_radius: float = 10.0,
                 negative_radius: float = 25.0, n_negatives: int = 10, n_sampled_negatives: int = 1000,
                 margin: float = 0.1, seed: int = 0) -> None:
        db_utm = np.asarray(db_utm, dtype=np.float64)
        query_utm = np.asarray(query_utm, dtype=np.float64)
        if db_utm.ndim != 2 or query_utm.ndim != 2 or db_utm.shape[1] != query_utm.shape[1]:
            raise ValueError(f"expected (N, 2) and (Q, 2) coordinates, got {db_utm.shape} and {query_utm.shape}")
        if not 0 <= positive_radius <= negative_radius:
            raise ValueError("need 0 <= positive_radius <= negative_radius")
        if n_negatives < 1 or n_sampled_negatives < 1:
            raise ValueError("n_negatives and n_sampled_negatives must be positive")
        self.n_db = len(db_utm)
        self.n_negatives = n_negatives
        self.n_sampled_negatives = n_sampled_negatives
        self.margin = margin
        self.rng = np.random.default_rng(seed)
        tree = cKDTree(db_utm)
        # query_ball_point is inclusive (distance <= r): exactly what positives need; for negatives we keep the
        # complement of the <= negative_radius ball, i.e. distance > negative_radius.
        self._positives = [np.asarray(p, dtype=np.int64)
                           for p in tree.query_ball_point(query_utm, r=positive_radius, return_sorted=True)]
        self._near = [np.asarray(p, dtype=np.int64)
                      for p in tree.query_ball_point(query_utm, r=negative_radius, return_sorted=True)]
        self.memory: dict[int, np.ndarray] = {}
        self.trainable_queries = np.array(
            [q for q in range(len(query_utm))
             if len(self._positives[q]) > 0 and self.n_db - len(self._near[q]) >= n_negatives], dtype=np.int64)

    def potential_positives(self, query: int) -> np.ndarray:
        """Sorted db indices within ``positive_radius`` (inclusive) of the query, shape (P,)."""
        return self._positives[query].copy()

    def is_definite_negative(self, query: int, db: np.ndarray) -> np.ndarray:
        """Boolean mask, same shape as ``db`` (db indices): farther than ``negative_radius`` from the query."""
        return ~np.isin(np.asarray(db), self._near[query])

    def _definite_negatives(self, query: int) -> np.ndarray:
        mask = np.ones(self.n_db, dtype=bool)
        mask[self._near[query]] = False
        return np.flatnonzero(mask)

    def select(self, query: int, query_descriptor: np.ndarray, db_descriptors: np.ndarray) -> Tuple | None:
        """Mine one tuple for ``query`` from cached descriptors, or None when no negative violates the margin.

        query_descriptor: (D,); db_descriptors: (N, D), L2-normalised. Candidates are ``n_sampled_negatives``
        definite negatives drawn without replacement (all of them if fewer) united with the query's remembered
        negatives; the ``n_negatives`` hardest candidates (smallest squared distance) are remembered for the next
        call, and those with d²(q, n) < d²(q, p) + margin are returned, hardest first. None means the query is
        skipped (every negative gives zero loss), as in the authors' PyTorch re-implementation.
        """
        positives = self._positives[query]
        if len(positives) == 0:
            raise ValueError(f"query {query} has no potential positive within the positive radius")
        if len(db_descriptors) != self.n_db:
            raise ValueError(f"expected {self.n_db} database descriptors, got {len(db_descriptors)}")
        q = np.asarray(query_descriptor)[None, :]
        d_pos = pairwise_sq_distances(q, db_descriptors[positives])[0]
        best = int(np.argmin(d_pos))

        negatives = self._definite_negatives(query)
        sample = self.rng.choice(negatives, size=min(self.n_sampled_negatives, len(negatives)), replace=False)
        candidates = np.union1d(sample, self.memory.get(query, np.empty(0, dtype=np.int64)))
        d_neg = pairwise_sq_distances(q, db_descriptors[candidates])[0]
        order = np.argsort(d_neg, kind="stable")[: self.n_negatives]
        self.memory[query] = candidates[order]
        violating = order[d_neg[order] < d_pos[best] + self.margin]
        if len(violating) == 0:
            return None
        chosen = candidates[violating]
        chosen.setflags(write=False)
        return Tuple(query=query, positive=int(positives[best]), negatives=chosen)


def select_in_ranking(is_positive: Sequence[bool] | np.ndarray, threshold: int,
                      prefer_semi_hard: bool) -> tuple[int, int] | None:
    """MSCFP Algorithm 1 on one query's ranking: ``(positive_rank, negative_rank)`` or None.

    ``is_positive`` (R,) is the query's neighbours ranked by increasing distance, the query itself excluded;
    ranks are 0-based into it. With f the rank of the first negative:

    - case A (semi-hard): when ``prefer_semi_hard`` and f >= 1, the triplet is (f - 1, f): the last positive
      before the first negative. We read the paper's "j > 2" as 1-based over a ranking whose first entry is
      the query itself (j = f + 2): at least one positive other than the query precedes the first negative.
      That is the authors' code's test, ``j_neg > 1`` on the 0-based ranking that includes the query.
    - case B (hard): otherwise (the coin chose hard, or no positive precedes the first negative), the first
      positive p after f gives (p, f).
    - case C (dropped): in case B, when p - f >= threshold, i.e. ``threshold`` or more negatives outrank the
      positive (the authors' code keeps the triplet while ``j_pos - j_neg < threshold``).

    None also when the ranking has no negative, no positive, or no positive after the first negative: a hard
    choice that finds no usable positive does not fall back to semi-hard, as in the authors' code (a semi-hard
    choice without a positive before the first negative does go to case B, since case A does not apply).
    """
    labels = np.asarray(is_positive, dtype=bool)
    negative_ranks = np.flatnonzero(~labels)
    if len(negative_ranks) == 0:
        return None
    first_negative = int(negative_ranks[0])
    if prefer_semi_hard and first_negative >= 1:
        return first_negative - 1, first_negative
    later_positives = np.flatnonzero(labels[first_negative:])
    if len(later_positives) == 0:
        return None
    positive = first_negative + int(later_positives[0])
    if positive - first_negative >= threshold:
        return None
    return positive, first_negative


def sample_mining_batch(labels: np.ndarray, n_classes: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices (B,), B <= batch_size, of a mining batch drawn from ``n_classes`` random classes.

    Only classes with at least two images are eligible (a class needs a positive to give a triplet); if fewer
    are eligible, all of them are used. Each chosen class contributes min(batch_size // n_chosen, its size)
    random images without replacement, as the authors' loader does (paper: 2048 images, k = 512 classes, so 4
    per class); ``batch_size`` must allow at least two per class.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    eligible = classes[counts >= 2]
    if len(eligible) == 0:
        raise ValueError("no class has two or more images")
    chosen = rng.choice(eligible, size=min(n_classes, len(eligible)), replace=False)
    per_class = batch_size // len(chosen)
    if per_class < 2:
        raise ValueError(f"batch_size {batch_size} gives fewer than 2 images to each of {len(chosen)} classes")
    parts = []
    for c in chosen:
        members = np.flatnonzero(labels == c)
        parts.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
    return np.sort(np.concatenate(parts))


def mscfp_triplets(descriptors: np.ndarray, labels: np.ndarray, threshold: int, rng: np.random.Generator,
                   semi_hard_prob: float = 0.5) -> list[tuple[int, int, int]]:
    """MSCFP mining (Vaccaro et al., ICMR 2020, Algorithm 1) on one mining batch.

    descriptors: (N, D); labels: (N,). For every class (sorted by label) one query is drawn uniformly among its
    images, then a coin with P(semi-hard) = ``semi_hard_prob`` (the paper's 1/2); the other N - 1 images are
    ranked by squared Euclidean distance (ties by batch index) and ``select_in_ranking`` picks the pair. Returns
    (anchor, positive, negative) batch indices, at most one triplet per class; a class whose query gives None
    (no other image of its class, a dropped or impossible case) contributes nothing.

    Unlike the authors' code (github.com/fede-vaccaro/NetVlad, ``LandmarkTripletGenerator``), which tries every
    image as an anchor, keeps each class's first surviving triplet, filters triplets to a loss in [0.08, 0.12]
    and keeps at most 256, this follows the paper: one random query per class and no loss filter.
    """
    labels = np.asarray(labels)
    if len(descriptors) != len(labels):
        raise ValueError(f"{len(descriptors)} descriptors but {len(labels)} labels")
    classes = np.unique(labels)
    queries = np.array([rng.choice(np.flatnonzero(labels == c)) for c in classes], dtype=np.int64)
    semi_hard = rng.random(len(classes)) < semi_hard_prob
    distances = pairwise_sq_distances(np.asarray(descriptors)[queries], descriptors)
    triplets = []
    for query, prefer, row in zip(queries, semi_hard, distances, strict=True):
        order = np.argsort(row, kind="stable")
        order = order[order != query]
        picked = select_in_ranking(labels[order] == labels[query], threshold, bool(prefer))
        if picked is not None:
            triplets.append((int(query), int(order[picked[0]]), int(order[picked[1]])))
    return triplets
