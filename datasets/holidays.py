"""INRIA Holidays (Jégou, Douze and Schmid, ECCV 2008): 1,491 images in 500 groups, one query per group.

Images are named ``NNNNSS.jpg``: group ``NNNN``, whose query is ``NNNN00``. Ground truth, as the official
evaluation script ``holidays_map.py`` (in ``eval_holidays.tgz``) scores it: the database is every image of
``holidays_images.dat`` (queries included); a query's positives are the other images of its group, and the
query itself is ignored wherever it is ranked ("if the query image is ranked, it is ignored in the scoring"),
which is the original Oxford protocol with the query as the one junk image (:class:`OxfordGroundTruth`,
scored by :func:`benchmarks.evaluation.metrics.oxford_scores`: the same trapezoid-rule AP over all positives).

Orientation: some photos are stored on their side. CNN-era evaluations turn a fixed list of them upright
(MultiGrain's ``holidays-rotate.yaml``, facebookresearch/multigrain, multigrain/datasets/holidays-rotate.yaml
at commit 53c5ccf, 228 images; MSCFP's authors use the same file, fede-vaccaro/NetVlad holidays-rotate.yaml at
commit 171f540, through their ``rotate_holidays`` option). :data:`ROTATIONS` is that list: degrees to turn
each image clockwise (both codes call Pillow's ``rotate(-degrees)``). ``holidays`` (the default) evaluates the
upright images: ``data download holidays`` writes lossless upright copies (``upright/NNNNSS.png``, exact
quarter turns of the decoded pixels, the whole image kept as MultiGrain's ``expand=True`` keeps it; MSCFP's
code rotates without ``expand``, which crops non-square images: not reproduced). ``holidays_unrotated``
reads the same folder with every image as distributed (the protocol of the 2008 paper).

Files: the images from INRIA's FTP server (``ftp://`` transfers restart rather than resume) and the
evaluation package from Jégou's page; no checksums are published (lock file).
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from benchmarks.core.acquire import AcquireOptions, FileSpec
from benchmarks.core.atomic import atomic_write_bytes
from benchmarks.core.errors import InputError
from datasets import DATASETS
from datasets.base import DatasetSpec, LoadedDataset, OxfordGroundTruth, Protocol
from datasets.revisitop import image_problems, loaded_and_counted, not_downloaded

INRIA_FTP = "ftp://ftp.inrialpes.fr/pub/lear/douze/data"
IMAGES, EVAL, UPRIGHT = "jpg", "eval", "upright"
IMAGE_LIST = "holidays_images.dat"
_NAME = re.compile(r"^(\d{4})(\d{2})\.jpg$")


def _names(degrees: int, text: str) -> dict[str, int]:
    return dict.fromkeys(text.split(), degrees)


# Degrees clockwise that turn each listed image upright (MultiGrain's holidays-rotate.yaml; see above).
ROTATIONS: dict[str, int] = {
    **_names(90, """
    100600 101000 101001 101100 101200 101201 101301 102200 102201 103200 103201 103202 109301 110100 110101
    110800 110802 111500 112100 112101 112200 112201 114701 114901 114902 115001 116300 116501 117700 118300
    118302 118803 119601 119602 119604 119703 120000 120001 120100 120500 120501 120601 121000 121001 121200
    121201 121300 121301 121400 121401 121402 121403 121500 121501 121700 121701 121800 121901 122600 122601
    122602 122702 122708 122800 122801 122900 122901 124802 125400 126000 126701 126801 126803 127200 127201
    127202 127700 127701 127800 127802 128200 128500 128502 129700 132000 132100 132101 132102 132301 132401
    132700 132701 132800 132801 133000 133001 133002 133003 133100 133101 133200 133201 133202 133802 134001
    134002 134003 134503 134504 135401 135600 135601 135700 136300 136301 136503 136900 136901 137004 137005
    137006 137100 137101 137102 137103 137302 138000 138001 138507 138703 138704 138705 138902 138903 138904
    139003 139004 139005 139105 139404 139600 139601 139602 139603 139701 140500 140503 140800 141500 141501
    141704 142501 142600 144300 144900 145202 145301 145700 145800 145801 145901 146001 146002 146003 146102
    146202 146207 146301 146303 146400 146402 146403 146404 146600 146700 146800 146801 146901 147201 147302
    147304 147600 147601 147602 147603 147900 147901 148003 148004 148401 148501 148800 148900 148901 148902
    149000 149001 149201 149301 149400"""),
    **_names(180, "139302"),
    **_names(270, """
    100700 100800 100801 100900 100902 122707 124701 126807 127900 129401 132001 132200 132201 135503 138504
    139001 139002 139102 139103 139300 139301 139303 139400 139502 141601 141702 141801"""),
}
# Pillow's transposes turn counter-clockwise: a clockwise quarter turn is ROTATE_270.
_CLOCKWISE = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}


def read_image_list(path: Path) -> tuple[str, ...]:
    """Image names (without ``.jpg``) of ``holidays_images.dat``, one ``NNNNSS.jpg`` a line, in file order."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        raise InputError("missing image list: run `python -m benchmarks data download holidays`", path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the image list ({error})", path) from None
    names = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not _NAME.match(line.strip()):
            raise InputError(f"line {number}: expected an image name NNNNSS.jpg, got {line.strip()!r}", path)
        names.append(line.strip()[: -len(".jpg")])
    if len(set(names)) != len(names):
        raise InputError("an image is listed twice", path)
    return tuple(names)


