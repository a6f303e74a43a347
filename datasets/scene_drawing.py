"""Procedural drawing shared by the embedded generators (:mod:`datasets.synthetic_scenes`,
:mod:`datasets.synthetic_streets`): facades, perspective warps, backgrounds, occluders, relighting, one
random stream per image and key, and the JPEG writer. Every texture is procedural (no photographs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

JPEG_QUALITY = 90
DB_SIZE = (128, 96)  # (width, height) of landmark database, training and place images

# Independent random streams, so that one image's content does not depend on how many were drawn before it.
LANDMARK, DB_VIEW, QUERY, DISTRACTOR, TRAIN_CLASS, TRAIN_VIEW, STREET, PLACE_DB, PLACE_Q = range(9)

_STONES = np.array([(196, 178, 146), (168, 160, 150), (176, 112, 88), (214, 204, 184), (150, 138, 118),
                    (190, 150, 120), (160, 170, 172), (205, 190, 160)], dtype=np.float64)


def image_stream(seed: int, *keys: int) -> np.random.Generator:
    # numpy's spawn keys, not default_rng([seed, *keys]): a list seed equals the same list plus trailing zeros.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=keys))


def jittered_colour(base: np.ndarray, rng: np.random.Generator, jitter: float) -> tuple[int, int, int]:
    c = np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def shade(c: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    r, g, b = (int(min(255, v * factor)) for v in c)
    return r, g, b


def draw_facade(rng: np.random.Generator, width: int, height: int, floors: int, cols: int,
            roof: bool = True) -> Image.Image:
    """A building front, RGBA (height, width); transparent around the roof line."""
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    wall = jittered_colour(_STONES[rng.integers(len(_STONES))], rng, 18)
    trim = shade(wall, rng.choice([0.7, 1.2]))
    kind = int(rng.integers(4)) if roof else 0  # 0 flat, 1 gable, 2 dome, 3 twin towers
    top = int(height * rng.uniform(0.18, 0.3)) if kind else 0
    draw.rectangle([0, top, width - 1, height - 1], fill=wall)
    if kind == 1:
        draw.polygon([(0, top), (width / 2, 0), (width - 1, top)], fill=trim)
        draw.ellipse([width / 2 - top / 3, top / 3, width / 2 + top / 3, top], fill=shade(wall, 0.5))
    elif kind == 2:
        dome = jittered_colour(np.array([90.0, 120, 110]) if rng.random() < 0.5 else np.array(trim, float), rng, 20)
        draw.ellipse([width * 0.3, 0, width * 0.7, 2 * top], fill=dome)
    elif kind == 3:
        tw = width * rng.uniform(0.12, 0.2)
        for x0 in (0, width - tw):
            draw.rectangle([x0, top * 0.35, x0 + tw, top], fill=trim)
            draw.polygon([(x0, top * 0.35), (x0 + tw / 2, 0), (x0 + tw, top * 0.35)], fill=shade(trim, 0.6))
    glass = jittered_colour(np.array([60.0, 70, 85]), rng, 25)
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
            draw.rectangle([c * cell_w - 1, top, c * cell_w + 1, height - 1], fill=shade(trim, 0.9))
    if rng.random() < 0.5 and floors > 1:  # a rosette or clock above the door
        r, cx, cy = min(cell_w, cell_h) * 0.3, width / 2, top + cell_h * (floors - 1.5) + cell_h * 0.55
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=trim, outline=shade(wall, 0.5))
        draw.ellipse([cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2], fill=shade(wall, 0.6))
    pixels = np.asarray(img).astype(np.float64)
    grain = rng.normal(0.0, 7.0, (height, width, 1))  # stone grain, so no surface is perfectly flat
    pixels[..., :3] = np.clip(pixels[..., :3] + grain, 0, 255)
    return Image.fromarray(pixels.astype(np.uint8), "RGBA")


def perspective_coeffs(output: np.ndarray, source: np.ndarray) -> tuple[float, ...]:
    """PIL's 8 perspective coefficients mapping 4 output points (4, 2) to 4 source points (4, 2)."""
    a = np.zeros((8, 8))
    for i, ((x, y), (u, v)) in enumerate(zip(output, source, strict=True)):
        a[2 * i] = (x, y, 1, 0, 0, 0, -x * u, -y * u)
        a[2 * i + 1] = (0, 0, 0, x, y, 1, -x * v, -y * v)
    return tuple(float(c) for c in np.linalg.solve(a, source.reshape(8)))


