"""A full disk, an unwritable folder and concurrent writers: one clear error naming the path, nothing
half-written, temporary files removed, and a lock instead of a race.

The full disk is real: writes go to /dev/full, where the kernel answers ENOSPC. Permission errors are
simulated (the tests may run as root, whom file modes do not stop).
"""
from __future__ import annotations

import errno
import multiprocessing
import os
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks.core.atomic import atomic_write_text
from benchmarks.core.download import Retry, fetch
from benchmarks.core.errors import InputError
from benchmarks.core.locks import exclusive
from benchmarks.evaluation import results
from benchmarks.evaluation.results import load_result, write_result
from methods.netvlad import NetVLADMethod
from methods.weights import save_checkpoint
from tests.loopback import LoopbackServer
from tests.test_download import BODY, SHA
from tests.test_results import make_result
from tests.test_train import TINY_NETVLAD


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write's temporary file is /dev/full underneath: writing it fails with ENOSPC."""
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.fixture
def unwritable(monkeypatch):
    def refuse(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's keyword
        raise PermissionError(errno.EACCES, "Permission denied", dir)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def test_a_full_disk_keeps_the_old_result_and_names_the_file(tmp_path, full_disk):
    old = tmp_path / make_result().relative_path()
    old.parent.mkdir(parents=True)
    old.write_text("the previous result\n")
    with pytest.raises(InputError) as error:
        write_result(make_result(), tmp_path)
    assert str(error.value) == (f"{old}: cannot write: No space left on device; nothing was written (free some "
                                "space or write elsewhere)")
    assert old.read_text() == "the previous result\n"
    assert sorted(p.name for p in old.parent.iterdir()) == [old.name]  # no temporary or lock file left


def test_an_unwritable_folder_is_named(tmp_path, unwritable):
    with pytest.raises(InputError, match="cannot write: Permission denied; nothing was written \\(make the folder "
                                         "writable or write elsewhere\\)") as error:
        write_result(make_result(), tmp_path)
    assert str(tmp_path / make_result().relative_path()) in str(error.value)
    assert not (tmp_path / make_result().relative_path()).exists()


@pytest.mark.parametrize("failure", ["full_disk", "unwritable"])
def test_a_checkpoint_that_cannot_be_written_leaves_nothing(tmp_path, request, failure):
    torch.manual_seed(0)
    model = NetVLADMethod(TINY_NETVLAD)
    request.getfixturevalue(failure)
    with pytest.raises(InputError, match="cannot write: (No space left on device|Permission denied)") as error:
        save_checkpoint(tmp_path / "w.pt", model, "resnet18.test", {})
    assert str(error.value).startswith(f"{tmp_path / 'w.pt'}: ")
    assert list(tmp_path.iterdir()) == []


def interrupt(_seconds: float) -> None:
    raise KeyboardInterrupt


def test_a_download_onto_a_full_disk_says_so_and_keeps_what_it_wrote(tmp_path):
    dest = tmp_path / "file.bin"
    part = dest.with_name("file.bin.part")
    with LoopbackServer() as server:
        server.files["/file.bin"] = BODY
        server.drop_after["/file.bin"] = 300_000
        with pytest.raises(KeyboardInterrupt):  # a first, interrupted run leaves 300,000 bytes to resume from
            fetch([server.url + "/file.bin"], dest, sha256=SHA, retry=Retry(3, 0.0, 5.0), sleep=interrupt)
        kept = part.read_bytes()
        part.unlink()
        part.symlink_to("/dev/full")  # the disk is now full
        with pytest.raises(InputError) as error:
            fetch([server.url + "/file.bin"], dest, sha256=SHA, retry=Retry(3, 0.0, 5.0))
        assert str(error.value) == (f"{part}: cannot write: No space left on device; the bytes written so far are "
                                    "kept for the next run to resume from (free some space or write elsewhere)")
        assert len(server.requests) == 2  # not retried: a full disk is no network failure
        assert not dest.exists()
        part.unlink()
        part.write_bytes(kept)  # space freed: the next run resumes and completes
        fetch([server.url + "/file.bin"], dest, sha256=SHA, retry=Retry(3, 0.0, 5.0))
    assert dest.read_bytes() == BODY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_a_download_into_an_impossible_folder_is_named(tmp_path):
    (tmp_path / "data").write_text("a file where a folder should be")
    with pytest.raises(InputError, match="cannot write: (Not a directory|File exists); nothing was downloaded") \
            as error:
        fetch(["http://127.0.0.1:9/x"], tmp_path / "data" / "sub" / "x.bin", sha256=SHA)
    assert str(tmp_path / "data" / "sub") in str(error.value)


def test_a_second_writer_waits_for_the_lock_then_writes(tmp_path, monkeypatch):
    path = tmp_path / make_result().relative_path()
    monkeypatch.setattr(results, "LOCK_WAIT_S", 0.2)
    with exclusive(path), pytest.raises(InputError, match="another process is writing this file \\(waited 0.2 s\\)"):
        write_result(make_result(), tmp_path)
    assert not path.exists()
    monkeypatch.setattr(results, "LOCK_WAIT_S", 30.0)
    holder_done = threading.Event()

    def hold() -> None:
        with exclusive(path):
            time.sleep(0.3)
        holder_done.set()

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(0.05)
    write_result(make_result(), tmp_path)  # waits for the holder, then writes
    assert holder_done.is_set()
    thread.join()
    assert load_result(path) == make_result()


def _increment(counter: Path, times: int) -> None:
    for _ in range(times):
        with exclusive(counter, wait_s=60):
            value = int(counter.read_text())
            atomic_write_text(counter, str(value + 1))


def test_the_lock_lets_no_update_be_lost_between_processes(tmp_path):
    """Four processes read-modify-write one counter: with the lock (whose file is removed at each release)
    no increment is lost."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_increment, args=(counter, 50)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * 4
    assert counter.read_text() == "200"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter"]


def _write_versions(root: Path, version: int) -> None:
    base = make_result()
    for _ in range(30):
        write_result(replace(base, config={"dim": 8, "version": version}), root)


def test_two_runs_writing_one_result_take_turns(tmp_path):
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_versions, args=(tmp_path, v)) for v in (1, 2)]
    for writer in writers:
        writer.start()
    path = tmp_path / make_result().relative_path()
    seen = set()
    while any(w.is_alive() for w in writers):
        if path.exists():
            seen.add(load_result(path).config["version"])  # always whole: one version or the other
    for writer in writers:
        writer.join()
    assert [w.exitcode for w in writers] == [0, 0]
    assert load_result(path).config["version"] in (1, 2) and seen <= {1, 2}
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_second_download_of_the_same_file_stops_at_once(tmp_path):
    dest = tmp_path / "file.bin"
    with exclusive(dest), pytest.raises(InputError, match="another process is downloading this file; wait"):
        fetch(["http://127.0.0.1:9/file.bin"], dest, sha256=SHA)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_results_tables_and_checkpoints_get_the_mode_the_umask_gives(tmp_path, monkeypatch, umask, mode):
    from benchmarks.core import atomic
    from benchmarks.reports import tables

    monkeypatch.setattr(atomic, "_UMASK", umask)
    result = write_result(make_result(), tmp_path / "results")
    table = tables.write_files(tmp_path / "tables", {"t.md": "table\n"}, prune=False)[0]
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "w.pt", NetVLADMethod(TINY_NETVLAD), "resnet18.test", {})
    for path in (result, table, tmp_path / "w.pt", tmp_path / "w.pt.json"):
        assert path.stat().st_mode & 0o777 == mode, path


def test_the_umask_read_at_import_is_the_process_umask(tmp_path):
    from benchmarks.core import atomic

    plain = tmp_path / "plain"
    plain.touch()
    atomic_write_text(tmp_path / "atomic", "x")
    assert (tmp_path / "atomic").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~atomic._UMASK
