"""Readers of the public ground-truth formats, with validation that names the file and the problem.

- revisitop's ``gnd_<name>.pkl`` (dict ``imlist``, ``qimlist``, ``gnd``: per query ``easy``/``hard``/``junk``
  0-based ids and ``bbx``; the original-protocol ``gnd_oxford5k.pkl``/``gnd_paris6k.pkl`` hold ``ok``/``junk``),
  read with a restricted unpickler: plain containers, numbers, strings and numpy arrays, nothing callable.
- The Oxford VGG site's ground-truth text files of Oxford5k / Paris6k (``<landmark>_<n>_query.txt`` with
  ``[oxc1_]<image> x1 y1 x2 y2``, and ``_good.txt`` / ``_ok.txt`` / ``_junk.txt`` with one image name a line).
- NetVLAD's dbStruct ``.mat`` (Pittsburgh's and Tokyo Time Machine's field orders; fields read by name).
- Patch-NetVLAD's ground-truth ``.npz`` (``utmDb``, ``utmQ``, ``posDistThr``).
"""
from __future__ import annotations

import io
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from benchmarks.core.atomic import atomic_write_bytes
from benchmarks.core.errors import InputError
from datasets.base import OxfordGroundTruth, PlaceGroundTruth, RevisitedGroundTruth

