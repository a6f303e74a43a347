"""The dataset contract: DatasetSpec and the ground-truth types every protocol scores against."""
from __future__ import annotations

import abc
import hashlib
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from benchmarks.core.acquire import AcquireOptions, FileSpec, acquire_files
from benchmarks.core.errors import InputError


class Protocol(StrEnum):
    """How a dataset is scored (see :mod:`benchmarks.evaluation.metrics`)."""

    REVISITED = "revisited"  # mAP / mP@k, Easy / Medium / Hard
    OXFORD = "oxford"  # original Oxford5k / Paris6k mAP: good + ok positive, junk ignored
    RECALL = "recall"  # Recall@N within a distance threshold
    TRAINING = "training"  # a training set labelled by class (Google Landmarks v2): not scored


def _as_id_tuple(lists: Iterable[object]) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(x, dtype=np.int64).reshape(-1) for x in lists)


@dataclass(frozen=True)
class RevisitedGroundTruth:
    """Revisited Oxford/Paris ground truth: per query, 0-based database ids of easy, hard and junk images."""

    n_db: int
    easy: tuple[np.ndarray, ...]
    hard: tuple[np.ndarray, ...]
    junk: tuple[np.ndarray, ...]
    query_boxes: np.ndarray | None = None  # (n_queries, 4) [x1, y1, x2, y2] in pixels
    db_names: tuple[str, ...] = ()
    query_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("easy", "hard", "junk"):
            object.__setattr__(self, name, _as_id_tuple(getattr(self, name)))

    @property
    def n_queries(self) -> int:
        return len(self.easy)


@dataclass(frozen=True)
class OxfordGroundTruth:
    """Original Oxford5k/Paris6k ground truth: per query, positive (good + ok) and junk database ids."""

    n_db: int
    positives: tuple[np.ndarray, ...]
    junk: tuple[np.ndarray, ...]
    query_boxes: np.ndarray | None = None
    db_names: tuple[str, ...] = ()
    query_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("positives", "junk"):
            object.__setattr__(self, name, _as_id_tuple(getattr(self, name)))

    @property
    def n_queries(self) -> int:
        return len(self.positives)


@dataclass(frozen=True)
class PlaceGroundTruth:
    """Place-recognition ground truth: UTM coordinates (easting, northing) in metres and the threshold.

    ``panorama_size`` G: database images ``g*G .. g*G+G-1`` are cutouts of one panorama (Tokyo 24/7: 12).
    """

    utm_db: np.ndarray  # (n_db, 2)
    utm_queries: np.ndarray  # (n_queries, 2)
    threshold: float = 25.0
    panorama_size: int | None = None
    db_names: tuple[str, ...] = ()
    query_names: tuple[str, ...] = ()

    @property
    def n_db(self) -> int:
        return int(self.utm_db.shape[0])

    @property
    def n_queries(self) -> int:
        return int(self.utm_queries.shape[0])


@dataclass(frozen=True)
class ClassLabels:
    """A training split labelled by class (landmark id per image), as in Google Landmarks v2."""

    labels: np.ndarray  # (n_images,) int64
    image_ids: tuple[str, ...] = ()

    @property
    def n_classes(self) -> int:
        return int(np.unique(self.labels).size)


GroundTruth = RevisitedGroundTruth | OxfordGroundTruth | PlaceGroundTruth | ClassLabels


@dataclass(frozen=True)
class LoadedDataset:
    """What ``DatasetSpec.load`` returns: image paths in ground-truth order and the ground truth.

    Training splits labelled by class have no queries: ``db_paths`` are the training images.
    """

    db_paths: tuple[Path, ...]
    query_paths: tuple[Path, ...]
    ground_truth: GroundTruth  # holds the query boxes where the protocol crops queries


CROP_ROUNDINGS = ("round", "truncate")


def ground_truth_sha256(gt: GroundTruth) -> str:
    """A digest of the ground truth's content (ids, boxes, coordinates), whatever file it came from."""
    digest = hashlib.sha256(type(gt).__name__.encode())
    for name in sorted(vars(gt)):
        value = getattr(gt, name)
        for part in value if isinstance(value, tuple) else (value,):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return digest.hexdigest()


def query_box(box: Sequence[float], rounding: str = "round", size: tuple[int, int] | None = None
              ) -> tuple[int, int, int, int]:
    """The integer crop (x1, y1, x2, y2), x2 and y2 exclusive, of the gnd's ``bbx`` in pixels.

    ``round``: each coordinate to the nearest integer (Python's ``round``: halves to even), no clamping (a box
    beyond the image is padded), exactly Pillow's ``Image.crop`` in revisitop's reference Python code.
    ``truncate``: ``int()`` of each coordinate, clamped to the image of ``size`` (width, height), as numpy
    slicing ``im[y1:y2, x1:x2]`` does in DOLG's official ``evaler/infer.py``."""
    if rounding not in CROP_ROUNDINGS:
        raise ValueError(f"crop rounding must be one of {CROP_ROUNDINGS}, not {rounding!r}")
    if rounding == "round":
        x1, y1, x2, y2 = (round(float(v)) for v in box)
    else:
        if size is None:
            raise ValueError("a truncated crop needs the image size")
        x1, y1, x2, y2 = (max(0, int(float(v))) for v in box)
        x2, y2 = min(x2, size[0]), min(y2, size[1])
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty query box {list(box)}")
    return x1, y1, x2, y2


