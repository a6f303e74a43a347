"""The embedded benchmarks' generators: two small procedural datasets in the real datasets' on-disk formats.

The plugins that register them are in :mod:`datasets.synthetic`.

The suite's main job must run anywhere, offline, in seconds; these benchmarks let the same loaders, query
crops, metrics and reports run on data generated deterministically from a seed (same seed, byte-identical
files: one ``numpy.random.default_rng`` stream per image, fixed JPEG quality, no time stamps).

- :func:`generate_landmarks`: revisited Oxford/Paris layout (``jpg/``, ``gnd_synth_landmarks.pkl``) plus a
  Google-Landmarks-style training split (``train/``, ``train.csv``) of other landmarks.
- :func:`generate_places`: Pittsburgh layout (``images/``, ``images/queries_real/``, NetVLAD dbStruct
  ``datasets/synth_places_{train,val,test}.mat``) of a small city of facade-lined streets.

Every texture is procedural (no photographs): buildings are drawn with Pillow from one family of styles
(stone wall colours, window grids, arches, cornices, pilasters, roofs, domes, towers, rosettes, stone grain).
"""
from __future__ import annotations

import csv
import hashlib
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datasets.base import RevisitedGroundTruth
from datasets.formats import DbStruct, write_dbstruct, write_revisited_gnd

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
DB_SIZE = (128, 96)  # (width, height) of landmark database, training and place images
QUERY_SIZE = (160, 120)  # landmark queries: a wider scene; the landmark's box is cropped from it
N_LANDMARKS, VIEWS_PER_LANDMARK, QUERIES_PER_LANDMARK, N_DISTRACTORS = 10, 10, 2, 40
N_TRAIN_CLASSES, TRAIN_PER_CLASS = 20, 12
# Place splits: (name, streets, database locations per street, queries, area origin easting/northing). A split
# reaches < 0.85 km from its origin (< 320 m along its streets, <= 5 x 150 m across), the origins lie 1.5 km
# apart: the areas are disjoint for every seed.
PLACE_SPLITS = (("train", 6, 25, 100, (583500.0, 4475500.0)), ("val", 2, 25, 30, (585000.0, 4475500.0)),
                ("test", 4, 25, 60, (585000.0, 4477000.0)))
POS_DIST_THR = 25.0

# Independent random streams, so that one image's content does not depend on how many were drawn before it.
_LANDMARK, _DB_VIEW, _QUERY, _DISTRACTOR, _TRAIN_CLASS, _TRAIN_VIEW, _STREET, _PLACE_DB, _PLACE_Q = range(9)

_STONES = np.array([(196, 178, 146), (168, 160, 150), (176, 112, 88), (214, 204, 184), (150, 138, 118),
                    (190, 150, 120), (160, 170, 172), (205, 190, 160)], dtype=np.float64)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    # numpy's spawn keys, not default_rng([seed, *keys]): a list seed equals the same list plus trailing zeros.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=keys))


