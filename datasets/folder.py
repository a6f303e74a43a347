"""Your own data as a dataset, without a plugin: ``--dataset revisited:PATH`` or ``--dataset places:PATH``.

- ``revisited:PATH``: PATH is a folder holding one ground-truth pickle in revisitop's layout (``gnd_<x>.pkl``:
  ``imlist``, ``qimlist``, ``gnd`` with per query ``easy`` / ``hard`` / ``junk`` ids and ``bbx``;
  without boxes queries are used whole), or that pickle itself. Images are ``jpg/<name>.jpg`` as revisitop
  lays them out, else ``<name>.jpg`` or ``<name>`` beside the pickle (where the first image is decides for all).
- ``places:PATH``: a folder holding one NetVLAD dbStruct ``.mat`` (``dbImageFns``, ``utmDb``, ``qImageFns``,
  ``utmQ``, ``posDistThr``), or that file. Image names resolve against its folder or ``images/``, queries
  also under ``queries/`` or ``queries_real/`` of either (NetVLAD's layouts).

The folder is read in place (the data root only keeps caches). Its results are stored as dataset
``folder_<x>`` (``x`` from the ground-truth file's name) and record the folder's path and a digest of its
contents (``config.dataset_folder``), so they are never taken for a built-in dataset's. Loading refuses an
image listed twice (the gnd reader refuses an id listed twice for one query); ``check`` (``data verify``)
names every missing image.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from benchmarks.core.acquire import AcquireOptions
from benchmarks.core.errors import InputError
from benchmarks.core.file_digests import file_digests, sha256_file
from datasets.base import DatasetSpec, LoadedDataset, PlaceGroundTruth, RevisitedGroundTruth
from datasets.formats import DbStruct, read_dbstruct, read_revisited_gnd
from datasets.places import DbStructDataset
from datasets.revisitop import IMAGES, RevisitedDataset, image_problems

PREFIX = "folder_"  # no registered dataset name starts with it (tests/test_folder_datasets.py holds them to it)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "data"


def _listed_twice(names: tuple[str, ...], label: str, path: Path) -> None:
    twice = [name for name, count in Counter(names).items() if count > 1]
    if twice:
        raise InputError(f"{len(twice)} {label} image(s) listed twice (e.g. {twice[0]!r}); each image must have "
                         "one id: remove the repeats", path)


class FolderDataset(DatasetSpec):
    """A dataset read in place from a user's folder; ``fmt`` names the ground-truth layout."""

    fmt: ClassVar[str]
    suffix: ClassVar[str]  # of the ground-truth file
    files = ()
    splits = ("test",)

    def __init__(self, path: Path) -> None:
        path = Path(path).expanduser().resolve()
        self.ground_truth_file = self._find(path)
        self.root = self.ground_truth_file.parent
        self.name = PREFIX + _slug(self.ground_truth_file.stem.removeprefix("gnd_"))
        self.description = f"{self.fmt} ground truth {self.ground_truth_file} (a folder of your own)"

    def _find(self, path: Path) -> Path:
        """The ground-truth file ``path`` names, or the one such file in the folder ``path``."""
        if path.is_file():
            if path.suffix.lower() != self.suffix:
                raise InputError(f"{self.fmt}:PATH takes a folder or its {self.suffix} ground truth", path)
            return path
        if not path.is_dir():
            raise InputError(f"no such folder: give {self.fmt}:PATH, PATH holding a {self.suffix} ground truth", path)
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == self.suffix and p.is_file())
        if not found:
            raise InputError(f"no {self.suffix} ground-truth file here: give the folder that holds it, or the file",
                             path)
        if len(found) > 1:
            raise InputError(f"{len(found)} {self.suffix} ground-truth files ({', '.join(p.name for p in found)}): "
                             f"name one, {self.fmt}:{found[0]}", path)
        return found[0]

    def folder(self, data_root: Path) -> Path:
        return self.root

    def prepare(self, data_root: Path, options: AcquireOptions) -> None:
        """Nothing to fetch: the folder is checked as ``data verify`` checks it."""
        problems = self.check(data_root)
        if problems:
            more = f" (and {len(problems) - 1} more: `data verify {self.fmt}:{self.root}` lists them)"
            raise InputError(problems[0] + (more if len(problems) > 1 else ""))

    def check(self, data_root: Path) -> list[str]:
        try:
            loaded = self.load(data_root)
        except InputError as error:
            return [str(error)]
        return (self.ground_truth_problems(loaded) + image_problems(loaded.db_paths, "database")
                + image_problems(loaded.query_paths, "query"))

    def ground_truth_problems(self, loaded: LoadedDataset) -> list[str]:
        """What ``check`` finds wrong in ground truth that loads (none by default)."""
        return []

    def origin(self, data_root: Path, loaded: LoadedDataset) -> dict[str, str]:
        """The folder, its ground-truth file and a sha256 of the ground truth's and every image's contents."""
        digest = hashlib.sha256(sha256_file(self.ground_truth_file).encode())
        paths = (*loaded.db_paths, *loaded.query_paths)
        for path, content in zip(paths, file_digests(paths, data_root / "cache" / "file-sha256.sqlite"), strict=True):
            digest.update(f"\n{path.relative_to(self.root)}\t{content}".encode())
        return {"format": self.fmt, "path": str(self.root), "ground_truth": self.ground_truth_file.name,
                "sha256": digest.hexdigest()}


