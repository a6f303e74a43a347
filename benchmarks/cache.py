"""The descriptor cache: ``<data root>/cache/descriptors/<key>/``, written in chunks so that a killed
extraction resumes where it stopped, read memory-mapped, shared safely by concurrent runs and torchrun ranks.

The key is the sha256 of everything that changes a descriptor: method name and config, weights sha256,
extraction protocol (sizes, scales, mean/std, whether queries are cropped), the arithmetic (fp32, or bf16
autocast on CUDA), the storage dtype, and the image manifest (each image's name relative to the data root,
the sha256 of its contents (:mod:`benchmarks.file_digests`) and its crop box, in order). A directory's
``key.json`` records the key's fields; a cache directory whose record differs is refused with the differing
fields named. Every stored artefact is verified when read: a chunk by its checksum, identity, dtype, shape and
finiteness (:mod:`benchmarks.cache_chunks`), the merged file by the sha256 ``complete.json`` records; what
fails is extracted again, with a warning.

Layout of one directory::

    key.json            the key's fields and the chunk length (the first run fixes it)
    chunks/000012.npz   rows [12 * chunk_rows, 13 * chunk_rows): descriptors, skipped indices, identity and
                        checksum, written atomically (temporary file, fsync, rename): a chunk file is complete or absent
    chunks/000012.lock  flock held by the process extracting chunk 12; concurrent runs take other chunks
    descriptors.npy     (N, D) once every chunk is there (merged under merge.lock), read memory-mapped
    complete.json       written last (shape, dtype, sha256, skipped images): its presence marks the cache complete

Under torchrun each rank extracts chunks ``rank::world``; after a barrier rank 0 merges, and after a second
barrier every rank reads the merged file, which is identical to a single process's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist

from benchmarks.atomic import atomic_write_bytes, atomic_write_text
from benchmarks.cache_chunks import BadChunk, array_sha256, chunk_identity, decode_chunk, encode_chunk
from benchmarks.data_root import name_under
from benchmarks.errors import InputError
from benchmarks.extract import (
    SKIP_HINT,
    Embed,
    Extracted,
    ExtractOptions,
    batches_by_size,
    extract_all,
    output_sizes,
    run_batches,
)
from benchmarks.file_digests import file_digests
from benchmarks.locks import try_lock, wait_lock
from methods.base import ExtractionProtocol

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: images keyed by content, chunks checksummed
CACHE_DTYPES = ("float32", "float16")
DEFAULT_CHUNK_ROWS = 1024


def images_sha256(paths: Sequence[Path], boxes: np.ndarray | None, data_root: Path) -> str:
    """Digest of the ordered image list: names relative to ``data_root``, the sha256 of each file's contents
    ("missing" for a file that cannot be read: extraction then names it, or skips it under ``--on-bad-image
    skip``; remembered in ``<data_root>/cache/file-sha256.sqlite``), crop boxes."""
    digest = hashlib.sha256()
    contents = file_digests(paths, data_root / "cache" / "file-sha256.sqlite")
    for i, (path, content) in enumerate(zip(paths, contents, strict=True)):
        box = "" if boxes is None else ",".join(repr(float(v)) for v in boxes[i])
        digest.update(f"{name_under(path, data_root)}\t{content}\t{box}\n".encode())
    return digest.hexdigest()


def precision(device: str) -> str:
    """The arithmetic the pipeline uses on ``device`` (part of the key: it changes the numbers)."""
    return "bfloat16-autocast" if device.startswith("cuda") else "float32"


# Protocol fields added after caches of this format existed: in a key only when not at their default, so the
# caches of every method that keeps the default stay valid.
_LATER_PROTOCOL_FIELDS = ("exif_orientation", "crop_rounding", "scale_resize", "scale_combination", "resize",
                         "resize_kernel", "query_scale", "query_pad")


def _later_protocol_fields(protocol: ExtractionProtocol) -> dict[str, Any]:
    defaults = {f.name: f.default for f in dataclasses.fields(ExtractionProtocol)}
    return {name: getattr(protocol, name) for name in _LATER_PROTOCOL_FIELDS
            if getattr(protocol, name) != defaults[name]}


def cache_key(method: str, config: dict[str, Any], weights_sha256: str, protocol: ExtractionProtocol,
              paths: Sequence[Path], boxes: np.ndarray | None, data_root: Path, device: str,
              dtype: str = "float32") -> dict[str, Any]:
    """The fields whose sha256 names a cache directory (see the module docstring), as JSON reads them back
    (tuples in a config become lists), so that a fresh key equals the one a directory records."""
    if dtype not in CACHE_DTYPES:
        raise InputError(f"cache dtype must be one of {CACHE_DTYPES}, not {dtype!r}")
    return _as_json({"format_version": FORMAT_VERSION, "method": method, "config": config,
            "weights_sha256": weights_sha256,
            "protocol": {"max_size": protocol.max_size, "scales": list(protocol.scales), "mean": list(protocol.mean),
                         "std": list(protocol.std), "cropped": boxes is not None, **_later_protocol_fields(protocol)},
            "precision": precision(device), "dtype": dtype, "n_images": len(paths),
            "images_sha256": images_sha256(paths, boxes, data_root)})


def _as_json(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, sort_keys=True))


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


class DescriptorCache:
    """One cache directory for one key; ``fill`` extracts what is missing and returns the descriptors."""

    def __init__(self, directory: Path, key: dict[str, Any], chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        self.directory, self.key, self.digest = Path(directory), key, key_digest(key)
        self.n, self.dtype = int(key["n_images"]), str(key["dtype"])
        try:
            (self.directory / "chunks").mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot create the descriptor cache ({error.strerror}); give a writable data root "
                             "or pass --no-cache", self.directory) from None
        record = self.directory / "key.json"
        if not record.exists():
            atomic_write_text(record, json.dumps({"key": key, "chunk_rows": chunk_rows}, indent=1, sort_keys=True))
        recorded = json.loads(record.read_text(encoding="utf-8"))
        differing = sorted(f for f in set(key) | set(recorded["key"]) if key.get(f) != recorded["key"].get(f))
        if differing:
            raise InputError(f"this descriptor cache was written by another configuration (differing: "
                             f"{', '.join(differing)}); delete the directory or let the suite pick its own", record)
        self.chunk_rows = int(recorded["chunk_rows"])
        self.n_chunks = -(-self.n // self.chunk_rows)
        self.written = 0  # chunks this object extracted and wrote (the others came from disk or other processes)

    @classmethod
    def under(cls, data_root: Path, key: dict[str, Any], chunk_rows: int = DEFAULT_CHUNK_ROWS) -> DescriptorCache:
        """The cache of ``key`` at ``<data_root>/cache/descriptors/<sha256 of key>``."""
        return cls(data_root / "cache" / "descriptors" / key_digest(key), key, chunk_rows)

    def _chunk(self, c: int) -> Path:
        return self.directory / "chunks" / f"{c:06d}.npz"

    def _rows(self, c: int) -> np.ndarray:
        return np.arange(c * self.chunk_rows, min(self.n, (c + 1) * self.chunk_rows))

    @property
    def complete(self) -> bool:
        return (self.directory / "complete.json").exists()

    def _done(self, c: int) -> bool:
        return self.complete or self._chunk(c).exists()

    def chunks_done(self) -> int:
        """How many chunks are on disk (all of them once merged)."""
        return self.n_chunks if self.complete else sum(self._chunk(c).exists() for c in range(self.n_chunks))

    def fill(self, embed: Embed, paths: Sequence[Path], protocol: ExtractionProtocol, boxes: np.ndarray | None,
             options: ExtractOptions) -> Extracted:
        """Extract the missing chunks (under torchrun: this rank's share), merge, and read."""
        if len(paths) != self.n or not paths:
            raise ValueError(f"{len(paths)} paths for a cache of {self.n} images")
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        intact = self.complete and self._drop_if_damaged()
        if not intact:
            mine = list(range(self.n_chunks))[rank::world]
            self._drop_bad_chunks(mine)
            self._extract_chunks(mine, embed, paths, protocol, boxes, options)
        if world > 1:
            dist.barrier()
        if rank == 0:
            self._merge()
        if world > 1:
            dist.barrier()
        return self._open(paths, options.on_bad_image) if intact else self.read(paths, options.on_bad_image)

    def _extract_chunks(self, chunks: list[int], embed: Embed, paths: Sequence[Path], protocol: ExtractionProtocol,
                        boxes: np.ndarray | None, options: ExtractOptions) -> None:
        """Extract ``chunks`` not yet on disk; chunks another process holds are waited for, and taken over
        when that process dies without writing them."""
        todo = [c for c in chunks if not self._done(c)]
        while todo:
            held: dict[int, int] = {}
            try:
                self._extract_claimed(todo, held, embed, paths, protocol, boxes, options)
            finally:
                for fd in held.values():
                    os.close(fd)
            todo = [c for c in todo if not self._done(c)]
            if todo:  # held by another process: wait until it writes the chunk or dies, then look again
                log.info("waiting for chunk %d of %s, which another process is extracting", todo[0], self.directory)
                os.close(wait_lock(self._chunk(todo[0]).with_suffix(".lock")))

    def _extract_claimed(self, todo: list[int], held: dict[int, int], embed: Embed, paths: Sequence[Path],
                         protocol: ExtractionProtocol, boxes: np.ndarray | None, options: ExtractOptions) -> None:
        rows = np.concatenate([self._rows(c) for c in todo])
        sizes = np.full((self.n, 2), -1, dtype=np.int64)
        sizes[rows] = output_sizes([paths[i] for i in rows], protocol, None if boxes is None else boxes[rows],
                                   options.workers)
        buffers: dict[int, np.ndarray] = {}
        remaining: dict[int, int] = {}
        skipped: dict[int, list[int]] = {}

        def claimed_batches() -> Iterator[list[int]]:
            """Batches of the chunks this process locks (without waiting), chunk after chunk."""
            for c in todo:
                fd = try_lock(self._chunk(c).with_suffix(".lock"))
                if fd is None:
                    continue
                if self._done(c):
                    os.close(fd)
                    continue
                held[c] = fd
                for stale in self._chunk(c).parent.glob(f".{self._chunk(c).name}.*.tmp"):
                    stale.unlink(missing_ok=True)  # left by a killed writer of this chunk
                chunk_rows = self._rows(c)
                unreadable = chunk_rows[sizes[chunk_rows, 0] < 0]
                if len(unreadable) and options.on_bad_image == "fail":
                    raise InputError(f"cannot read image header; {SKIP_HINT}", paths[unreadable[0]])
                skipped[c] = unreadable.tolist()
                remaining[c] = len(chunk_rows) - len(unreadable)
                if remaining[c] == 0:
                    self._write_chunk(c, np.zeros((len(chunk_rows), 0), np.float32), skipped[c], held)
                yield from batches_by_size(sizes, options.batch_size, chunk_rows[sizes[chunk_rows, 0] >= 0])

        for batch in run_batches(embed, paths, protocol, boxes, claimed_batches(), options):
            c = int(batch.rows[0] if len(batch.rows) else batch.bad[0][0]) // self.chunk_rows
            if len(batch.rows):
                if c not in buffers:
                    buffers[c] = np.zeros((len(self._rows(c)), batch.descriptors.shape[1]), dtype=np.float32)
                buffers[c][batch.rows - c * self.chunk_rows] = batch.descriptors
            for i, why in batch.bad:
                log.warning("skipping %s: %s", paths[i], why)
            skipped[c] += [i for i, _ in batch.bad]
            remaining[c] -= len(batch.rows) + len(batch.bad)
            if remaining[c] == 0:
                buffer = buffers.pop(c, np.zeros((len(self._rows(c)), 0), np.float32))
                self._write_chunk(c, buffer, skipped[c], held)

    def _write_chunk(self, c: int, descriptors: np.ndarray, skipped: list[int], held: dict[int, int]) -> None:
        identity = chunk_identity(self.digest, c * self.chunk_rows, len(self._rows(c)))
        atomic_write_bytes(self._chunk(c), encode_chunk(descriptors.astype(self.dtype),
                                                        np.asarray(sorted(skipped), np.int64), identity))
        os.close(held.pop(c))
        self.written += 1
        log.debug("wrote chunk %d of %d in %s", c + 1, self.n_chunks, self.directory)

    def _load_chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(descriptors, skipped indices) of verified chunk ``c``; raises :class:`BadChunk`."""
        return decode_chunk(self._chunk(c), self.digest, c * self.chunk_rows, len(self._rows(c)), self.dtype)

    def _drop_bad_chunks(self, chunks: list[int]) -> None:
        """Delete, with a warning, each of ``chunks`` on disk that fails verification: it is extracted again."""
        for c in chunks:
            if self._chunk(c).exists():
                try:
                    self._load_chunk(c)
                except BadChunk as why:
                    log.warning("%s: cache chunk %s; extracting its images again", self._chunk(c), why)
                    self._chunk(c).unlink(missing_ok=True)

    def _damage(self) -> str | None:
        """Why the merged cache cannot be used (None when its record, shape, dtype, sha256 and values hold)."""
        try:
            info = json.loads((self.directory / "complete.json").read_text(encoding="utf-8"))
            descriptors = np.load(self.directory / "descriptors.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            return f"damaged descriptor cache ({type(error).__name__}: {error})"
        if list(descriptors.shape) != info.get("shape") or str(descriptors.dtype) != info.get("dtype"):
            return f"cache holds {descriptors.shape} {descriptors.dtype}, its record says {info.get('shape')} " \
                   f"{info.get('dtype')}"
        sha256, finite = array_sha256(descriptors)
        if sha256 != info.get("sha256"):
            return "descriptors.npy does not match the sha256 complete.json records (its bytes changed)"
        return None if finite else "descriptors.npy holds NaN or infinite values"

    def _drop_if_damaged(self) -> bool:
        """Whether the merged cache is intact; one that fails verification is removed (with a warning) to be
        extracted again."""
        why = self._damage()
        if why is None:
            return True
        log.warning("%s: %s; extracting every image again", self.directory, why)
        fd = wait_lock(self.directory / "merge.lock")
        try:
            (self.directory / "complete.json").unlink(missing_ok=True)
            (self.directory / "descriptors.npy").unlink(missing_ok=True)
        finally:
            os.close(fd)
        return False

    def _merge(self) -> None:
        """Chunks -> ``descriptors.npy`` (a fresh file renamed into place), then ``complete.json``."""
        fd = wait_lock(self.directory / "merge.lock")
        try:
            if self.complete:
                return
            missing = [c for c in range(self.n_chunks) if not self._chunk(c).exists()]
            if missing:
                raise RuntimeError(f"cannot merge {self.directory}: chunks {missing[:5]} are missing")
            try:
                widths = {self._load_chunk(c)[0].shape[1] for c in range(self.n_chunks)} - {0}
            except BadChunk as why:  # written by another process since this one verified its own
                raise InputError(f"a cache chunk {why}; rerun to extract it again", self.directory) from None
            if len(widths) > 1:
                raise InputError(f"cache chunks of different widths {sorted(widths)}; delete the directory and rerun",
                                 self.directory)
            dim = max(widths, default=0)
            if dim == 0:
                raise InputError(f"none of the {self.n} images could be read", self.directory)
            target = self.directory / "descriptors.npy"
            partial = self.directory / ".descriptors.npy.tmp"
            merged = np.lib.format.open_memmap(partial, mode="w+", dtype=self.dtype, shape=(self.n, dim))
            skipped: list[int] = []
            for c in range(self.n_chunks):
                descriptors, chunk_skipped = self._load_chunk(c)
                rows = self._rows(c)
                merged[rows[0]:rows[-1] + 1] = descriptors if descriptors.shape[1] else 0
                skipped += chunk_skipped.tolist()
            merged.flush()
            sha256, _ = array_sha256(merged)
            del merged
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(partial, target)
            atomic_write_text(self.directory / "complete.json", json.dumps(
                {"shape": [self.n, dim], "dtype": self.dtype, "sha256": sha256, "skipped": skipped}, indent=1))
            for c in range(self.n_chunks):
                self._chunk(c).unlink()
        finally:
            os.close(fd)

    def read(self, paths: Sequence[Path], on_bad_image: str = "fail") -> Extracted:
        """The merged descriptors, memory-mapped, and the skipped images (refused under ``fail``); a cache that
        fails verification is refused (:meth:`fill` extracts it again)."""
        why = self._damage()
        if why is not None:
            raise InputError(f"{why}; rerun to extract it again, or delete the directory", self.directory)
        return self._open(paths, on_bad_image)

    def _open(self, paths: Sequence[Path], on_bad_image: str) -> Extracted:
        info = json.loads((self.directory / "complete.json").read_text(encoding="utf-8"))
        descriptors = np.load(self.directory / "descriptors.npy", mmap_mode="r", allow_pickle=False)
        skipped = tuple(int(i) for i in info["skipped"])
        if skipped and on_bad_image == "fail":
            raise InputError(f"this cache left out {len(skipped)} unreadable image(s) (written with --on-bad-image "
                             f"skip), first {paths[skipped[0]]}; pass --on-bad-image skip, or fix them and delete the "
                             "cache directory", self.directory)
        return Extracted(descriptors, skipped)


def extract_cached(embed: Embed, paths: Sequence[Path], protocol: ExtractionProtocol, boxes: np.ndarray | None,
                   options: ExtractOptions, cache: DescriptorCache | None) -> Extracted:
    """Descriptors through ``cache`` (resumed, shared, memory-mapped), or in memory when ``cache`` is None."""
    if cache is None:
        return extract_all(embed, paths, protocol, boxes, options)
    return cache.fill(embed, paths, protocol, boxes, options)
