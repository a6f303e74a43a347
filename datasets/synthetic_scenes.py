"""The embedded landmarks generator: a small procedural dataset in the revisited Oxford/Paris format.

The plugins that register the embedded benchmarks are in :mod:`datasets.synthetic`.

The suite's main job must run anywhere, offline, in seconds; these benchmarks let the same loaders, query
crops, metrics and reports run on data generated deterministically from a seed (same seed, byte-identical
files: one ``numpy.random.default_rng`` stream per image, fixed JPEG quality, no time stamps).

:func:`generate_landmarks`: revisited Oxford/Paris layout (``jpg/``, ``gnd_synth_landmarks.pkl``) plus a
Google-Landmarks-style training split (``train/``, ``train.csv``) of other landmarks. The streets of the places
benchmark are in :mod:`datasets.synthetic_streets`; the drawing both use in :mod:`datasets.scene_drawing`.
Buildings are drawn with Pillow from one family of styles (stone wall colours, window grids, arches, cornices,
pilasters, roofs, domes, towers, rosettes, stone grain).
"""
from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datasets.base import RevisitedGroundTruth
from datasets.formats import write_revisited_gnd
from datasets.scene_drawing import (
    DB_SIZE,
    DB_VIEW,
    DISTRACTOR,
    LANDMARK,
    QUERY,
    TRAIN_CLASS,
    TRAIN_VIEW,
    background,
    draw_facade,
    image_stream,
    occluder,
    relight,
    save_jpeg,
    warp,
)

log = logging.getLogger(__name__)

QUERY_SIZE = (160, 120)  # landmark queries: a wider scene; the landmark's box is cropped from it
N_LANDMARKS, VIEWS_PER_LANDMARK, QUERIES_PER_LANDMARK, N_DISTRACTORS = 10, 10, 2, 40
N_TRAIN_CLASSES, TRAIN_PER_CLASS = 20, 12


# Labelling rule of a database view of a landmark, from its generation parameters (see generate_landmarks).
_JUNK_VISIBLE, _JUNK_AREA = 0.4, 0.05
_EASY_SKEW, _EASY_LIGHT, _EASY_VISIBLE, _EASY_WIDTH = 0.2, 0.2, 0.8, 0.45


def _landmark_facade(rng: np.random.Generator) -> Image.Image:
    return draw_facade(rng, 120, 100, floors=int(rng.integers(2, 5)), cols=int(rng.integers(3, 8)))


def _view_params(rng: np.random.Generator, target: str) -> dict[str, float]:
    """Viewpoint (skew), width (fraction of the image), lighting and occluder count for a target difficulty."""
    p = {"skew": rng.uniform(0, 0.15), "width": rng.uniform(0.5, 0.8), "light": rng.uniform(0, 0.15),
         "occluders": float(rng.integers(0, 2)), "cx": rng.uniform(0.4, 0.6)}
    if target == "hard":  # one or two strong changes, so the landmark stays recognisable
        for change in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
            p.update([{"skew": rng.uniform(0.3, 0.55)}, {"width": rng.uniform(0.3, 0.42)},
                      {"light": rng.uniform(0.4, 0.7)}, {"occluders": float(rng.integers(3, 5))}][change])
    elif target == "junk":  # tiny, or hidden behind occluders, or mostly out of frame
        p.update([{"width": rng.uniform(0.12, 0.2)}, {"occluders": 8.0}, {"cx": rng.choice([-0.05, 1.05])}]
                 [int(rng.integers(3))])
    return p