def _colour(base: np.ndarray, rng: np.random.Generator, jitter: float) -> tuple[int, int, int]:
    c = np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _shade(c: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    r, g, b = (int(min(255, v * factor)) for v in c)
    return r, g, b


def _facade(rng: np.random.Generator, width: int, height: int, floors: int, cols: int,
            roof: bool = True) -> Image.Image:
    """A building front, RGBA (height, width); transparent around the roof line."""
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    wall = _colour(_STONES[rng.integers(len(_STONES))], rng, 18)
    trim = _shade(wall, rng.choice([0.7, 1.2]))
    kind = int(rng.integers(4)) if roof else 0  # 0 flat, 1 gable, 2 dome, 3 twin towers
    top = int(height * rng.uniform(0.18, 0.3)) if kind else 0
    draw.rectangle([0, top, width - 1, height - 1], fill=wall)
    if kind == 1:
        draw.polygon([(0, top), (width / 2, 0), (width - 1, top)], fill=trim)
        draw.ellipse([width / 2 - top / 3, top / 3, width / 2 + top / 3, top], fill=_shade(wall, 0.5))
    elif kind == 2:
        dome = _colour(np.array([90.0, 120, 110]) if rng.random() < 0.5 else np.array(trim, float), rng, 20)
        draw.ellipse([width * 0.3, 0, width * 0.7, 2 * top], fill=dome)
    elif kind == 3:
        tw = width * rng.uniform(0.12, 0.2)
        for x0 in (0, width - tw):
            draw.rectangle([x0, top * 0.35, x0 + tw, top], fill=trim)
            draw.polygon([(x0, top * 0.35), (x0 + tw / 2, 0), (x0 + tw, top * 0.35)], fill=_shade(trim, 0.6))
    glass = _colour(np.array([60.0, 70, 85]), rng, 25)
    shape = int(rng.integers(3))  # rectangular, arched or round-topped pairs
    cell_w, cell_h = width / cols, (height - top) / floors
    ww, wh = cell_w * rng.uniform(0.35, 0.6), cell_h * rng.uniform(0.4, 0.65)
    for f in range(floors):
        y0 = top + f * cell_h
        draw.rectangle([0, y0, width - 1, y0 + max(1, cell_h * 0.08)], fill=trim)  # cornice band
        for c in range(cols):
            cx, cy = (c + 0.5) * cell_w, y0 + cell_h * 0.55
            box = [cx - ww / 2, cy - wh / 2, cx + ww / 2, cy + wh / 2]
            if f == floors - 1 and c == cols // 2:  # the door, on the ground floor's middle column
                box = [cx - ww * 0.7, y0 + cell_h * 0.25, cx + ww * 0.7, y0 + cell_h]
            if shape == 0:
                draw.rectangle(box, fill=glass, outline=trim)
            elif shape == 1:
                arch = min(box[2] - box[0], box[3] - box[1])  # the arch's height: at most the window's
                draw.rectangle([box[0], box[1] + arch / 2, box[2], box[3]], fill=glass)
                draw.ellipse([box[0], box[1], box[2], box[1] + arch], fill=glass, outline=trim)
            else:
                draw.rounded_rectangle(box, radius=min(box[2] - box[0], box[3] - box[1]) / 3, fill=glass,
                                       outline=trim)
    if rng.random() < 0.5:  # pilasters between the window columns
        for c in range(1, cols):
            draw.rectangle([c * cell_w - 1, top, c * cell_w + 1, height - 1], fill=_shade(trim, 0.9))
    if rng.random() < 0.5 and floors > 1:  # a rosette or clock above the door
        r, cx, cy = min(cell_w, cell_h) * 0.3, width / 2, top + cell_h * (floors - 1.5) + cell_h * 0.55
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=trim, outline=_shade(wall, 0.5))
        draw.ellipse([cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2], fill=_shade(wall, 0.6))
    pixels = np.asarray(img).astype(np.float64)
    grain = rng.normal(0.0, 7.0, (height, width, 1))  # stone grain, so no surface is perfectly flat
    pixels[..., :3] = np.clip(pixels[..., :3] + grain, 0, 255)
    return Image.fromarray(pixels.astype(np.uint8), "RGBA")


def _perspective_coeffs(output: np.ndarray, source: np.ndarray) -> tuple[float, ...]:
    """PIL's 8 perspective coefficients mapping 4 output points (4, 2) to 4 source points (4, 2)."""
    a = np.zeros((8, 8))
    for i, ((x, y), (u, v)) in enumerate(zip(output, source, strict=True)):
        a[2 * i] = (x, y, 1, 0, 0, 0, -x * u, -y * u)
        a[2 * i + 1] = (0, 0, 0, x, y, 1, -x * v, -y * v)
    return tuple(float(c) for c in np.linalg.solve(a, source.reshape(8)))


def _warp(img: Image.Image, quad: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """``img`` with its corners (TL, TR, BR, BL) moved onto ``quad`` (4, 2), on a transparent canvas."""
    w, h = img.size
    corners = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64)
    return img.transform(size, Image.Transform.PERSPECTIVE, _perspective_coeffs(quad, corners),
                         Image.Resampling.BILINEAR)