def crop_query(image: Image.Image, box: Sequence[float], rounding: str = "round") -> Image.Image:
    """The revisited protocol's query crop (see :func:`query_box`), applied before any other processing."""
    return image.crop(query_box(box, rounding, image.size))


def _unreadable(paths: Sequence[Path]) -> list[Path]:
    bad = []
    for path in paths:
        try:
            Image.open(path).close()  # parses the header: enough to catch missing, empty or non-image files
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):  # the last: a forged header
            bad.append(path)
    return bad


def unreadable_images(paths: Sequence[Path], label: str = "images", block: int = 4096) -> list[Path]:
    """The paths in ``paths`` that are missing or whose image header Pillow cannot read, in order.

    Pillow parses headers in Python (about 0.1 ms an image, under the GIL): lists of more than one ``block``
    are checked a block at a time by a process per CPU, so a million images take minutes on one core and a
    fraction of that on many."""
    blocks = [paths[start:start + block] for start in range(0, len(paths), block)]
    workers = min(len(blocks), len(os.sched_getaffinity(0)))
    bad: list[Path] = []
    with (tqdm(total=len(paths), desc=f"checking {label}", unit="img", disable=None, leave=False) as progress,
          ProcessPoolExecutor(max(1, workers)) as pool):  # its processes start only when it is used
        for part, found in zip(blocks, pool.map(_unreadable, blocks) if workers > 1 else map(_unreadable, blocks),
                               strict=True):
            bad += found
            progress.update(len(part))
    return bad


class DatasetSpec(abc.ABC):
    """A benchmark: its files, its protocol and how to read it from its folder under the data root.

    ``splits``: the first is the benchmark's evaluation split; others (``train``, ``val``) feed training.
    ``requires``: other datasets whose folders this one reads (the ``+1m`` variants).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    protocol: ClassVar[Protocol]
    files: ClassVar[tuple[FileSpec, ...]]
    splits: ClassVar[tuple[str, ...]] = ("test",)
    requires: ClassVar[tuple[str, ...]] = ()

    def folder(self, data_root: Path) -> Path:
        """This dataset's own folder under the data root."""
        return Path(data_root) / self.name

    def prepare(self, data_root: Path, options: AcquireOptions) -> None:
        """Download (or generate) what :meth:`load` reads, resuming whatever an earlier run left."""
        if options.archives is not None:
            raise InputError(f"{self.name} is not split into numbered archives: --archives applies to gldv2")
        acquire_files(self.folder(data_root), self.name, self.files, options)

    def split_name(self, split: str | None) -> str:
        """``split`` checked against :attr:`splits` (None: the evaluation split)."""
        if split is None:
            return self.splits[0]
        if split not in self.splits:
            raise InputError(f"{self.name} has no split {split!r} (splits: {', '.join(self.splits)})")
        return split

    @abc.abstractmethod
    def load(self, data_root: Path, split: str | None = None) -> LoadedDataset:
        """Read one split (None: the evaluation split) from this dataset's folder under ``data_root``."""

    @abc.abstractmethod
    def check(self, data_root: Path) -> list[str]:
        """Problems found (counts, ground truth, missing files); an empty list means the dataset is sound."""

    def origin(self, data_root: Path, loaded: LoadedDataset) -> dict[str, str] | None:
        """Where a dataset outside the registry was read from, for results to record (None: a plugin)."""
        return None

    def summary(self, data_root: Path) -> dict[str, object]:
        """Facts for ``data info``: protocol parameters and, where the data is there, counts per split."""
        counts: dict[str, object] = {}
        for split in self.splits:
            try:
                loaded = self.load(data_root, split)
            except InputError as error:
                counts[split] = f"not available ({error.message})"
                continue
            counts[split] = {"db": len(loaded.db_paths), "queries": len(loaded.query_paths)}
        return {"counts": counts}


def dataset_problems(registered_name: str, cls: type[DatasetSpec]) -> list[str]:
    """Contract check of a dataset plugin's declarations (files, protocol, description)."""
    if not (isinstance(cls, type) and issubclass(cls, DatasetSpec)):
        return [f"{registered_name}: {cls!r} does not subclass DatasetSpec"]
    problems = []
    if getattr(cls, "name", None) != registered_name:
        problems.append(f"{registered_name}: class name attribute {getattr(cls, 'name', None)!r} differs")
    if not getattr(cls, "description", ""):
        problems.append(f"{registered_name}: no one-line description")
    if not isinstance(getattr(cls, "protocol", None), Protocol):
        problems.append(f"{registered_name}: protocol must be a Protocol")
    files = getattr(cls, "files", None)
    if not isinstance(files, tuple) or not all(isinstance(f, FileSpec) for f in files):
        problems.append(f"{registered_name}: files must be a tuple of FileSpec")
    elif len({f.name for f in files}) != len(files):
        problems.append(f"{registered_name}: two FileSpecs share a name")
    splits = getattr(cls, "splits", None)
    if not (isinstance(splits, tuple) and splits and all(isinstance(s, str) for s in splits)):
        problems.append(f"{registered_name}: splits must be a non-empty tuple of names, evaluation split first")
    if getattr(cls, "__abstractmethods__", None):
        problems.append(f"{registered_name}: does not implement {sorted(cls.__abstractmethods__)}")
    return problems
