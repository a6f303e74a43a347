"""The embedded benchmark of real photographs: views of the photographs that installable packages ship
(scikit-image's ``skimage/data``, scikit-learn's sample images, matplotlib's sample data), in the revisited
Oxford/Paris layout. The plugin that registers it is ``photo_landmarks`` in :mod:`datasets.synthetic`.

Each landmark is a photograph (or one half of a wide one). Its database views are made by the changes a camera
makes: a crop at another scale and position, a rotation, a perspective skew, a lighting change, blur, occlusion
by a patch of another photograph, JPEG re-compression at another quality, and for one view in four a file stored
rotated by 90 degrees with an EXIF orientation tag that says how to show it. Each view is labelled by its
severity as the revisited protocol labels: **easy** (most of the landmark, mild change), **hard** (a part of
it, or a strong change) and **junk** (a sliver, or mostly hidden). Queries show the landmark smaller, on a wall
of another photograph's texture, and their box is where it is. Distractors are views of the textures and of the
other photographs that are no landmark. Same seed and same packages, byte-identical files.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from datasets.base import RevisitedGroundTruth
from datasets.formats import write_revisited_gnd

log = logging.getLogger(__name__)

DB_LONG_SIDE, QUERY_LONG_SIDE = 256, 320
VIEWS_PER_LANDMARK, QUERIES_PER_LANDMARK, VIEWS_PER_DISTRACTOR = 8, 2, 3
EXIF_ORIENTATION = 0x0112
_VIEW, _QUERY, _DISTRACTOR = range(3)
# Severity of a view, as the revisited labels: (fraction of the landmark's side kept, max rotation in degrees,
# max skew as a fraction of the side, lighting strength, max occluded fraction, JPEG quality range, blur radius)
_SEVERITY = {"easy": ((0.75, 1.0), 6.0, 0.05, 0.25, 0.0, (80, 95), 0.0),
             "hard": ((0.4, 0.65), 25.0, 0.18, 0.7, 0.3, (30, 70), 1.2),
             "junk": ((0.12, 0.22), 35.0, 0.2, 0.9, 0.5, (25, 50), 1.5)}
_TARGETS = ("easy", "easy", "easy", "hard", "hard", "hard", "junk", "hard")  # per landmark, before shuffling


def _skimage(name: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        import skimage.data

        data = getattr(skimage.data, name)()
        return Image.fromarray(data[0] if name == "stereo_motorcycle" else data).convert("RGB")
    return load


def _sklearn(name: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(name)).convert("RGB")
    return load


def _matplotlib(name: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from matplotlib.cbook import get_sample_data

        with Image.open(get_sample_data(name, asfileobj=False)) as img:  # type: ignore[arg-type]
            return img.convert("RGB")
    return load


# Landmarks: (name, loader, box as fractions (x1, y1, x2, y2) of the photograph: one half of a wide one)
LANDMARKS: tuple[tuple[str, Callable[[], Image.Image], tuple[float, float, float, float]], ...] = (
    ("astronaut", _skimage("astronaut"), (0, 0, 1, 1)),
    ("chelsea", _skimage("chelsea"), (0, 0, 1, 1)),
    ("coffee", _skimage("coffee"), (0, 0, 1, 1)),
    ("rocket", _skimage("rocket"), (0, 0, 1, 1)),
    ("motorcycle", _skimage("stereo_motorcycle"), (0, 0, 1, 1)),
    ("hubble", _skimage("hubble_deep_field"), (0, 0, 1, 1)),
    ("retina", _skimage("retina"), (0, 0, 1, 1)),
    ("ihc", _skimage("immunohistochemistry"), (0, 0, 1, 1)),
    ("camera", _skimage("camera"), (0, 0, 1, 1)),
    ("coins", _skimage("coins"), (0, 0, 1, 1)),
    ("china_left", _sklearn("china.jpg"), (0, 0, 0.5, 1)),
    ("china_right", _sklearn("china.jpg"), (0.5, 0, 1, 1)),
    ("flower_left", _sklearn("flower.jpg"), (0, 0, 0.5, 1)),
    ("flower_right", _sklearn("flower.jpg"), (0.5, 0, 1, 1)),
    ("grace_hopper", _matplotlib("grace_hopper.jpg"), (0, 0, 1, 1)),
    ("present", _matplotlib("Minduka_Present_Blue_Pack.png"), (0, 0, 1, 1)),
)
# Textures: walls behind the queries, occluders and distractors; never a landmark.
TEXTURES = (("brick", _skimage("brick")), ("grass", _skimage("grass")), ("gravel", _skimage("gravel")),
            ("moon", _skimage("moon")), ("page", _skimage("page")), ("text", _skimage("text")),
            ("clock", _skimage("clock")), ("cell", _skimage("cell")))


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=keys))


def _sized(width: float, height: float, long_side: int) -> tuple[int, int]:
    scale = long_side / max(width, height)
    return max(8, round(width * scale)), max(8, round(height * scale))


def _view(photo: Image.Image, box: tuple[float, ...], rng: np.random.Generator, severity: str,
          long_side: int) -> Image.Image:
    """A camera's view of the landmark ``box`` (pixels) of ``photo`` at ``severity``."""
    keep, max_angle, max_skew, light, occluded, quality, blur = _SEVERITY[severity]
    x1, y1, x2, y2 = box
    side = rng.uniform(*keep)
    width, height = (x2 - x1) * side, (y2 - y1) * side * rng.uniform(0.85, 1.15)
    cx = rng.uniform(x1 + width / 2, max(x1 + width / 2, x2 - width / 2))
    cy = rng.uniform(y1 + height / 2, max(y1 + height / 2, y2 - height / 2))
    angle = np.deg2rad(rng.uniform(-max_angle, max_angle))
    corners = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]], dtype=np.float64) * [width / 2, height / 2]
    corners += rng.uniform(-max_skew, max_skew, (4, 2)) * [width, height]
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    quad = corners @ rotation.T + [cx, cy]  # source corners of the output's top-left, bottom-left, ...
    size = _sized(width, height, long_side)
    img = photo.transform(size, Image.Transform.QUAD, tuple(quad.ravel()), Image.Resampling.BICUBIC,
                          fillcolor=(0, 0, 0))
    img = _relight(img, rng, light)
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, blur)))
    if occluded:
        img = _occlude(img, rng, rng.uniform(0, occluded))
    return _recompressed(img, rng, quality)