def _scene(rng: np.random.Generator, facade: Image.Image | None, p: dict[str, float],
           size: tuple[int, int]) -> tuple[Image.Image, np.ndarray, np.ndarray, float]:
    """A view of ``facade`` in a scene: (RGB image, facade mask, visible-facade mask, unclipped facade area).

    The masks are (H, W) bool: where the facade was drawn, and where it is still seen past the occluders.
    Without a facade the scene keeps its background, neighbouring buildings and occluders (a distractor).
    """
    w, h = size
    fw = p["width"] * w
    fh = fw * 100 / 120 if facade is None else fw * facade.size[1] / facade.size[0]
    cx, base = p["cx"] * w, h * rng.uniform(0.8, 0.92)
    near, far = fh, fh * (1.0 - p["skew"])  # the far side of a turned facade looks shorter
    half = fw * (1.0 - 0.4 * p["skew"]) / 2
    left, right = (near, far) if rng.random() < 0.5 else (far, near)
    quad = np.array([(cx - half, base - left), (cx + half, base - right), (cx + half, base), (cx - half, base)])
    quad += rng.normal(0.0, 0.01 * fw, (4, 2))
    img = background(rng, size, horizon=base)
    for _ in range(int(rng.integers(0, 3))):  # neighbouring buildings, partly behind the subject
        other = draw_facade(rng, 60, 70, floors=int(rng.integers(2, 4)), cols=int(rng.integers(2, 4)))
        ox, oh = rng.uniform(0, w), rng.uniform(0.4, 0.8) * h
        layer = warp(other, np.array([(ox, base - oh), (ox + oh * 0.8, base - oh), (ox + oh * 0.8, base),
                                       (ox, base)]), size)
        img.paste(layer, (0, 0), layer)
    shown, area = np.zeros((h, w), dtype=bool), 0.0
    if facade is not None:
        layer = warp(facade, quad, size)
        img.paste(layer, (0, 0), layer)
        shown = np.asarray(layer.getchannel("A")) > 127
        x, y = quad[:, 0], quad[:, 1]
        area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))  # shoelace, clipping ignored
        area *= np.mean(np.asarray(facade.getchannel("A")) > 127)
    mask = Image.new("L", size, 0)
    draw, mask_draw = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    for i in range(int(p["occluders"])):
        # Occluders spread across the facade when they are the point of the view, at the sides otherwise.
        ox = (cx - half + (i + rng.uniform(0.2, 0.8)) * 2 * half / p["occluders"] if p["occluders"] >= 3
              else cx + rng.choice([-1, 1]) * (half + rng.uniform(0, 0.15 * w)))
        occluder(draw, mask_draw, rng, ox, base + rng.uniform(0, 0.08 * h), fh * rng.uniform(0.7, 1.1))
    visible = shown & (np.asarray(mask) == 0)
    return relight(img, rng, p["light"]), shown, visible, float(area)


def _label(p: dict[str, float], visible: np.ndarray, area: float) -> str:
    n_visible = int(visible.sum())
    if n_visible < _JUNK_VISIBLE * area or n_visible < _JUNK_AREA * visible.size:
        return "junk"
    if (p["skew"] <= _EASY_SKEW and p["light"] <= _EASY_LIGHT and n_visible >= _EASY_VISIBLE * area
            and p["width"] >= _EASY_WIDTH):
        return "easy"
    return "hard"


def _view_targets(rng: np.random.Generator, n: int) -> list[str]:
    """About 40% easy, 45% hard and 15% junk targets, shuffled."""
    n_easy, n_junk = round(0.4 * n), round(0.15 * n)
    return list(rng.permutation(["easy"] * n_easy + ["junk"] * n_junk + ["hard"] * (n - n_easy - n_junk)))


