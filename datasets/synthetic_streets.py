"""The embedded places generator: a small city of facade-lined streets in the Pittsburgh layout (``images/``,
``images/queries_real/``, NetVLAD dbStruct ``datasets/synth_places_{train,val,test}.mat``), deterministic in its seed
(see :mod:`datasets.synthetic_scenes`; the drawing is :mod:`datasets.scene_drawing`)."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datasets.formats import DbStruct, write_dbstruct
from datasets.scene_drawing import (
    DB_SIZE,
    PLACE_DB,
    PLACE_Q,
    STREET,
    background,
    draw_facade,
    image_stream,
    occluder,
    perspective_coeffs,
    relight,
    save_jpeg,
)

log = logging.getLogger(__name__)

# Place splits: (name, streets, database locations per street, queries, area origin easting/northing). A split
# reaches < 0.85 km from its origin (< 320 m along its streets, <= 5 x 150 m across), the origins lie 1.5 km
# apart: the areas are disjoint for every seed.
PLACE_SPLITS = (("train", 6, 25, 100, (583500.0, 4475500.0)), ("val", 2, 25, 30, (585000.0, 4475500.0)),
                ("test", 4, 25, 60, (585000.0, 4477000.0)))
POS_DIST_THR = 25.0

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
        facade = draw_facade(rng, int(width * _PPM), int(height * _PPM), floors=max(2, round(height / 3.5)),
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
    layer = strip.transform(DB_SIZE, Image.Transform.PERSPECTIVE, perspective_coeffs(image_points, strip_points),
                            Image.Resampling.BILINEAR).convert("RGBA")
    img = background(rng, DB_SIZE, horizon=_HORIZON + 8)
    img.paste(layer, (0, 0), layer)
    return img


def _place_image(rng: np.random.Generator, strip: Image.Image, along: float, distance: float, angle: float,
                 right: bool, query: bool) -> Image.Image:
    """A database view (mild lighting jitter, at most a parked car) or a query (another time of day,
    colour cast, vehicles and pedestrians, blur and sensor noise)."""
    img = _street_view(rng, strip, along, distance, angle, right)
    draw, mask = ImageDraw.Draw(img), ImageDraw.Draw(Image.new("L", DB_SIZE))
    for _ in range(int(rng.integers(1, 4)) if query else int(rng.integers(0, 2))):
        occluder(draw, mask, rng, rng.uniform(0, DB_SIZE[0]), rng.uniform(85, 96), rng.uniform(35, 60))
    if not query:
        return relight(img, rng, rng.uniform(0.0, 0.2))
    img = relight(img.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.0))), rng, rng.uniform(0.3, 0.8))
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
        heading = image_stream(seed, STREET, split_index).uniform(0.0, math.pi)
        forward, left = np.array([math.cos(heading), math.sin(heading)]), np.array([-math.sin(heading),
                                                                                    math.cos(heading)])
        strips: list[tuple[Image.Image, Image.Image]] = []  # per street: its left and right facades
        places: list[np.ndarray] = []  # per street: database positions along it, in metres
        db_names, db_utm = [], []
        for j in range(n_streets):
            rng = image_stream(seed, STREET, split_index, j)
            along = 20.0 + np.cumsum(rng.uniform(8.0, 12.0, n_places))
            length = float(along[-1]) + 60.0  # room for the forward-looking views of the last places
            strips.append((_street_strip(rng, length), _street_strip(rng, length)))
            places.append(along)
            for k, s in enumerate(along):
                rng = image_stream(seed, PLACE_DB, split_index, j, k)
                lateral = rng.uniform(-1.0, 1.0)
                for yaw, strip in enumerate(strips[j], start=1):
                    distance = _HALF_STREET - (lateral if yaw == 1 else -lateral)  # lateral > 0: to the left
                    img = _place_image(rng, strip, s, distance, math.radians(rng.uniform(20, 30)), yaw == 2, False)
                    db_names.append(_pittsburgh_name(next_place, yaw))
                    db_utm.append(origin + s * forward + (j * _BLOCK + lateral) * left)
                    save_jpeg(img, folder / "images" / db_names[-1])
                next_place += 1
        q_names, q_utm = [], []
        for q in range(n_queries):
            rng = image_stream(seed, PLACE_Q, split_index, q)
            j = int(rng.integers(n_streets))
            s = float(places[j][rng.integers(n_places)]) + rng.uniform(-5.0, 5.0)
            lateral, yaw = rng.uniform(-3.0, 3.0), int(rng.integers(1, 3))
            distance = _HALF_STREET - (lateral if yaw == 1 else -lateral)
            img = _place_image(rng, strips[j][yaw - 1], s, distance, math.radians(rng.uniform(15, 35)), yaw == 2,
                               True)
            q_names.append(_pittsburgh_name(next_query, yaw))
            q_utm.append(origin + s * forward + (j * _BLOCK + lateral) * left)
            save_jpeg(img, folder / "images" / "queries_real" / q_names[-1])
            next_query += 1
        write_dbstruct(folder / "datasets" / f"synth_places_{split}.mat", DbStruct(
            which_set=split, db_image_names=tuple(db_names), utm_db=np.array(db_utm),
            query_image_names=tuple(q_names), utm_queries=np.array(q_utm), pos_dist_thr=POS_DIST_THR))
        counts.update({f"{split}_db": len(db_names), f"{split}_queries": len(q_names)})
    log.info("synthetic places in %s: %s", folder, counts)
    return counts