def _relight(img: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(float(1 + strength * rng.uniform(-0.5, 0.5)))
    return img


def _occlude(img: Image.Image, rng: np.random.Generator, fraction: float) -> Image.Image:
    """A flat-coloured block (a passer-by, a sign) over about ``fraction`` of the image."""
    width, height = img.size
    w, h = width * np.sqrt(fraction) * rng.uniform(0.8, 1.25), height * np.sqrt(fraction)
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    out = img.copy()
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    ImageDraw.Draw(out).rounded_rectangle([x, y, x + w, y + h], radius=min(w, h) / 4, fill=colour)
    return out


def _recompressed(img: Image.Image, rng: np.random.Generator, quality: tuple[int, int]) -> Image.Image:
    import io

    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _query(photo: Image.Image, box: tuple[float, ...], wall: Image.Image, rng: np.random.Generator
           ) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """The landmark, mildly changed, on a wall of texture; returns the image and the landmark's box in it."""
    landmark = _view(photo, box, rng, "easy", round(QUERY_LONG_SIDE * rng.uniform(0.55, 0.75)))
    size = _sized(4, 3, QUERY_LONG_SIDE) if landmark.width >= landmark.height else _sized(3, 4, QUERY_LONG_SIDE)
    canvas = _relight(wall.resize(size, Image.Resampling.BICUBIC), rng, 0.5)
    x = int(rng.integers(0, size[0] - landmark.width + 1))
    y = int(rng.integers(0, size[1] - landmark.height + 1))
    canvas.paste(landmark, (x, y))
    return canvas, (float(x), float(y), float(x + landmark.width), float(y + landmark.height))


def _save(img: Image.Image, path: Path, rng: np.random.Generator, exif_rotated: bool = False) -> None:
    """JPEG; ``exif_rotated``: the pixels stored turned by 90 degrees, with the EXIF orientation (6) to undo it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if exif_rotated:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6  # shown after a 90-degree clockwise turn of the stored pixels
        img.transpose(Image.Transpose.ROTATE_90).save(path, format="JPEG", quality=92, exif=exif)
    else:
        img.save(path, format="JPEG", quality=92)


def generate_photo_landmarks(folder: Path, seed: int = 0) -> dict[str, int]:
    """Write the benchmark into ``folder`` (``jpg/``, ``gnd_photo_landmarks.pkl``); return its counts.

    Database views (``<landmark>_<i>``, long side 256 px): 8 per landmark (3 easy, 4 hard, 1 junk); 2 queries
    per landmark (``query_<landmark>_<j>``, 320 px) with the landmark's box; ``VIEWS_PER_DISTRACTOR`` views of each texture (``distractor_<texture>_<i>``)."""
    folder = Path(folder)
    textures = [load() for _, load in TEXTURES]
    names: list[str] = []
    labels: list[tuple[int, str]] = []
    query_names: list[str] = []
    boxes: list[tuple[float, float, float, float]] = []
    for k, (name, load, fractions) in enumerate(LANDMARKS):
        photo = load()
        box = (fractions[0] * photo.width, fractions[1] * photo.height,
               fractions[2] * photo.width, fractions[3] * photo.height)
        targets = _rng(seed, _VIEW, k).permutation(list(_TARGETS))
        for i, severity in enumerate(targets):
            rng = _rng(seed, _VIEW, k, i)
            names.append(f"{name}_{i:03d}")
            labels.append((k, str(severity)))
            _save(_view(photo, box, rng, str(severity), DB_LONG_SIDE), folder / "jpg" / f"{names[-1]}.jpg", rng,
                  exif_rotated=i % 4 == 3)
        for j in range(QUERIES_PER_LANDMARK):
            rng = _rng(seed, _QUERY, k, j)
            image, query_box = _query(photo, box, textures[int(rng.integers(len(textures)))], rng)
            query_names.append(f"query_{name}_{j + 1}")
            boxes.append(query_box)
            _save(image, folder / "jpg" / f"{query_names[-1]}.jpg", rng)
    for t, ((name, _), texture) in enumerate(zip(TEXTURES, textures, strict=True)):
        for i in range(VIEWS_PER_DISTRACTOR):
            rng = _rng(seed, _DISTRACTOR, t, i)
            full = (0.0, 0.0, float(texture.width), float(texture.height))
            names.append(f"distractor_{name}_{i:03d}")
            labels.append((-1, ""))
            _save(_view(texture, full, rng, "easy" if i == 0 else "hard", DB_LONG_SIDE),
                  folder / "jpg" / f"{names[-1]}.jpg", rng)
    order = sorted(range(len(names)), key=names.__getitem__)
    names, labels = [names[i] for i in order], [labels[i] for i in order]
    gnd = {kind: tuple(np.array([i for i, (k, label) in enumerate(labels)
                                 if k == q // QUERIES_PER_LANDMARK and label == kind], dtype=np.int64)
                       for q in range(len(query_names))) for kind in ("easy", "hard", "junk")}
    write_revisited_gnd(folder / "gnd_photo_landmarks.pkl", RevisitedGroundTruth(
        n_db=len(names), easy=gnd["easy"], hard=gnd["hard"], junk=gnd["junk"], query_boxes=np.array(boxes),
        db_names=tuple(names), query_names=tuple(query_names)))
    counts = {"db": len(names), "queries": len(query_names)}
    log.info("photo landmarks in %s: %s", folder, counts)
    return counts