def generate_landmarks(folder: Path, seed: int = 0) -> dict[str, int]:
    """Write the landmark benchmark (revisited Oxford/Paris layout) into ``folder``; return its counts.

    - ``jpg/<name>.jpg``: 140 database images of 128 x 96 px, 10 views of each of 10 landmarks
      (``landmark03_000007``) and 40 distractors (``distractor_000012``: other buildings, 1 in 4 a scene
      without one), and 20 query scenes of 160 x 120 px, 2 per landmark (``query_landmark03_001``).
    - ``gnd_synth_landmarks.pkl``: revisitop's gnd pickle; per query ``easy``/``hard``/``junk`` database ids
      and ``bbx`` [x1, y1, x2, y2], the integer bounding box of the landmark's pixels (occluders included).
    - ``train/<id>.jpg`` and ``train.csv`` (``id,landmark_id``, sorted by id): 20 other landmarks x 12 views,
      128 x 96 px, for methods that train.

    Each view places the landmark's facade in a scene with a perspective warp (skew), a width (fraction of
    the image), a lighting change and occluders, sampled for a target difficulty. Labels follow the revisited
    protocol's meaning, from the parameters and the visible (in-frame, unoccluded) facade pixels: **junk**
    when fewer than 40% of the facade's pixels or fewer than 5% of the image's are visible (barely visible:
    tiny, mostly occluded or out of frame); **easy** when skew <= 0.2, lighting change <= 0.2, >= 80% of the
    facade visible and width >= 0.45 (clearly visible, mild change); **hard** otherwise (a strong change of
    viewpoint, scale, lighting or occlusion, still recognisable).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    labels: list[tuple[int, str]] = []  # (landmark or -1, label) per database image, in ``names`` order
    query_names: list[str] = []
    boxes: list[tuple[float, float, float, float]] = []
    for k in range(N_LANDMARKS):
        facade = _landmark_facade(image_stream(seed, LANDMARK, k))
        targets = _view_targets(image_stream(seed, DB_VIEW, k), VIEWS_PER_LANDMARK)
        for i, target in enumerate(targets):
            rng = image_stream(seed, DB_VIEW, k, i)
            p = _view_params(rng, target)
            img, _, visible, area = _scene(rng, facade, p, DB_SIZE)
            names.append(f"landmark{k:02d}_{i:06d}")
            labels.append((k, _label(p, visible, area)))
            save_jpeg(img, folder / "jpg" / f"{names[-1]}.jpg")
        for j in range(QUERIES_PER_LANDMARK):
            rng = image_stream(seed, QUERY, k, j)
            p = {"skew": rng.uniform(0, 0.1), "width": rng.uniform(0.45, 0.6), "light": rng.uniform(0, 0.1),
                 "occluders": 2.0, "cx": rng.uniform(0.4, 0.6)}
            img, shown, _, _ = _scene(rng, facade, p, QUERY_SIZE)
            ys, xs = np.nonzero(shown)  # the box holds the whole landmark, occluders in front of it included
            query_names.append(f"query_landmark{k:02d}_{j + 1:03d}")
            boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
            save_jpeg(img, folder / "jpg" / f"{query_names[-1]}.jpg")
    for d in range(N_DISTRACTORS):
        rng = image_stream(seed, DISTRACTOR, d)
        p = _view_params(rng, "easy" if rng.random() < 0.5 else "hard")
        building = None if d % 4 == 3 else _landmark_facade(rng)  # 1 in 4: a street scene without a building
        img = _scene(rng, building, p, DB_SIZE)[0]
        names.append(f"distractor_{d:06d}")
        labels.append((-1, ""))
        save_jpeg(img, folder / "jpg" / f"{names[-1]}.jpg")
    order = sorted(range(len(names)), key=names.__getitem__)
    names, labels = [names[i] for i in order], [labels[i] for i in order]
    gnd = {kind: tuple(np.array([i for i, (k, label) in enumerate(labels)
                                 if k == q // QUERIES_PER_LANDMARK and label == kind], dtype=np.int64)
                       for q in range(len(query_names))) for kind in ("easy", "hard", "junk")}
    write_revisited_gnd(folder / "gnd_synth_landmarks.pkl", RevisitedGroundTruth(
        n_db=len(names), easy=gnd["easy"], hard=gnd["hard"], junk=gnd["junk"], query_boxes=np.array(boxes),
        db_names=tuple(names), query_names=tuple(query_names)))
    n_train = _generate_train(folder, seed)
    counts = {"db": len(names), "queries": len(query_names), "train": n_train}
    log.info("synthetic landmarks in %s: %s", folder, counts)
    return counts


def _generate_train(folder: Path, seed: int) -> int:
    """Training classes: landmarks of the same family, disjoint from the test ones (other random streams)."""
    rows = []
    for c in range(N_TRAIN_CLASSES):
        facade = _landmark_facade(image_stream(seed, TRAIN_CLASS, c))
        for i, target in enumerate(_view_targets(image_stream(seed, TRAIN_VIEW, c), TRAIN_PER_CLASS)):
            rng = image_stream(seed, TRAIN_VIEW, c, i)
            img = _scene(rng, facade, _view_params(rng, target), DB_SIZE)[0]
            # Google-Landmarks-style ids: 16 hex digits that carry no order of class or view.
            image_id = hashlib.sha256(f"{c}:{i}".encode()).hexdigest()[:16]
            rows.append((image_id, c))
            save_jpeg(img, folder / "train" / f"{image_id}.jpg")
    with (folder / "train.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("id", "landmark_id"))
        writer.writerows(sorted(rows))
    return len(rows)
