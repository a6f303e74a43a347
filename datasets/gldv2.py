"""Google Landmarks v2, the clean training set (Weyand et al., CVPR 2020; cleaned by Yokoo et al., arXiv 2003.11211).

DOLG and MSCFP train on it: 1,580,470 images of 81,313 landmarks (the counts the MSCFP and DOLG paper notes
in shared/papers give). Files, as the CVDF google-landmark repository lays them out on S3:
``metadata/train_clean.csv`` (``landmark_id,images``, the images a space-separated list of 16-hex-digit ids),
500 image archives ``train/images_000.tar`` .. ``images_499.tar`` (about 1 GB each, all 4.1M training images,
unpacked into ``train/a/b/c/<id>.jpg``) and, per archive, ``md5sum/train/md5.images_NNN.txt``: each archive
is verified against its published md5.

Downloading all 500 archives takes about 500 GB. ``data download gldv2 --archives 0-9`` fetches only those
archives (the clean list and their md5 files always come along); a later run with more ranges adds to what
is there, and every archive resumes where it stopped. The archives split the images by id, not by landmark,
so a subset holds a share of most landmarks: ``load`` returns the clean images that are on disk (in the
list's order, logging how many of the 1,580,470 that is) and fails only when there is none. ``check`` asks for
the complete set: every archive, every clean image readable.
"""
from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from benchmarks.core.acquire import AcquireOptions, FileSpec, acquire_files, is_acquired
from benchmarks.core.errors import InputError
from datasets import DATASETS
from datasets.base import ClassLabels, DatasetSpec, LoadedDataset, Protocol
from datasets.revisitop import count_problem, image_problems, not_downloaded

log = logging.getLogger(__name__)

S3 = "https://s3.amazonaws.com/google-landmark"
CLEAN_LIST = "metadata/train_clean.csv"
IMAGES = "train"
_IMAGE_ID = re.compile(r"^[0-9a-f]{16}$")
_MD5_LINE = re.compile(r"^([0-9a-f]{32})(?:\s+\*?(\S+))?$")  # md5sum's line; the file name may be left out


def archive_name(index: int) -> str:
    return f"{IMAGES}/images_{index:03d}.tar"


def md5_name(index: int) -> str:
    return f"md5sum/train/md5.images_{index:03d}.txt"


def gldv2_files(n_archives: int) -> tuple[FileSpec, ...]:
    """The clean list, then per archive its md5 file and the archive (unpacked into ``train/``)."""
    return (FileSpec(CLEAN_LIST, urls=(f"{S3}/{CLEAN_LIST}",)),
            *(FileSpec(md5_name(i), urls=(f"{S3}/{md5_name(i)}",)) for i in range(n_archives)),
            *(FileSpec(archive_name(i), urls=(f"{S3}/{archive_name(i)}",), extract_to=IMAGES)
              for i in range(n_archives)))


def read_md5(path: Path, archive: str) -> str:
    """The md5 of ``archive`` from its md5sum line (``<md5>  images_NNN.tar``, the name with or without a folder)."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="ascii").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the md5 file ({error})", path) from None
    match = _MD5_LINE.match(lines[0]) if len(lines) == 1 else None
    if match is None or (match[2] is not None and Path(match[2]).name != Path(archive).name):
        raise InputError(f"expected one line '<32 hex digits>  {Path(archive).name}'", path)
    return match[1]


def read_clean_list(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """Image ids and their landmark ids (n,) int64 from ``train_clean.csv``, in the file's order."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        raise not_downloaded("gldv2", path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the clean list ({error})", path) from None
    if not lines or lines[0].strip() != "landmark_id,images":
        raise InputError("expected the header 'landmark_id,images'", path)
    ids: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(lines[1:], 2):
        landmark, _, images = line.partition(",")
        members = images.split()
        if not landmark.strip().isdigit() or not members or not all(_IMAGE_ID.match(m) for m in members):
            raise InputError(f"line {number}: expected 'landmark_id,<16-hex-digit ids separated by spaces>'", path)
        ids += members
        labels += [int(landmark)] * len(members)
    if len(set(ids)) != len(ids):
        raise InputError("an image id is listed twice", path)
    return tuple(ids), np.asarray(labels, dtype=np.int64)


