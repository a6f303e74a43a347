"""Revisited Oxford5k and Paris6k (Radenović et al., CVPR 2018), the R1M distractors and the +1M variants.

Images: the face-blurred ``-v1`` archives of the Oxford VGG site, flattened into ``jpg/`` as revisitop's own
download script does (Paris's archives hold one sub-folder per landmark). Ground truth: revisitop's
``gnd_<name>.pkl``, whose sha256 is pinned.
Queries are cropped to their ``bbx`` before any processing (:func:`datasets.base.crop_query`).
Distractors: 100 archives and the image list from the revisitop site, fetched in parallel; each archive is
resumable per byte and, once unpacked and stamped, never fetched again.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from benchmarks.core.acquire import AcquireOptions, FileSpec
from benchmarks.core.errors import InputError
from datasets import DATASETS
from datasets.base import (
    ClassLabels,
    DatasetSpec,
    LoadedDataset,
    Protocol,
    RevisitedGroundTruth,
    unreadable_images,
)
from datasets.formats import read_revisited_gnd

VGG = "https://www.robots.ox.ac.uk/~vgg/data"
REVISITOP = "http://cmp.felk.cvut.cz/revisitop/data/datasets"
R1M = "http://ptak.felk.cvut.cz/revisitop/revisitop1m"
IMAGES = "jpg"


def not_downloaded(name: str, path: Path) -> InputError:
    return InputError(f"not there: run `python -m benchmarks data download {name}`", path)


def count_problem(what: str, got: int, expected: int) -> list[str]:
    return [] if got == expected else [f"{what}: {got}, expected {expected}"]


def loaded_and_counted(spec: DatasetSpec, data_root: Path, labels: tuple[str, str],
                       expected: tuple[int, int]) -> tuple[LoadedDataset | None, list[str]]:
    """The dataset loaded, with its database and query counts held to ``expected`` (labelled ``labels``);
    (None, [why]) when it does not load."""
    try:
        loaded = spec.load(data_root)
    except InputError as error:
        return None, [str(error)]
    gt = loaded.ground_truth
    if isinstance(gt, ClassLabels):
        raise TypeError(f"{spec.name} is a training set: it has no database and queries to count")
    return loaded, count_problem(labels[0], gt.n_db, expected[0]) + count_problem(labels[1], gt.n_queries, expected[1])


def image_problems(paths: tuple[Path, ...], label: str) -> list[str]:
    """One line per missing or unreadable image (the first 20, then a count)."""
    bad = unreadable_images(paths, label)
    lines = [f"missing or unreadable {label} image: {path}" for path in bad[:20]]
    if len(bad) > 20:
        lines.append(f"... and {len(bad) - 20} more {label} images")
    return lines


class RevisitedDataset(DatasetSpec):
    """A dataset in revisitop's layout: ``gnd_<name>.pkl`` and ``jpg/<image name>.jpg``."""

    protocol = Protocol.REVISITED
    expected_counts: ClassVar[tuple[int, int]]  # (database images, queries)

    def gnd_path(self, data_root: Path) -> Path:
        return self.folder(data_root) / f"gnd_{self.name}.pkl"

    def load(self, data_root: Path, split: str | None = None) -> LoadedDataset:
        self.split_name(split)
        path = self.gnd_path(data_root)
        if not path.exists():
            raise not_downloaded(self.name, path)
        gnd = read_revisited_gnd(path)
        images = self.folder(data_root) / IMAGES
        return LoadedDataset(tuple(images / f"{n}.jpg" for n in gnd.db_names),
                             tuple(images / f"{n}.jpg" for n in gnd.query_names), gnd)

    def check(self, data_root: Path) -> list[str]:
        loaded, problems = loaded_and_counted(self, data_root, ("database images in the gnd", "queries in the gnd"),
                                              self.expected_counts)
        if loaded is None:
            return problems
        gnd = loaded.ground_truth
        assert isinstance(gnd, RevisitedGroundTruth)
        if gnd.query_boxes is None:
            problems.append("the gnd has no query boxes (bbx): queries cannot be cropped")
        overlap = set(gnd.query_names) & set(gnd.db_names)
        if overlap:
            problems.append(f"{len(overlap)} query images are also in the database (e.g. {sorted(overlap)[0]})")
        return problems + image_problems(loaded.db_paths, "database") + image_problems(loaded.query_paths, "query")

    def summary(self, data_root: Path) -> dict[str, object]:
        return {**super().summary(data_root), "query crop": "bbx [x1, y1, x2, y2] rounded half-to-even, x2/y2 "
                "exclusive (Pillow's Image.crop, as revisitop's Python code)", "ground truth": "easy / hard / junk"}


