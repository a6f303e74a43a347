"""The dataset contract: DatasetSpec, FileSpec and the ground-truth types every protocol scores against."""
from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

import numpy as np

from benchmarks.ids import SHA256_PATTERN


class Protocol(StrEnum):
    """How a dataset is scored (see :mod:`benchmarks.metrics`)."""

    REVISITED = "revisited"  # mAP / mP@k, Easy / Medium / Hard
    OXFORD = "oxford"  # original Oxford5k / Paris6k mAP: good + ok positive, junk ignored
    RECALL = "recall"  # Recall@N within a distance threshold


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset, relative to the dataset's folder under the data root.

    ``urls`` are tried in order; ``sha256`` is None where no checksum is published (the first verified
    download then records one in a lock file). ``manual`` replaces ``urls`` for files given out on request,
    and says where to ask.
    """

    name: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    size: int | None = None
    extract: bool = False
    manual: str | None = None

    def __post_init__(self) -> None:
        if Path(self.name).is_absolute() or ".." in Path(self.name).parts:
            raise ValueError(f"file name {self.name!r} must be a relative path inside the dataset folder")
        if self.sha256 is not None and not SHA256_PATTERN.match(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if not self.urls and not self.manual:
            raise ValueError(f"{self.name}: give download urls or manual acquisition instructions")


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


GroundTruth = RevisitedGroundTruth | OxfordGroundTruth | PlaceGroundTruth


@dataclass(frozen=True)
class LoadedDataset:
    """What ``DatasetSpec.load`` returns: image paths in ground-truth order and the ground truth."""

    db_paths: tuple[Path, ...]
    query_paths: tuple[Path, ...]
    ground_truth: GroundTruth  # holds the query boxes where the protocol crops queries


class DatasetSpec(abc.ABC):
    """A benchmark: its files, its protocol and how to read it from its folder under the data root."""

    name: ClassVar[str]
    description: ClassVar[str]
    protocol: ClassVar[Protocol]
    files: ClassVar[tuple[FileSpec, ...]]

    @abc.abstractmethod
    def load(self, root: Path) -> LoadedDataset:
        """Read the dataset from ``root`` (its own folder under the data root)."""

    @abc.abstractmethod
    def check(self, root: Path) -> list[str]:
        """Problems found (counts, ground truth, missing files); an empty list means the dataset is sound."""


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
    if getattr(cls, "__abstractmethods__", None):
        problems.append(f"{registered_name}: does not implement {sorted(cls.__abstractmethods__)}")
    return problems