# Globals a ground-truth pickle may name: numpy array reconstruction and harmless builtins. Anything else
# (os.system, builtins.eval, ...) is refused before it is looked up, so its code never runs.
_SAFE_GLOBALS = frozenset(
    {
        *((module, name) for module in ("builtins", "__builtin__")  # protocol <= 2 writes __builtin__
          for name in ("set", "frozenset", "complex", "bytes", "bytearray")),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        *((module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
          for name in ("_reconstruct", "scalar")),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside the allow-list."""


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler: the C one grows its memo table to the largest index a pickle names, so one
    corrupt byte in a memo index makes it allocate and clear gigabytes; this one keeps a dict."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _SAFE_GLOBALS:
            raise _RefusedGlobal(f"refused to load {module}.{name}: ground truth holds data, not code")
        return super().find_class(module, name)


def load_pickle_safely(path: str | Path) -> object:
    """Unpickle ``path`` allowing only plain data (containers, numbers, strings, numpy arrays)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"cannot read ground truth: {error.strerror}", path) from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _RefusedGlobal as error:
        raise InputError(f"not a plain-data pickle ({error})", path) from None
    except Exception as error:  # truncated or garbled bytes raise many types
        raise InputError(f"corrupt pickle ({type(error).__name__}: {error})", path) from None


def _id_lists(entries: list, key: str, n_db: int, path: str | Path) -> list[np.ndarray]:
    out = []
    for q, entry in enumerate(entries):
        try:
            ids = np.asarray(entry[key]).reshape(-1)
        except KeyError:
            raise InputError(f"gnd[{q}] has no '{key}' list", path) from None
        except (TypeError, ValueError):
            raise InputError(f"gnd[{q}]['{key}'] is not a flat list of ids", path) from None
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"gnd[{q}]['{key}'] must hold integer ids, got dtype {ids.dtype}", path)
        if ids.size and (ids.min() < 0 or ids.max() >= n_db):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise InputError(f"gnd[{q}]['{key}'] has id {bad} outside 0..{n_db - 1} (imlist)", path)
        unique, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():  # a repeated positive would count twice in AP
            raise InputError(f"gnd[{q}]['{key}'] lists id {int(unique[counts > 1][0])} more than once", path)
        out.append(ids.astype(np.int64))
    return out


def _gnd_dict(path: str | Path) -> tuple[dict, list, int]:
    data = load_pickle_safely(path)
    if not isinstance(data, dict) or not {"gnd", "imlist", "qimlist"} <= data.keys():
        raise InputError("not a revisitop ground-truth pickle: expected a dict with gnd, imlist, qimlist", path)
    if not all(isinstance(data[key], (list, tuple, np.ndarray)) for key in ("imlist", "qimlist")):
        raise InputError("'imlist' and 'qimlist' must be lists of image names", path)
    entries, n_db = data["gnd"], len(data["imlist"])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError("'gnd' must be a list of per-query dicts", path)
    if len(entries) != len(data["qimlist"]):
        raise InputError(f"'gnd' has {len(entries)} queries but 'qimlist' {len(data['qimlist'])}", path)
    return data, entries, n_db


def _boxes(entries: list, path: str | Path) -> np.ndarray | None:
    if not all("bbx" in e for e in entries):
        return None
    try:
        boxes = np.asarray([np.asarray(e["bbx"], dtype=np.float64).reshape(4) for e in entries])
    except (TypeError, ValueError):
        raise InputError("every 'bbx' must be 4 numbers [x1, y1, x2, y2]", path) from None
    boxes = boxes.reshape(len(entries), 4)
    for q, (x1, y1, x2, y2) in enumerate(boxes):
        if not (np.isfinite([x1, y1, x2, y2]).all() and x2 > x1 and y2 > y1):
            raise InputError(f"gnd[{q}]['bbx'] {[x1, y1, x2, y2]} is not a box [x1, y1, x2, y2] with finite "
                             "numbers and x2 > x1, y2 > y1", path)
    return boxes


def _disjoint(lists: dict[str, list[np.ndarray]], path: str | Path) -> None:
    """Refuse an id in two of one query's lists (easy and junk, say): it would be scored twice or both ways."""
    for q, per_query in enumerate(zip(*lists.values(), strict=True)):
        ids, counts = np.unique(np.concatenate(per_query), return_counts=True)
        if (counts > 1).any():
            both = [key for key, ids_ in zip(lists, per_query, strict=True) if ids[counts > 1][0] in ids_]
            raise InputError(f"gnd[{q}] lists id {int(ids[counts > 1][0])} in both {' and '.join(both)}", path)


def read_revisited_gnd(path: str | Path) -> RevisitedGroundTruth:
    """``gnd_roxford5k.pkl`` / ``gnd_rparis6k.pkl`` (or a file in their layout)."""
    data, entries, n_db = _gnd_dict(path)
    if entries and "easy" not in entries[0]:
        raise InputError("no 'easy'/'hard' lists: this is original-protocol ground truth; use --protocol oxford",
                         path)
    lists = {key: _id_lists(entries, key, n_db, path) for key in ("easy", "hard", "junk")}
    _disjoint(lists, path)
    return RevisitedGroundTruth(
        n_db=n_db,
        easy=tuple(lists["easy"]),
        hard=tuple(lists["hard"]),
        junk=tuple(lists["junk"]),
        query_boxes=_boxes(entries, path),
        db_names=tuple(map(str, data["imlist"])),
        query_names=tuple(map(str, data["qimlist"])),
    )


def read_oxford_gnd(path: str | Path) -> OxfordGroundTruth:
    """Original-protocol ground truth in the gnd-pickle layout: per query ``ok`` (+ ``good``) and ``junk``."""
    data, entries, n_db = _gnd_dict(path)
    if entries and "ok" not in entries[0]:
        raise InputError("no 'ok' lists: the original protocol needs gnd_oxford5k.pkl / gnd_paris6k.pkl"
                         " (per query 'ok' and 'junk'), not the revisited easy/hard split", path)
    ok = _id_lists(entries, "ok", n_db, path)
    good = _id_lists(entries, "good", n_db, path) if "good" in entries[0] else [np.empty(0, np.int64)] * len(ok)
    return OxfordGroundTruth(
        n_db=n_db,
        positives=tuple(np.union1d(g, o) for g, o in zip(good, ok, strict=True)),
        junk=tuple(_id_lists(entries, "junk", n_db, path)),
        query_boxes=_boxes(entries, path),
        db_names=tuple(map(str, data["imlist"])),
        query_names=tuple(map(str, data["qimlist"])),
    )


_QUERY_FILE = re.compile(r"^(?P<landmark>.+)_(?P<number>\d+)_query\.txt$")
OXFORD_LISTS = ("good", "ok", "junk")


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines of ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("missing ground-truth file; download the dataset again", path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read ground truth ({error})", path) from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _query_line(path: Path) -> tuple[str, list[float]]:
    """The query file's one line: image name (``oxc1_`` prefix removed: Oxford has it, Paris not) and box."""
    lines = _text_lines(path)
    if len(lines) != 1:
        raise InputError(f"expected one line 'image x1 y1 x2 y2', found {len(lines)}", path)
    number, line = lines[0]
    fields = line.split()
    try:
        box = [float(v) for v in fields[1:]]
    except ValueError:
        box = []
    if len(fields) != 5 or len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(f"line {number}: expected 'image x1 y1 x2 y2' with x1 < x2 and y1 < y2, got {line!r}", path)
    return fields[0].removeprefix("oxc1_"), box


def _name_ids(path: Path, index: dict[str, int], excluded: frozenset[str]) -> np.ndarray:
    """Database ids of the image names listed in ``path``; names in ``excluded`` are dropped."""
    ids = []
    for number, line in _text_lines(path):
        if len(line.split()) != 1:
            raise InputError(f"line {number}: expected one image name, got {line!r}", path)
        if line in excluded:
            continue
        if line not in index:
            raise InputError(f"line {number}: image {line!r} is not among the {len(index)} database images", path)
        ids.append(index[line])
    return np.asarray(ids, dtype=np.int64)


def read_oxford_gt_files(folder: Path, db_names: tuple[str, ...],
                         excluded: frozenset[str] = frozenset()) -> OxfordGroundTruth:
    """Oxford5k / Paris6k ground truth from the VGG site's text files in ``folder``, ids into ``db_names``.

    Queries in (landmark, number) order (all_souls_1 .. all_souls_5, ashmolean_1, ...); each query image is
    a database image (the original protocol keeps queries in the database) and is cropped to its box.
    Positives: good + ok; junk: junk. Names in ``excluded`` (Paris's corrupt images) are dropped from every
    list. A query without its ``_good``/``_ok``/``_junk`` file, a malformed line or an unknown image name
    raises :class:`InputError` naming the file.
    """
    found = [(m["landmark"], int(m["number"]), path) for path in sorted(Path(folder).glob("*_query.txt"))
             if (m := _QUERY_FILE.match(path.name))]
    if not found:
        raise InputError("no <landmark>_<n>_query.txt ground-truth files", folder)
    index = {name: i for i, name in enumerate(db_names)}
    positives, junk, boxes, query_names = [], [], [], []
    for landmark, number, path in sorted(found):
        name, box = _query_line(path)
        if name not in index:
            raise InputError(f"query image {name!r} is not among the {len(index)} database images", path)
        lists = {}
        for kind in OXFORD_LISTS:
            listed = path.with_name(f"{landmark}_{number}_{kind}.txt")
            if not listed.exists():
                raise InputError("missing ground-truth file (every query has _good, _ok and _junk lists)", listed)
            lists[kind] = _name_ids(listed, index, excluded)
        positives.append(np.union1d(lists["good"], lists["ok"]))
        junk.append(np.unique(lists["junk"]))
        boxes.append(box)
        query_names.append(name)
    return OxfordGroundTruth(n_db=len(db_names), positives=tuple(positives), junk=tuple(junk),
                             query_boxes=np.asarray(boxes, dtype=np.float64), db_names=tuple(db_names),
                             query_names=tuple(query_names))


@dataclass(frozen=True)
class DbStruct:
    """NetVLAD's dbStruct: image names, UTM coordinates (n, 2) and the positive distance threshold."""

    which_set: str
    db_image_names: tuple[str, ...]
    utm_db: np.ndarray
    query_image_names: tuple[str, ...]
    utm_queries: np.ndarray
    pos_dist_thr: float

    def ground_truth(self, panorama_size: int | None = None) -> PlaceGroundTruth:
        return PlaceGroundTruth(self.utm_db, self.utm_queries, self.pos_dist_thr, panorama_size,
                                self.db_image_names, self.query_image_names)


def _utm(value: object, field: str, path: str | Path, *, columns: bool) -> np.ndarray:
    """(n, 2) float64 coordinates from an (n, 2) array, or from 2 x n when ``columns`` (the .mat layout)."""
    utm = np.asarray(value, dtype=np.float64)
    shape = utm.shape
    if columns and utm.ndim <= 2 and utm.size % 2 == 0 and (utm.ndim < 2 or utm.shape[0] == 2):
        utm = utm.reshape(2, -1).T
    if utm.ndim != 2 or utm.shape[1] != 2:
        layout = "2 x n" if columns else "(n, 2)"
        raise InputError(f"{field} must be {layout} UTM coordinates, got shape {shape}", path)
    if not np.isfinite(utm).all():
        raise InputError(f"{field} holds NaN or infinite coordinates", path)
    return utm


def _threshold(value: object, field: str, path: str | Path) -> float:
    """The positive distance threshold in metres: one finite positive number (NaN would make every Recall 0)."""
    try:
        threshold = float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise InputError(f"{field} must be one number (metres), got {str(value)[:40]!r}", path) from None
    if not (np.isfinite(threshold) and threshold > 0):
        raise InputError(f"{field} must be a finite positive number of metres, got {threshold}", path)
    return threshold


def read_dbstruct(path: str | Path) -> DbStruct:
    """A NetVLAD dbStruct ``.mat`` (pitts30k_test.mat, tokyo247.mat, tokyoTM_train.mat, ...)."""
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True)
    except NotImplementedError:
        raise InputError("MATLAB v7.3 (HDF5) files are not supported; re-save with save(..., '-v7')", path) from None
    except Exception as error:  # scipy raises many types on garbled files
        raise InputError(f"cannot read as a MATLAB .mat file ({type(error).__name__}: {error})", path) from None
    if "dbStruct" not in mat:
        raise InputError(f"no 'dbStruct' variable (found: {', '.join(k for k in mat if not k.startswith('__'))})",
                         path)
    struct = mat["dbStruct"]
    fields = struct.dtype.names or ()
    needed = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "posDistThr")
    missing = [f for f in needed if f not in fields]
    if missing:
        raise InputError(f"dbStruct lacks field(s) {', '.join(missing)} (has: {', '.join(fields)})", path)
    value = {f: struct[f].item() if struct[f].ndim == 0 else struct[f] for f in needed}
    names = {f: tuple(str(n) for n in np.atleast_1d(value[f])) for f in ("dbImageFns", "qImageFns")}
    out = DbStruct(
        which_set=str(value["whichSet"]),
        db_image_names=names["dbImageFns"],
        utm_db=_utm(value["utmDb"], "utmDb", path, columns=True),
        query_image_names=names["qImageFns"],
        utm_queries=_utm(value["utmQ"], "utmQ", path, columns=True),
        pos_dist_thr=_threshold(value["posDistThr"], "posDistThr", path),
    )
    for kind, fns, utm in (("db", out.db_image_names, out.utm_db), ("query", out.query_image_names, out.utm_queries)):
        if len(fns) != utm.shape[0]:
            raise InputError(f"{len(fns)} {kind} image names but {utm.shape[0]} coordinates", path)
    return out