def holidays_ground_truth(names: tuple[str, ...], source: Path) -> OxfordGroundTruth:
    """Per group ``NNNN``: query ``NNNN00``, positives the group's other images, junk the query itself."""
    index = {name: i for i, name in enumerate(names)}
    groups: dict[str, list[int]] = {}
    for name in names:
        groups.setdefault(name[:4], []).append(index[name])
    queries = [f"{group}00" for group in groups]
    for query in queries:
        if query not in index:
            raise InputError(f"group {query[:4]} has no query image {query}.jpg", source)
    positives = tuple(np.asarray([i for i in groups[q[:4]] if i != index[q]], np.int64) for q in queries)
    junk = tuple(np.asarray([index[q]], np.int64) for q in queries)
    return OxfordGroundTruth(n_db=len(names), positives=positives, junk=junk, db_names=names,
                             query_names=tuple(queries))


def write_upright(source: Path, dest: Path, degrees: int) -> None:
    """Write ``source`` turned ``degrees`` clockwise to ``dest`` as a lossless PNG (atomically)."""
    try:
        with Image.open(source) as opened:
            turned = opened.transpose(_CLOCKWISE[degrees])
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read image to turn it upright ({error}); download the dataset again",
                         source) from None
    if turned.mode not in ("RGB", "L"):
        turned = turned.convert("RGB")  # PNG holds no CMYK; extraction converts to RGB the same way
    buffer = io.BytesIO()
    turned.save(buffer, "PNG")
    atomic_write_bytes(dest, buffer.getvalue())


@DATASETS.register("holidays")
class Holidays(DatasetSpec):
    name = "holidays"
    description = ("INRIA Holidays: 1,491 images, 500 group queries (228 turned upright, as CNN-era papers "
                   "evaluate); mAP, the query ignored")
    protocol = Protocol.OXFORD
    expected_counts: ClassVar[tuple[int, int]] = (1491, 500)
    upright: ClassVar[bool] = True
    files = (
        FileSpec("jpg1.tar.gz", urls=(f"{INRIA_FTP}/jpg1.tar.gz",), extract_to=IMAGES, flatten=True),
        FileSpec("jpg2.tar.gz", urls=(f"{INRIA_FTP}/jpg2.tar.gz",), extract_to=IMAGES, flatten=True),
        FileSpec("eval_holidays.tgz", urls=("https://lear.inrialpes.fr/~jegou/code/eval_holidays.tgz",),
                 extract_to=EVAL, flatten=True),
    )

    def folder(self, data_root: Path) -> Path:
        return Path(data_root) / "holidays"  # both orientations read one copy

    def image_paths(self, data_root: Path, names: tuple[str, ...]) -> tuple[Path, ...]:
        folder = self.folder(data_root)
        if not self.upright:
            return tuple(folder / IMAGES / f"{n}.jpg" for n in names)
        return tuple(folder / UPRIGHT / f"{n}.png" if n in ROTATIONS else folder / IMAGES / f"{n}.jpg"
                     for n in names)

    def load(self, data_root: Path, split: str | None = None) -> LoadedDataset:
        self.split_name(split)
        listing = self.folder(data_root) / EVAL / IMAGE_LIST
        if not listing.exists():
            raise not_downloaded(self.name, listing)
        gnd = holidays_ground_truth(read_image_list(listing), listing)
        db_paths = self.image_paths(data_root, gnd.db_names)
        missing = [p for p in db_paths if p.parent.name == UPRIGHT and not p.exists()]
        if missing:
            raise InputError(f"{len(missing)} upright copies are missing (e.g. {missing[0].name}): run "
                             f"`python -m benchmarks data download {self.name}`", missing[0].parent)
        return LoadedDataset(db_paths, self.image_paths(data_root, gnd.query_names), gnd)

    def prepare(self, data_root: Path, options: AcquireOptions) -> None:
        """Fetch the archives and the image list, then write the upright copies this variant reads."""
        super().prepare(data_root, options)
        if not self.upright:
            return
        folder = self.folder(data_root)
        for name in read_image_list(folder / EVAL / IMAGE_LIST):
            dest = folder / UPRIGHT / f"{name}.png"
            if name in ROTATIONS and not dest.exists():
                write_upright(folder / IMAGES / f"{name}.jpg", dest, ROTATIONS[name])

    def check(self, data_root: Path) -> list[str]:
        loaded, problems = loaded_and_counted(self, data_root, ("images in holidays_images.dat", "groups (queries)"),
                                              self.expected_counts)
        if loaded is None:
            return problems
        gnd = loaded.ground_truth
        assert isinstance(gnd, OxfordGroundTruth)
        alone = [q for q, ids in zip(gnd.query_names, gnd.positives, strict=True) if ids.size == 0]
        if alone:
            problems.append(f"{len(alone)} groups have no image besides their query (e.g. {alone[0]})")
        return problems + image_problems(loaded.db_paths, "database")

    def summary(self, data_root: Path) -> dict[str, object]:
        turned = f"{len(ROTATIONS)} images turned upright (MultiGrain's list)" if self.upright else "as distributed"
        return {**super().summary(data_root), "orientation": turned,
                "ground truth": "positives: the query's group; the query itself ignored; whole queries (no crop)"}


@DATASETS.register("holidays_unrotated")
class HolidaysUnrotated(Holidays):
    name = "holidays_unrotated"
    description = "INRIA Holidays with every image as distributed (no upright turns): 1,491 images, 500 queries"
    upright = False