def warp(img: Image.Image, quad: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """``img`` with its corners (TL, TR, BR, BL) moved onto ``quad`` (4, 2), on a transparent canvas."""
    w, h = img.size
    corners = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64)
    return img.transform(size, Image.Transform.PERSPECTIVE, perspective_coeffs(quad, corners),
                         Image.Resampling.BILINEAR)


def background(rng: np.random.Generator, size: tuple[int, int], horizon: float) -> Image.Image:
    """Sky gradient, ground, and a skyline of distant blocks: varied clutter behind the subject."""
    w, h = size
    sky = np.array(jittered_colour(np.array([150.0, 180, 215]), rng, 40), dtype=np.float64)
    ground = np.array(jittered_colour(np.array([110.0, 110, 100]), rng, 25), dtype=np.float64)
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    rows = np.where(t * h < horizon, sky * (0.8 + 0.3 * t), ground * (0.9 + 0.2 * t))
    img = Image.fromarray(np.broadcast_to(rows, (h, w, 3)).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        x0, bw, bh = rng.uniform(-10, w), rng.uniform(10, 40), rng.uniform(5, horizon * 0.8)
        draw.rectangle([x0, horizon - bh, x0 + bw, horizon], fill=jittered_colour(_STONES.mean(0) * 0.8, rng, 30))
    return img


def occluder(draw: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, rng: np.random.Generator,
              x: float, base: float, scale: float) -> None:
    """A tree, pole, vehicle or pedestrian standing at (x, base), drawn on the image and on the mask."""
    kind = int(rng.integers(4))
    if kind == 0:  # tree
        r = scale * rng.uniform(0.25, 0.45)
        shapes = [("rect", [x - r / 6, base - scale * 0.6, x + r / 6, base], (90, 65, 45)),
                  ("ellipse", [x - r, base - scale * 0.6 - 1.6 * r, x + r, base - scale * 0.5],
                   jittered_colour(np.array([60.0, 110, 55]), rng, 25))]
    elif kind == 1:  # pole with a lamp
        shapes = [("rect", [x - 1.5, base - scale, x + 1.5, base], (50, 50, 55)),
                  ("ellipse", [x - 4, base - scale - 4, x + 4, base - scale + 4], (230, 220, 160))]
    elif kind == 2:  # vehicle: body, window, wheels
        ln, ht = scale * rng.uniform(0.6, 0.9), scale * 0.3
        body = jittered_colour(np.array([128.0, 128, 128]), rng, 110)
        shapes = [("rect", [x - ln / 2, base - ht, x + ln / 2, base - ht * 0.2], body),
                  ("rect", [x - ln / 4, base - ht * 1.6, x + ln / 4, base - ht], shade(body, 0.6)),
                  ("ellipse", [x - ln / 3 - 4, base - 8, x - ln / 3 + 4, base], (20, 20, 20)),
                  ("ellipse", [x + ln / 3 - 4, base - 8, x + ln / 3 + 4, base], (20, 20, 20))]
    else:  # pedestrian
        ht = scale * rng.uniform(0.35, 0.5)
        shapes = [("rect", [x - ht / 8, base - ht * 0.8, x + ht / 8, base],
                   jittered_colour(np.full(3, 100.0), rng, 90)),
                  ("ellipse", [x - ht / 10, base - ht, x + ht / 10, base - ht * 0.8], (220, 180, 150))]
    for kind_name, box, fill in shapes:
        for target, colour in ((draw, fill), (mask, 255)):
            (target.rectangle if kind_name == "rect" else target.ellipse)(box, fill=colour)


def relight(img: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
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


def save_jpeg(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert("RGB").save(path, format="JPEG", quality=JPEG_QUALITY)