def present(images: Path, ids: tuple[str, ...]) -> np.ndarray:
    """(n,) bool: which ids have ``a/b/c/<id>.jpg`` under ``images``; one directory listing per prefix."""
    by_prefix: dict[str, list[int]] = defaultdict(list)
    for i, image_id in enumerate(ids):
        by_prefix[image_id[:3]].append(i)
    found = np.zeros(len(ids), dtype=bool)
    for prefix, members in by_prefix.items():
        folder = images / prefix[0] / prefix[1] / prefix[2]
        try:
            names = {entry.name for entry in os.scandir(folder)}
        except FileNotFoundError:
            continue
        found[members] = [f"{ids[i]}.jpg" in names for i in members]
    return found


@DATASETS.register("gldv2")
class Gldv2(DatasetSpec):
    name = "gldv2"
    description = ("Google Landmarks v2 clean training set: 1,580,470 images, 81,313 landmarks (DOLG, MSCFP "
                   "training); 500 archives, md5-verified; --archives for a subset")
    protocol = Protocol.TRAINING
    splits = ("train",)
    n_archives: ClassVar[int] = 500
    expected_counts: ClassVar[tuple[int, int]] = (1_580_470, 81_313)  # (clean images, landmarks)
    files = gldv2_files(n_archives)

    def archives(self, chosen: tuple[int, ...] | None) -> tuple[int, ...]:
        if chosen is None:
            return tuple(range(self.n_archives))
        outside = [i for i in chosen if i >= self.n_archives]
        if outside:
            raise InputError(f"--archives: {self.name} has archives 0-{self.n_archives - 1}, not {outside[0]}")
        return chosen

    def prepare(self, data_root: Path, options: AcquireOptions) -> None:
        """The clean list and the chosen archives' md5 files, then the archives, each checked against its md5."""
        folder, chosen = self.folder(data_root), self.archives(options.archives)
        specs = {f.name: f for f in self.files}
        acquire_files(folder, self.name, (specs[CLEAN_LIST], *(specs[md5_name(i)] for i in chosen)), options)
        archives = tuple(replace(specs[archive_name(i)], md5=read_md5(folder / md5_name(i), archive_name(i)))
                         for i in chosen)
        acquire_files(folder, self.name, archives, options)

    def load(self, data_root: Path, split: str | None = None) -> LoadedDataset:
        """The clean images on disk, labelled by landmark id (no queries: a training split)."""
        self.split_name(split)
        ids, labels = read_clean_list(self.folder(data_root) / CLEAN_LIST)
        images = self.folder(data_root) / IMAGES
        keep = present(images, ids)
        if not keep.any():
            raise InputError(f"none of the {len(ids)} clean images is on disk: run `python -m benchmarks data "
                             f"download {self.name}` (--archives 0-9 for a part)", images)
        if not keep.all():
            log.info("%s: %d of the %d clean images are on disk", self.name, keep.sum(), len(ids))
        kept = tuple(image_id for image_id, k in zip(ids, keep, strict=True) if k)
        paths = tuple(images / i[0] / i[1] / i[2] / f"{i}.jpg" for i in kept)
        return LoadedDataset(paths, (), ClassLabels(labels[keep], kept))

    def check(self, data_root: Path) -> list[str]:
        folder = self.folder(data_root)
        try:
            ids, labels = read_clean_list(folder / CLEAN_LIST)
            loaded = self.load(data_root)
        except InputError as error:
            return [str(error)]
        problems = count_problem("images in train_clean.csv", len(ids), self.expected_counts[0])
        problems += count_problem("landmarks in train_clean.csv", int(np.unique(labels).size),
                                  self.expected_counts[1])
        specs = {f.name: f for f in self.files}
        absent = [archive_name(i) for i in range(self.n_archives) if not is_acquired(folder, specs[archive_name(i)])]
        if absent:
            problems.append(f"{len(absent)} of {self.n_archives} archives not downloaded (e.g. {absent[0]})")
        if len(loaded.db_paths) < len(ids):
            problems.append(f"{len(ids) - len(loaded.db_paths)} of the {len(ids)} clean images are not on disk")
        return problems + image_problems(loaded.db_paths, "training")

    def summary(self, data_root: Path) -> dict[str, object]:
        return {**super().summary(data_root), "labels": "landmark_id of train_clean.csv; clean images only",
                "archives": f"{self.n_archives} (data download --archives RANGES for a part)"}
