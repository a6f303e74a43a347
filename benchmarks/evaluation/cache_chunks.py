"""What a descriptor-cache chunk holds and how a read verifies it (:mod:`benchmarks.evaluation.cache` stores them).

A chunk is an ``.npz``: ``descriptors`` (rows, D), ``skipped`` (indices), ``identity`` (the cache key's
digest and the rows it covers: the key digest hashes the method, weights, protocol, query crop, storage dtype
and the images' names, contents and boxes) and ``sha256`` over all three. A read refuses a chunk that does not
unpack, whose checksum or identity differ (flipped bits; a chunk copied from another cache, written for
another crop setting or other images), of another dtype, shape or row count, or with NaN or infinite rows;
the cache then extracts those rows again.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np


class BadChunk(ValueError):
    """A stored chunk or merged file that fails verification; the message says why."""


def chunk_identity(key_digest: str, first_row: int, n_rows: int) -> str:
    """What a chunk describes: the cache key's digest and its rows."""
    return f"{key_digest}:rows {first_row}-{first_row + n_rows}"


def _checksum(descriptors: np.ndarray, skipped: np.ndarray, identity: str) -> str:
    digest = hashlib.sha256(identity.encode())
    digest.update(f"{descriptors.dtype.str}{descriptors.shape}".encode())
    digest.update(np.ascontiguousarray(descriptors).data)
    digest.update(np.ascontiguousarray(skipped, dtype=np.int64).data)
    return digest.hexdigest()


def encode_chunk(descriptors: np.ndarray, skipped: np.ndarray, identity: str) -> bytes:
    """The ``.npz`` bytes of one chunk: ``descriptors`` (rows, D) already in the storage dtype."""
    buffer = io.BytesIO()
    np.savez(buffer, descriptors=descriptors, skipped=skipped.astype(np.int64), identity=np.array(identity),
             sha256=np.array(_checksum(descriptors, skipped, identity)))
    return buffer.getvalue()


def decode_chunk(path: Path, key_digest: str, first_row: int, n_rows: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(descriptors (n_rows, D), skipped indices) of the verified chunk of rows ``first_row`` onwards of the cache
    of ``key_digest``; raises :class:`BadChunk` saying why it cannot be used."""
    identity = chunk_identity(key_digest, first_row, n_rows)
    try:
        with np.load(path, allow_pickle=False) as npz:
            descriptors, skipped = npz["descriptors"], npz["skipped"]
            stored_identity, stored_sum = str(npz["identity"]), str(npz["sha256"])
    except Exception as error:  # numpy and zipfile raise many types on a damaged file
        raise BadChunk(f"does not unpack ({type(error).__name__}: {error})") from None
    if stored_identity != identity:
        raise BadChunk(f"describes {stored_identity}, not {identity}")
    if stored_sum != _checksum(descriptors, skipped, identity):
        raise BadChunk("checksum mismatch (the bytes changed after they were written)")
    if str(descriptors.dtype) != dtype or descriptors.ndim != 2 or descriptors.shape[0] != n_rows:
        raise BadChunk(f"holds {descriptors.shape} {descriptors.dtype}, not ({n_rows}, D) {dtype}")
    if skipped.ndim != 1 or ((skipped < first_row) | (skipped >= first_row + n_rows)).any():
        raise BadChunk("lists skipped images outside its rows")
    kept = np.ones(n_rows, bool)
    kept[skipped - first_row] = False
    if descriptors.shape[1] and not np.isfinite(descriptors[kept]).all():
        raise BadChunk("holds NaN or infinite descriptors")
    return descriptors, skipped


def array_sha256(array: np.ndarray, rows_per_block: int = 65536) -> tuple[str, bool]:
    """(sha256 of a C-ordered array's bytes, whether every value is finite), read in blocks of rows (a memory
    map is streamed, never held whole)."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    finite = True
    for start in range(0, len(array), rows_per_block):
        block = np.ascontiguousarray(array[start:start + rows_per_block])
        digest.update(block.data)
        finite = finite and bool(np.isfinite(block).all())
    return digest.hexdigest(), finite