class RevisitedFolder(FolderDataset, RevisitedDataset):
    """``revisited:PATH``: a gnd pickle in revisitop's layout and its images."""

    fmt = "revisited"
    suffix = ".pkl"

    def load(self, data_root: Path, split: str | None = None) -> LoadedDataset:
        self.split_name(split)
        gnd = read_revisited_gnd(self.ground_truth_file)
        _listed_twice(gnd.db_names, "database", self.ground_truth_file)
        _listed_twice(gnd.query_names, "query", self.ground_truth_file)
        place = self._image_place(gnd.db_names[0] if gnd.db_names else "")
        return LoadedDataset(tuple(place(n) for n in gnd.db_names), tuple(place(n) for n in gnd.query_names), gnd)

    def _image_place(self, first: str) -> Callable[[str], Path]:
        """How names map to files: ``jpg/<name>.jpg``, ``<name>.jpg`` or ``<name>``, whichever holds ``first``."""
        places = (lambda n: self.root / IMAGES / f"{n}.jpg", lambda n: self.root / f"{n}.jpg",
                  lambda n: self.root / n)
        return next((p for p in places if p(first).is_file()), places[0])

    def ground_truth_problems(self, loaded: LoadedDataset) -> list[str]:
        gnd = loaded.ground_truth
        assert isinstance(gnd, RevisitedGroundTruth)
        overlap = sorted(set(gnd.query_names) & set(gnd.db_names))
        return [f"{len(overlap)} query images are also in the database (e.g. {overlap[0]})"] if overlap else []


class PlacesFolder(FolderDataset, DbStructDataset):
    """``places:PATH``: a NetVLAD dbStruct ``.mat`` and its images (Recall@N within ``posDistThr``)."""

    fmt = "places"
    suffix = ".mat"
    db_dirs = (".", "images")
    query_dirs = (".", "queries", "queries_real", "images/queries", "images/queries_real", "images")

    def dbstruct(self, data_root: Path, split: str | None = None) -> DbStruct:
        self.split_name(split)
        db = read_dbstruct(self.ground_truth_file)
        _listed_twice(db.db_image_names, "database", self.ground_truth_file)
        _listed_twice(db.query_image_names, "query", self.ground_truth_file)
        return db

    def images_root(self, data_root: Path) -> Path:
        return self.root

    def summary(self, data_root: Path) -> dict[str, object]:
        counts = DatasetSpec.summary(self, data_root)
        try:
            gt = self.load(data_root).ground_truth
        except InputError:
            return counts
        assert isinstance(gt, PlaceGroundTruth)
        return {**counts, "positives": f"database images within posDistThr ({gt.threshold:g} m) in UTM"}


FORMATS: dict[str, type[FolderDataset]] = {"revisited": RevisitedFolder, "places": PlacesFolder}


def folder_dataset(fmt: str, path: str) -> FolderDataset:
    """The dataset ``fmt:path`` names (``fmt`` one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown folder format {fmt!r} in '{fmt}:{path}': use revisited:PATH (a gnd_*.pkl) or "
                         "places:PATH (a dbStruct .mat)")
    if not path:
        raise InputError(f"'{fmt}:' needs the folder: {fmt}:PATH")
    return FORMATS[fmt](Path(path))