def read_place_npz(path: str | Path, panorama_size: int | None = None) -> PlaceGroundTruth:
    """Patch-NetVLAD's ground-truth ``.npz``: ``utmDb`` (n_db, 2), ``utmQ`` (n_q, 2), ``posDistThr``."""
    try:
        with np.load(str(path), allow_pickle=False) as npz:
            missing = [k for k in ("utmDb", "utmQ", "posDistThr") if k not in npz.files]
            if missing:
                raise InputError(f"missing array(s) {', '.join(missing)} (has: {', '.join(npz.files)})", path)
            return PlaceGroundTruth(_utm(npz["utmDb"], "utmDb", path, columns=False),
                                    _utm(npz["utmQ"], "utmQ", path, columns=False),
                                    _threshold(npz["posDistThr"], "posDistThr", path), panorama_size)
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(f"cannot read as a .npz archive ({error})", path) from None


def read_place_ground_truth(path: str | Path, panorama_size: int | None = None) -> PlaceGroundTruth:
    """A dbStruct ``.mat`` or a ground-truth ``.npz``, by extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mat":
        return read_dbstruct(path).ground_truth(panorama_size)
    if suffix == ".npz":
        return read_place_npz(path, panorama_size)
    raise InputError("ground truth must be a NetVLAD dbStruct .mat or an .npz with utmDb, utmQ, posDistThr", path)


# Writers, for the embedded benchmarks and the tests: the same layouts the readers above take.

PITTSBURGH_FIELDS = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries", "posDistThr",
                     "posDistSqThr", "nonTrivPosDistSqThr")
TOKYO_TM_FIELDS = ("whichSet", "dbImageFns", "utmDb", "dbTimeStamp", "qImageFns", "utmQ", "qTimeStamp", "numImages",
                   "numQueries", "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")


def write_revisited_gnd(path: str | Path, ground_truth: RevisitedGroundTruth) -> None:
    """Write ``ground_truth`` as a revisitop ``gnd_<name>.pkl`` (atomically): imlist, qimlist, gnd with bbx."""
    if ground_truth.query_boxes is None or len(ground_truth.query_names) != ground_truth.n_queries:
        raise ValueError("a gnd pickle needs query names and boxes for every query")
    if len(ground_truth.db_names) != ground_truth.n_db:
        raise ValueError("a gnd pickle needs one database name per database image")
    entries = [{"easy": e, "hard": h, "junk": j, "bbx": [float(v) for v in box]}
               for e, h, j, box in zip(ground_truth.easy, ground_truth.hard, ground_truth.junk,
                                       ground_truth.query_boxes, strict=True)]
    payload = {"imlist": list(ground_truth.db_names), "qimlist": list(ground_truth.query_names), "gnd": entries}
    atomic_write_bytes(Path(path), pickle.dumps(payload, protocol=4))


_MAT_HEADER_TEXT = 116  # the free-text start of a MAT header, where scipy writes the time: same input, same bytes


def write_dbstruct(path: str | Path, db: DbStruct, fields: tuple[str, ...] = PITTSBURGH_FIELDS,
                   time_stamps: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Write ``db`` as a NetVLAD dbStruct ``.mat`` (atomically), in Pittsburgh's field order by default.

    Coordinates are stored 2 x n as in the released files; ``posDistSqThr`` is the threshold squared and
    ``nonTrivPosDistSqThr`` is 10 m squared (NetVLAD's potential-positive radius). No time stamp in the
    header: the same struct gives the same bytes.
    """
    stamps = time_stamps or (np.zeros(len(db.db_image_names)), np.zeros(len(db.query_image_names)))
    values = {
        "whichSet": db.which_set,
        "dbImageFns": np.array(db.db_image_names, dtype=object)[:, None],
        "utmDb": db.utm_db.T,
        "dbTimeStamp": stamps[0],
        "qImageFns": np.array(db.query_image_names, dtype=object)[:, None],
        "utmQ": db.utm_queries.T,
        "qTimeStamp": stamps[1],
        "numImages": len(db.db_image_names),
        "numQueries": len(db.query_image_names),
        "posDistThr": db.pos_dist_thr,
        "posDistSqThr": db.pos_dist_thr**2,
        "nonTrivPosDistSqThr": 100.0,
    }
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"dbStruct": {f: values[f] for f in fields}})
    data = bytearray(buffer.getvalue())
    data[:_MAT_HEADER_TEXT] = b"MATLAB 5.0 MAT-file, written by image-retrieval-benchmarks".ljust(_MAT_HEADER_TEXT)
    atomic_write_bytes(Path(path), bytes(data))