def _background(rng: np.random.Generator, size: tuple[int, int], horizon: float) -> Image.Image:
    """Sky gradient, ground, and a skyline of distant blocks: varied clutter behind the subject."""
    w, h = size
    sky = np.array(_colour(np.array([150.0, 180, 215]), rng, 40), dtype=np.float64)
    ground = np.array(_colour(np.array([110.0, 110, 100]), rng, 25), dtype=np.float64)
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    rows = np.where(t * h < horizon, sky * (0.8 + 0.3 * t), ground * (0.9 + 0.2 * t))
    img = Image.fromarray(np.broadcast_to(rows, (h, w, 3)).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        x0, bw, bh = rng.uniform(-10, w), rng.uniform(10, 40), rng.uniform(5, horizon * 0.8)
        draw.rectangle([x0, horizon - bh, x0 + bw, horizon], fill=_colour(_STONES.mean(0) * 0.8, rng, 30))
    return img


def _occluder(draw: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, rng: np.random.Generator,
              x: float, base: float, scale: float) -> None:
    """A tree, pole, vehicle or pedestrian standing at (x, base), drawn on the image and on the mask."""
    kind = int(rng.integers(4))
    if kind == 0:  # tree
        r = scale * rng.uniform(0.25, 0.45)
        shapes = [("rect", [x - r / 6, base - scale * 0.6, x + r / 6, base], (90, 65, 45)),
                  ("ellipse", [x - r, base - scale * 0.6 - 1.6 * r, x + r, base - scale * 0.5],
                   _colour(np.array([60.0, 110, 55]), rng, 25))]
    elif kind == 1:  # pole with a lamp
        shapes = [("rect", [x - 1.5, base - scale, x + 1.5, base], (50, 50, 55)),
                  ("ellipse", [x - 4, base - scale - 4, x + 4, base - scale + 4], (230, 220, 160))]
    elif kind == 2:  # vehicle: body, window, wheels
        ln, ht = scale * rng.uniform(0.6, 0.9), scale * 0.3
        body = _colour(np.array([128.0, 128, 128]), rng, 110)
        shapes = [("rect", [x - ln / 2, base - ht, x + ln / 2, base - ht * 0.2], body),
                  ("rect", [x - ln / 4, base - ht * 1.6, x + ln / 4, base - ht], _shade(body, 0.6)),
                  ("ellipse", [x - ln / 3 - 4, base - 8, x - ln / 3 + 4, base], (20, 20, 20)),
                  ("ellipse", [x + ln / 3 - 4, base - 8, x + ln / 3 + 4, base], (20, 20, 20))]
    else:  # pedestrian
        ht = scale * rng.uniform(0.35, 0.5)
        shapes = [("rect", [x - ht / 8, base - ht * 0.8, x + ht / 8, base], _colour(np.full(3, 100.0), rng, 90)),
                  ("ellipse", [x - ht / 10, base - ht, x + ht / 10, base - ht * 0.8], (220, 180, 150))]
    for kind_name, box, fill in shapes:
        for target, colour in ((draw, fill), (mask, 255)):
            (target.rectangle if kind_name == "rect" else target.ellipse)(box, fill=colour)


def _relight(img: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Brightness, contrast, colour cast and gamma changes scaled by ``strength`` in [0, 1]."""
    gain = 1.0 + strength * rng.uniform(-0.6, 0.35)
    contrast = 1.0 + strength * rng.uniform(-0.5, 0.3)
    cast = 1.0 + strength * rng.uniform(-0.3, 0.3, (3, 1))
    gamma = 1.0 + strength * rng.uniform(-0.3, 0.5)
    mean = float(np.asarray(img).mean()) / 255.0
    # A per-channel lookup table of the 256 levels: the same result as per pixel, many times faster.
    levels = ((np.arange(256.0) / 255.0 - mean) * contrast + mean) * gain * cast
    table = np.clip(levels, 0.0, 1.0) ** gamma * 255.0 + 0.5
    return img.point(table.astype(np.uint8).ravel().tolist())


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert("RGB").save(path, format="JPEG", quality=JPEG_QUALITY)


# --- landmarks -----------------------------------------------------------------------------------------------

# Labelling rule of a database view of a landmark, from its generation parameters (see generate_landmarks).
_JUNK_VISIBLE, _JUNK_AREA = 0.4, 0.05
_EASY_SKEW, _EASY_LIGHT, _EASY_VISIBLE, _EASY_WIDTH = 0.2, 0.2, 0.8, 0.45


def _landmark_facade(rng: np.random.Generator) -> Image.Image:
    return _facade(rng, 120, 100, floors=int(rng.integers(2, 5)), cols=int(rng.integers(3, 8)))


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
    img = _background(rng, size, horizon=base)
    for _ in range(int(rng.integers(0, 3))):  # neighbouring buildings, partly behind the subject
        other = _facade(rng, 60, 70, floors=int(rng.integers(2, 4)), cols=int(rng.integers(2, 4)))
        ox, oh = rng.uniform(0, w), rng.uniform(0.4, 0.8) * h
        layer = _warp(other, np.array([(ox, base - oh), (ox + oh * 0.8, base - oh), (ox + oh * 0.8, base),
                                       (ox, base)]), size)
        img.paste(layer, (0, 0), layer)
    shown, area = np.zeros((h, w), dtype=bool), 0.0
    if facade is not None:
        layer = _warp(facade, quad, size)
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
        _occluder(draw, mask_draw, rng, ox, base + rng.uniform(0, 0.08 * h), fh * rng.uniform(0.7, 1.1))
    visible = shown & (np.asarray(mask) == 0)
    return _relight(img, rng, p["light"]), shown, visible, float(area)


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
        facade = _landmark_facade(_rng(seed, _LANDMARK, k))
        targets = _view_targets(_rng(seed, _DB_VIEW, k), VIEWS_PER_LANDMARK)
        for i, target in enumerate(targets):
            rng = _rng(seed, _DB_VIEW, k, i)
            p = _view_params(rng, target)
            img, _, visible, area = _scene(rng, facade, p, DB_SIZE)
            names.append(f"landmark{k:02d}_{i:06d}")
            labels.append((k, _label(p, visible, area)))
            _save(img, folder / "jpg" / f"{names[-1]}.jpg")
        for j in range(QUERIES_PER_LANDMARK):
            rng = _rng(seed, _QUERY, k, j)
            p = {"skew": rng.uniform(0, 0.1), "width": rng.uniform(0.45, 0.6), "light": rng.uniform(0, 0.1),
                 "occluders": 2.0, "cx": rng.uniform(0.4, 0.6)}
            img, shown, _, _ = _scene(rng, facade, p, QUERY_SIZE)
            ys, xs = np.nonzero(shown)  # the box holds the whole landmark, occluders in front of it included
            query_names.append(f"query_landmark{k:02d}_{j + 1:03d}")
            boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
            _save(img, folder / "jpg" / f"{query_names[-1]}.jpg")
    for d in range(N_DISTRACTORS):
        rng = _rng(seed, _DISTRACTOR, d)
        p = _view_params(rng, "easy" if rng.random() < 0.5 else "hard")
        building = None if d % 4 == 3 else _landmark_facade(rng)  # 1 in 4: a street scene without a building
        img = _scene(rng, building, p, DB_SIZE)[0]
        names.append(f"distractor_{d:06d}")
        labels.append((-1, ""))
        _save(img, folder / "jpg" / f"{names[-1]}.jpg")
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
        facade = _landmark_facade(_rng(seed, _TRAIN_CLASS, c))
        for i, target in enumerate(_view_targets(_rng(seed, _TRAIN_VIEW, c), TRAIN_PER_CLASS)):
            rng = _rng(seed, _TRAIN_VIEW, c, i)
            img = _scene(rng, facade, _view_params(rng, target), DB_SIZE)[0]
            # Google-Landmarks-style ids: 16 hex digits that carry no order of class or view.
            image_id = hashlib.sha256(f"{c}:{i}".encode()).hexdigest()[:16]
            rows.append((image_id, c))
            _save(img, folder / "train" / f"{image_id}.jpg")
    with (folder / "train.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("id", "landmark_id"))
        writer.writerows(sorted(rows))
    return len(rows)


# --- places --------------------------------------------------------------------------------------------------

_PPM = 5.0  # strip pixels per metre of facade
_STRIP_M = 18.0  # strip height in metres (the tallest building)
_HALF_STREET = 10.0  # metres from the street's centre line to each row of facades
_BLOCK = 150.0  # metres between parallel streets: no place on one street lies within 25 m of another
_FOCAL, _HORIZON, _CAMERA_M = 64.0, 66.0, 2.5  # pinhole camera: 90 degrees field of view, pitched slightly up


def _street_strip(rng: np.random.Generator, length: float) -> Image.Image:
    """One side of a street: buildings of 8-22 m side by side, RGBa (18 m x ``length`` m at 5 px/m)."""
    strip = Image.new("RGBA", (int(length * _PPM), int(_STRIP_M * _PPM)), (0, 0, 0, 0))
    u = 0.0
    while u < length:
        width, height = rng.uniform(8, 22), rng.uniform(9, _STRIP_M)
        facade = _facade(rng, int(width * _PPM), int(height * _PPM), floors=max(2, round(height / 3.5)),
                         cols=max(2, round(width / 3.5)), roof=rng.random() < 0.3)
        strip.paste(facade, (int(u * _PPM), strip.size[1] - facade.size[1]))
        u += width + (rng.uniform(1, 4) if rng.random() < 0.2 else 0.0)  # now and then an alley
    # Premultiplied alpha: Pillow would otherwise convert the whole strip to it on every transform.
    return strip.convert("RGBa")


def _street_view(rng: np.random.Generator, strip: Image.Image, along: float, distance: float, angle: float,
                 right: bool) -> Image.Image:
    """The facade strip seen by a camera ``along`` m down the street, ``distance`` m from the facades.

    The camera turns ``angle`` radians forward from the facades' normal; on the right-hand side forward
    is to the image's left. A homography from four facade points maps the strip into the (96, 128) view.
    """
    w, h = DB_SIZE
    a = np.array([-3.0, 12.0, 12.0, -3.0])  # metres along the street, from the camera
    z = np.array([12.0, 12.0, 0.0, 0.0])  # metres above the ground
    depth = a * math.sin(angle) + distance * math.cos(angle)
    lateral = (a * math.cos(angle) - distance * math.sin(angle)) * (-1.0 if right else 1.0)
    image_points = np.stack([w / 2 + _FOCAL * lateral / depth, _HORIZON - _FOCAL * (z - _CAMERA_M) / depth], 1)
    strip_points = np.stack([(along + a) * _PPM, (_STRIP_M - z) * _PPM], 1)
    layer = strip.transform(DB_SIZE, Image.Transform.PERSPECTIVE, _perspective_coeffs(image_points, strip_points),
                            Image.Resampling.BILINEAR).convert("RGBA")
    img = _background(rng, DB_SIZE, horizon=_HORIZON + 8)
    img.paste(layer, (0, 0), layer)
    return img


def _place_image(rng: np.random.Generator, strip: Image.Image, along: float, distance: float, angle: float,
                 right: bool, query: bool) -> Image.Image:
    """A database view (mild lighting jitter, at most a parked car) or a query (another time of day,
    colour cast, vehicles and pedestrians, blur and sensor noise)."""
    img = _street_view(rng, strip, along, distance, angle, right)
    draw, mask = ImageDraw.Draw(img), ImageDraw.Draw(Image.new("L", DB_SIZE))
    for _ in range(int(rng.integers(1, 4)) if query else int(rng.integers(0, 2))):
        _occluder(draw, mask, rng, rng.uniform(0, DB_SIZE[0]), rng.uniform(85, 96), rng.uniform(35, 60))
    if not query:
        return _relight(img, rng, rng.uniform(0.0, 0.2))
    img = _relight(img.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.0))), rng, rng.uniform(0.3, 0.8))
    noisy = np.asarray(img).astype(np.float64) + rng.normal(0.0, 4.0, (DB_SIZE[1], DB_SIZE[0], 3))
    return Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8), "RGB")


def _pittsburgh_name(index: int, yaw: int) -> str:
    return f"{index // 1000:03d}/{index:06d}_pitch1_yaw{yaw}.jpg"


def generate_places(folder: Path, seed: int = 0) -> dict[str, int]:
    """Write the place-recognition benchmark (Pittsburgh layout) into ``folder``; return its counts.

    A small city per split, in disjoint areas of UTM zone 17T (easting ~585000, northing ~4477000): parallel
    streets 150 m apart, each lined on both sides by a strip of procedural facades. Database images are
    taken every 8-12 m along each street, two headings per place (``yaw1`` the left-hand facades, ``yaw2``
    the right-hand ones), looking 20-30 degrees forward; queries stand up to 5 m along and 3 m across from a
    database place, look 15-35 degrees forward, and see another time of day (lighting, colour cast),
    vehicles and pedestrians, blur and noise. Every query lies within about 6 m of a database place, so it
    has database images within 25 m.
    All images are 128 x 96 px.

    - ``images/<dbImageFn>`` (``000/000123_pitch1_yaw1.jpg``) and ``images/queries_real/<qImageFn>``;
      numbering runs on across train, val and test, so no two images share a name.
    - ``datasets/synth_places_{train,val,test}.mat``: NetVLAD dbStruct, Pittsburgh field order, 25 m.

    Counts: train 300 database / 100 queries, val 100 / 30, test 200 / 60.
    """
    folder = Path(folder)
    counts: dict[str, int] = {}
    next_place = next_query = 0
    for split_index, (split, n_streets, n_places, n_queries, origin) in enumerate(PLACE_SPLITS):
        heading = _rng(seed, _STREET, split_index).uniform(0.0, math.pi)
        forward, left = np.array([math.cos(heading), math.sin(heading)]), np.array([-math.sin(heading),
                                                                                    math.cos(heading)])
        strips: list[tuple[Image.Image, Image.Image]] = []  # per street: its left and right facades
        places: list[np.ndarray] = []  # per street: database positions along it, in metres
        db_names, db_utm = [], []
        for j in range(n_streets):
            rng = _rng(seed, _STREET, split_index, j)
            along = 20.0 + np.cumsum(rng.uniform(8.0, 12.0, n_places))
            length = float(along[-1]) + 60.0  # room for the forward-looking views of the last places
            strips.append((_street_strip(rng, length), _street_strip(rng, length)))
            places.append(along)
            for k, s in enumerate(along):
                rng = _rng(seed, _PLACE_DB, split_index, j, k)
                lateral = rng.uniform(-1.0, 1.0)
                for yaw, strip in enumerate(strips[j], start=1):
                    distance = _HALF_STREET - (lateral if yaw == 1 else -lateral)  # lateral > 0: to the left
                    img = _place_image(rng, strip, s, distance, math.radians(rng.uniform(20, 30)), yaw == 2, False)
                    db_names.append(_pittsburgh_name(next_place, yaw))
                    db_utm.append(origin + s * forward + (j * _BLOCK + lateral) * left)
                    _save(img, folder / "images" / db_names[-1])
                next_place += 1
        q_names, q_utm = [], []
        for q in range(n_queries):
            rng = _rng(seed, _PLACE_Q, split_index, q)
            j = int(rng.integers(n_streets))
            s = float(places[j][rng.integers(n_places)]) + rng.uniform(-5.0, 5.0)
            lateral, yaw = rng.uniform(-3.0, 3.0), int(rng.integers(1, 3))
            distance = _HALF_STREET - (lateral if yaw == 1 else -lateral)
            img = _place_image(rng, strips[j][yaw - 1], s, distance, math.radians(rng.uniform(15, 35)), yaw == 2,
                               True)
            q_names.append(_pittsburgh_name(next_query, yaw))
            q_utm.append(origin + s * forward + (j * _BLOCK + lateral) * left)
            _save(img, folder / "images" / "queries_real" / q_names[-1])
            next_query += 1
        write_dbstruct(folder / "datasets" / f"synth_places_{split}.mat", DbStruct(
            which_set=split, db_image_names=tuple(db_names), utm_db=np.array(db_utm),
            query_image_names=tuple(q_names), utm_queries=np.array(q_utm), pos_dist_thr=POS_DIST_THR))
        counts.update({f"{split}_db": len(db_names), f"{split}_queries": len(q_names)})
    log.info("synthetic places in %s: %s", folder, counts)
    return counts
