"""Reading what users hand to ``score``: id arrays (.npy) and descriptors (.npz or revisitop's .mat)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from benchmarks.core.errors import InputError


def read_id_array(path: str | Path) -> np.ndarray:
    """A .npy array of 0-based database ids (pickled object arrays are refused)."""
    try:
        return np.load(str(path), allow_pickle=False)
    except Exception as error:  # numpy raises many types on garbled files
        raise InputError(f"cannot read as a plain .npy array ({error}); save ids with numpy.save", path) from None


def _descriptors(array: object, name: str, path: str | Path) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise InputError(f"'{name}' must be a 2-D numeric array, got shape {array.shape} dtype {array.dtype}", path)
    if not np.isfinite(array).all():
        raise InputError(f"'{name}' holds NaN or infinite values", path)
    return np.ascontiguousarray(array, dtype=np.float32)


def read_features(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(database (n_db, D), queries (n_q, D)) from an .npz (``db``, ``queries``) or revisitop's .mat
    (``X``: D x n_db, ``Q``: D x n_q)."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(str(path), allow_pickle=False) as npz:
                missing = [k for k in ("db", "queries") if k not in npz.files]
                if missing:
                    raise InputError(f"missing array(s) {', '.join(missing)} (has: {', '.join(npz.files)})", path)
                db, queries = _descriptors(npz["db"], "db", path), _descriptors(npz["queries"], "queries", path)
        elif suffix == ".mat":
            mat = scipy.io.loadmat(str(path))
            missing = [k for k in ("X", "Q") if k not in mat]
            if missing:
                raise InputError(f"missing variable(s) {', '.join(missing)}: revisitop features are X (D x n_db)"
                                 " and Q (D x n_q)", path)
            db, queries = _descriptors(mat["X"], "X", path).T, _descriptors(mat["Q"], "Q", path).T
        else:
            raise InputError("features must be an .npz (db, queries) or revisitop's .mat (X, Q)", path)
    except InputError:
        raise
    except NotImplementedError:
        raise InputError("MATLAB v7.3 (HDF5) files are not supported; re-save with save(..., '-v7')", path) from None
    except Exception as error:  # numpy and scipy raise many types on garbled files
        raise InputError(f"cannot read features ({type(error).__name__}: {error})", path) from None
    if db.shape[1] != queries.shape[1]:
        raise InputError(f"database descriptors are {db.shape[1]}-D but queries {queries.shape[1]}-D", path)
    return np.ascontiguousarray(db), np.ascontiguousarray(queries)
