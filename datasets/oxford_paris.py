"""Oxford5k and Paris6k with the original protocol (Philbin et al., CVPR 2007 and CVPR 2008).

Ground truth: the VGG site's text files (``gt_files_170407.tgz``, ``paris_120310.tgz``), unpacked into
``gt/`` and read by :func:`datasets.formats.read_oxford_gt_files`: 11 landmarks x 5 queries, positives good +
ok, junk ignored, each query cropped to its box and kept in the database (the protocol ranks the whole
collection for every query). Scored by :func:`benchmarks.evaluation.metrics.oxford_scores`.

Images: the face-blurred ``-v1`` archives of the VGG site, the ones revisitop's own download script fetches
(the images of the first releases ``oxbuild_images.tgz`` / ``paris_{1,2}.tgz`` with faces blurred; a copy
of those can be served with ``--mirror`` under the ``-v1`` names), flattened into ``jpg/`` (Paris's archives
hold one folder per landmark). The protocol has no image list: the database is every ``.jpg`` of ``jpg/``
in sorted name order. No checksums are published: the first verified download records them in the lock
file and later runs are held to them.

Paris: 20 images of the archives are corrupt (HTML error pages saved as ``.jpg``; the VGG Paris page notes
them). The common evaluation leaves them out of the database, which then has the 6,392 images evaluations
report, and they cannot be retrieved: they are dropped from the database and from every ground-truth list
here, whether or not the archive still holds them (:data:`PARIS_CORRUPT`, the list the VGG page gives and
evaluation scripts repeat).
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from benchmarks.core.acquire import FileSpec
from datasets import DATASETS
from datasets.base import DatasetSpec, LoadedDataset, OxfordGroundTruth, Protocol
from datasets.formats import read_oxford_gt_files
from datasets.revisitop import VGG, image_problems, loaded_and_counted, not_downloaded

IMAGES = "jpg"
GROUND_TRUTH = "gt"

PARIS_CORRUPT = frozenset({
    "paris_louvre_000136", "paris_louvre_000146", "paris_moulinrouge_000422", "paris_museedorsay_001059",
    "paris_notredame_000188", "paris_pantheon_000284", "paris_pantheon_000960", "paris_pantheon_000974",
    "paris_pompidou_000195", "paris_pompidou_000196", "paris_pompidou_000201", "paris_pompidou_000467",
    "paris_pompidou_000640", "paris_sacrecoeur_000299", "paris_sacrecoeur_000330", "paris_sacrecoeur_000353",
    "paris_triomphe_000662", "paris_triomphe_000833", "paris_triomphe_000863", "paris_triomphe_000867",
})


class OriginalBuildings(DatasetSpec):
    """A VGG buildings dataset: images in ``jpg/``, the ground-truth text files in ``gt/``."""

    protocol = Protocol.OXFORD
    expected_counts: ClassVar[tuple[int, int]]  # (database images, queries)
    excluded: ClassVar[frozenset[str]] = frozenset()  # image names left out of the database

    def db_names(self, data_root: Path) -> tuple[str, ...]:
        images = self.folder(data_root) / IMAGES
        names = sorted(p.stem for p in images.glob("*.jpg")) if images.is_dir() else []
        if not names:
            raise not_downloaded(self.name, images)
        return tuple(n for n in names if n not in self.excluded)

    def load(self, data_root: Path, split: str | None = None) -> LoadedDataset:
        self.split_name(split)
        gt_folder = self.folder(data_root) / GROUND_TRUTH
        if not gt_folder.is_dir():
            raise not_downloaded(self.name, gt_folder)
        gnd = read_oxford_gt_files(gt_folder, self.db_names(data_root), self.excluded)
        images = self.folder(data_root) / IMAGES
        return LoadedDataset(tuple(images / f"{n}.jpg" for n in gnd.db_names),
                             tuple(images / f"{n}.jpg" for n in gnd.query_names), gnd)

    def check(self, data_root: Path) -> list[str]:
        loaded, problems = loaded_and_counted(self, data_root, ("database images in jpg/", "queries in gt/"),
                                              self.expected_counts)
        if loaded is None:
            return problems
        gnd = loaded.ground_truth
        assert isinstance(gnd, OxfordGroundTruth)
        empty = [name for name, ids in zip(gnd.query_names, gnd.positives, strict=True) if ids.size == 0]
        if empty:
            problems.append(f"{len(empty)} queries have no good or ok image (e.g. {empty[0]})")
        return problems + image_problems(loaded.db_paths, "database")

    def summary(self, data_root: Path) -> dict[str, object]:
        return {**super().summary(data_root), "query crop": "box of <landmark>_<n>_query.txt, rounded half-to-even,"
                " x2/y2 exclusive; queries stay in the database", "ground truth": "good + ok positive, junk ignored"}


@DATASETS.register("oxford5k")
class Oxford5k(OriginalBuildings):
    name = "oxford5k"
    description = "Oxford5k, original protocol: 5,063 images, 55 cropped queries; mAP with good + ok, junk ignored"
    expected_counts = (5063, 55)
    files = (
        FileSpec("gt_files_170407.tgz", urls=(f"{VGG}/oxbuildings/gt_files_170407.tgz",), extract_to=GROUND_TRUTH,
                 flatten=True),
        FileSpec("oxbuild_images-v1.tgz", urls=(f"{VGG}/oxbuildings/oxbuild_images-v1.tgz",), extract_to=IMAGES,
                 flatten=True),
    )


@DATASETS.register("paris6k")
class Paris6k(OriginalBuildings):
    name = "paris6k"
    description = ("Paris6k, original protocol: 6,392 images (20 corrupt ones left out), 55 cropped queries; "
                   "mAP with good + ok, junk ignored")
    expected_counts = (6392, 55)
    excluded = PARIS_CORRUPT
    files = (
        FileSpec("paris_120310.tgz", urls=(f"{VGG}/parisbuildings/paris_120310.tgz",), extract_to=GROUND_TRUTH,
                 flatten=True),
        *(FileSpec(f"paris_{i}-v1.tgz", urls=(f"{VGG}/parisbuildings/paris_{i}-v1.tgz",), extract_to=IMAGES,
                   flatten=True) for i in (1, 2)),
    )