@DATASETS.register("roxford5k")
class ROxford5k(RevisitedDataset):
    name = "roxford5k"
    description = "Revisited Oxford5k: 4993 images, 70 cropped queries; mAP Easy/Medium/Hard (CVPR 2018)"
    expected_counts = (4993, 70)
    files = (
        FileSpec("gnd_roxford5k.pkl", urls=(f"{REVISITOP}/roxford5k/gnd_roxford5k.pkl",),
                 sha256="ba7967754bd2d7d2210a5799f9c45ad5835e269a80ef9d3eba44caa35816c471"),
        FileSpec("oxbuild_images-v1.tgz", urls=(f"{VGG}/oxbuildings/oxbuild_images-v1.tgz",), extract_to=IMAGES,
                 flatten=True),
    )


@DATASETS.register("rparis6k")
class RParis6k(RevisitedDataset):
    name = "rparis6k"
    description = "Revisited Paris6k: 6322 images, 70 cropped queries; mAP Easy/Medium/Hard (CVPR 2018)"
    expected_counts = (6322, 70)
    files = (
        FileSpec("gnd_rparis6k.pkl", urls=(f"{REVISITOP}/rparis6k/gnd_rparis6k.pkl",),
                 sha256="d2e729a5293dda7dda8a15c8383424a42e4964a2c4cfea2f32fa85d11d2df499"),
        *(FileSpec(f"paris_{i}-v1.tgz", urls=(f"{VGG}/parisbuildings/paris_{i}-v1.tgz",), extract_to=IMAGES,
                   flatten=True) for i in (1, 2)),
    )


@DATASETS.register("revisitop1m")
class Revisitop1M(DatasetSpec):
    name = "revisitop1m"
    description = "R1M: 1,001,001 distractor images for the +1M variants (100 archives + the image list)"
    protocol = Protocol.REVISITED
    expected_images: ClassVar[int] = 1_001_001
    n_archives: ClassVar[int] = 100
    files = (
        FileSpec("revisitop1m.txt", urls=(f"{R1M}/revisitop1m.txt",)),
        *(FileSpec(f"revisitop1m.{i}.tar.gz", urls=(f"{R1M}/jpg/revisitop1m.{i}.tar.gz",), extract_to=IMAGES)
          for i in range(1, n_archives + 1)),
    )

    def load(self, data_root: Path, split: str | None = None) -> LoadedDataset:
        """The distractors as a database without queries (ids follow revisitop1m.txt)."""
        self.split_name(split)
        path = self.folder(data_root) / "revisitop1m.txt"
        if not path.exists():
            raise not_downloaded(self.name, path)
        names = tuple(line for line in path.read_text().splitlines() if line)
        images = self.folder(data_root) / IMAGES
        return LoadedDataset(tuple(images / n for n in names), (),
                             RevisitedGroundTruth(len(names), (), (), (), db_names=names))

    def check(self, data_root: Path) -> list[str]:
        try:
            loaded = self.load(data_root)
        except InputError as error:
            return [str(error)]
        problems = count_problem("images in revisitop1m.txt", len(loaded.db_paths), self.expected_images)
        return problems + image_problems(loaded.db_paths, "distractor")


class RevisitedPlus1M(DatasetSpec):
    """A revisited dataset whose database is extended by the R1M distractors (ids after the dataset's own)."""

    protocol = Protocol.REVISITED
    files = ()
    base: ClassVar[type[RevisitedDataset]]

    def parts(self) -> tuple[RevisitedDataset, Revisitop1M]:
        return self.base(), Revisitop1M()

    def prepare(self, data_root: Path, options: AcquireOptions) -> None:
        for part in self.parts():
            part.prepare(data_root, options)

    def load(self, data_root: Path, split: str | None = None) -> LoadedDataset:
        self.split_name(split)
        dataset, distractors = (part.load(data_root) for part in self.parts())
        gnd = dataset.ground_truth
        assert isinstance(gnd, RevisitedGroundTruth) and isinstance(distractors.ground_truth, RevisitedGroundTruth)
        extended = replace(gnd, n_db=gnd.n_db + distractors.ground_truth.n_db,
                           db_names=gnd.db_names + distractors.ground_truth.db_names)
        return LoadedDataset(dataset.db_paths + distractors.db_paths, dataset.query_paths, extended)

    def check(self, data_root: Path) -> list[str]:
        return [problem for part in self.parts() for problem in part.check(data_root)]


@DATASETS.register("roxford5k+1m")
class ROxford5kPlus1M(RevisitedPlus1M):
    name = "roxford5k+1m"
    description = "Revisited Oxford5k with the R1M distractors: 1,005,994 database images, 70 queries"
    base = ROxford5k
    requires = ("roxford5k", "revisitop1m")


@DATASETS.register("rparis6k+1m")
class RParis6kPlus1M(RevisitedPlus1M):
    name = "rparis6k+1m"
    description = "Revisited Paris6k with the R1M distractors: 1,007,323 database images, 70 queries"
    base = RParis6k
    requires = ("rparis6k", "revisitop1m")
