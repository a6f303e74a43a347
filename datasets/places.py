"""Place-recognition datasets described by NetVLAD dbStruct ``.mat`` files (Pittsburgh, Tokyo 24/7).

The ``.mat`` files are public (``netvlad_v100_datasets.tar.gz``, unpacked under ``structs/``); the images are
given out on request by the datasets' authors. ``data download NAME --images PATH`` links ``PATH`` as the
dataset's ``images/`` folder, then checks that every image each split's ``.mat`` names is there and
readable, and otherwise lists exactly what is missing (all of it in ``missing_images.txt``) and where to ask.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import ClassVar

from benchmarks.core.acquire import AcquireOptions, FileSpec
from benchmarks.core.atomic import atomic_write_text
from benchmarks.core.errors import InputError
from datasets.base import DatasetSpec, LoadedDataset, PlaceGroundTruth, Protocol, unreadable_images
from datasets.formats import DbStruct, read_dbstruct

log = logging.getLogger(__name__)

NETVLAD_STRUCTS = FileSpec(
    "netvlad_v100_datasets.tar.gz",
    urls=("https://www.di.ens.fr/willow/research/netvlad/data/netvlad_v100_datasets.tar.gz",
          "https://data.ciirc.cvut.cz/public/projects/2015netVLAD/Pittsburgh250k/netvlad_v100_datasets.tar.gz"),
    extract_to="structs",
)
MISSING_LIST = "missing_images.txt"


class DbStructDataset(DatasetSpec):
    """Database and query images with UTM coordinates, one dbStruct ``.mat`` per split."""

    protocol = Protocol.RECALL
    mat_files: ClassVar[dict[str, str]]  # split -> .mat file name
    expected_counts: ClassVar[dict[str, tuple[int, int]]]  # split -> (database images, queries)
    structs_dir: ClassVar[str] = "structs"
    panorama_size: ClassVar[int | None] = None
    # Where the images may lie under images/: the NetVLAD code's layout first, then common re-packagings.
    db_dirs: ClassVar[tuple[str, ...]] = ("images", ".")
    query_dirs: ClassVar[tuple[str, ...]] = ("queries", "queries_real")
    db_suffix: ClassVar[str | None] = None  # the images' real extension where the .mat names another

    @property
    def images_request(self) -> str:
        """Where to ask for the images: the ``manual`` text of the ``images`` file ("" when they come with it)."""
        return next((f.manual for f in self.files if f.name == "images" and f.manual), "")

    def dbstruct(self, data_root: Path, split: str | None = None) -> DbStruct:
        name = self.mat_files[self.split_name(split)]
        structs = self.folder(data_root) / self.structs_dir
        found = sorted(structs.rglob(name)) if structs.is_dir() else []
        if not found:
            raise InputError(f"no {name}: run `python -m benchmarks data download {self.name}`", structs)
        return read_dbstruct(found[0])

    def images_root(self, data_root: Path) -> Path:
        return self.folder(data_root) / "images"

    def _paths(self, root: Path, dirs: tuple[str, ...], names: tuple[str, ...], suffix: str | None
               ) -> tuple[Path, ...]:
        """Paths of ``names`` under the first of ``dirs`` holding the first name, as named or with ``suffix``."""
        def renamed(name: str) -> str:
            return str(Path(name).with_suffix(suffix)) if suffix else name

        spellings = (str, renamed) if suffix else (str,)
        for folder in dirs:
            for spell in spellings:
                if names and (root / folder / spell(names[0])).exists():
                    return tuple(root / folder / spell(n) for n in names)
        return tuple(root / dirs[0] / renamed(n) for n in names)  # not there yet: where the release puts them

    def load(self, data_root: Path, split: str | None = None) -> LoadedDataset:
        db = self.dbstruct(data_root, split)
        root = self.images_root(data_root)
        return LoadedDataset(self._paths(root, self.db_dirs, db.db_image_names, self.db_suffix),
                             self._paths(root, self.query_dirs, db.query_image_names, None),
                             db.ground_truth(self.panorama_size))

    def check(self, data_root: Path) -> list[str]:
        problems, loaded = [], []
        for split in self.splits:
            try:
                loaded.append(self.load(data_root, split))
            except InputError as error:
                problems.append(str(error))
                continue
            gt = loaded[-1].ground_truth
            assert isinstance(gt, PlaceGroundTruth)
            want = self.expected_counts[split]
            if (gt.n_db, gt.n_queries) != want:
                problems.append(f"{split}: {gt.n_db} database images and {gt.n_queries} queries, expected "
                                f"{want[0]} and {want[1]}")
            if self.panorama_size and gt.n_db % self.panorama_size:
                problems.append(f"{split}: {gt.n_db} database images are not whole panoramas of "
                                f"{self.panorama_size}")
        missing = self._missing_images(loaded)
        if missing:
            problems.append(f"{len(missing)} images the .mat files name are missing or unreadable, e.g. {missing[0]}")
        return problems

    def _missing_images(self, splits: list[LoadedDataset]) -> list[Path]:
        """Missing or unreadable images of ``splits``, each image read once (Pittsburgh's splits share images)."""
        paths = sorted({p for loaded in splits for p in loaded.db_paths + loaded.query_paths})
        return unreadable_images(paths, self.name)

    def prepare(self, data_root: Path, options: AcquireOptions) -> None:
        """Fetch the public ``.mat`` files, link ``options.images``, then insist every named image is there."""
        super().prepare(data_root, options)
        if options.images is not None:
            self._link_images(data_root, options.images)
        missing = self._missing_images([self.load(data_root, split) for split in self.splits])
        listing = self.folder(data_root) / MISSING_LIST
        if not missing:
            listing.unlink(missing_ok=True)
            return
        atomic_write_text(listing, "".join(f"{p}\n" for p in missing))
        shown = "\n  ".join(str(p) for p in missing[:10])
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise InputError(
            f"the ground truth is in place, but {len(missing)} images it names are missing or unreadable:\n  "
            f"{shown}{more}\n(full list: {listing})\n{self.images_request}\nThen run `python -m benchmarks data "
            f"download {self.name} --images /path/to/that/copy`.", self.images_root(data_root))

    def _link_images(self, data_root: Path, images: Path) -> None:
        images = images.expanduser().resolve()
        if not images.is_dir():
            raise InputError("--images must be a folder holding the dataset's images", images)
        link = self.images_root(data_root)
        if link.exists() and not link.is_symlink():
            raise InputError(f"{link} is a real folder; move it away to link {images} instead", link)
        tmp = link.with_name(f".{link.name}.link")
        tmp.unlink(missing_ok=True)
        os.symlink(images, tmp, target_is_directory=True)
        tmp.replace(link)
        log.info("%s: images linked from %s", self.name, images)

    def summary(self, data_root: Path) -> dict[str, object]:
        extra = {"images": self.images_request} if self.images_request else {}
        if self.panorama_size:
            extra["panorama size"] = f"{self.panorama_size} cutouts: Recall@N counts panoramas"
        return {**super().summary(data_root), "positives": "database images within posDistThr (25 m) in UTM",
                **extra}
