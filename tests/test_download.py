"""benchmarks.core.download and benchmarks.core.archives against a loopback HTTP server (tests/loopback.py)."""
from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile

import pytest
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.core.archives import extract
from benchmarks.core.download import Retry, fetch
from benchmarks.core.errors import InputError
from tests.loopback import LoopbackServer

BODY = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(BODY).hexdigest()
NO_WAIT = Retry(attempts=3, backoff=0.0, timeout=5.0)


@pytest.fixture
def server():
    with LoopbackServer() as s:
        s.files["/data/file.bin"] = BODY
        yield s


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_full_download_is_verified_and_renamed(server, tmp_path):
    got = fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", sha256=SHA, size=len(BODY), retry=NO_WAIT)
    assert (tmp_path / "file.bin").read_bytes() == BODY
    assert (got.sha256, got.size, got.url) == (SHA, len(BODY), server.url + "/data/file.bin")
    assert leftovers(tmp_path) == ["file.bin"]
    again = fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", sha256=SHA, retry=NO_WAIT)
    assert again.url is None and len(server.requests) == 1  # already there: no second request


def test_a_dropped_connection_resumes_without_fetching_a_byte_twice(server, tmp_path):
    server.drop_after["/data/file.bin"] = 300_000
    fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", sha256=SHA, retry=NO_WAIT)
    assert (tmp_path / "file.bin").read_bytes() == BODY
    assert server.sent["/data/file.bin"] == len(BODY)
    assert server.requests == [("/data/file.bin", None), ("/data/file.bin", "bytes=300000-")]


def test_an_interrupted_run_resumes_in_the_next_run(server, tmp_path):
    server.drop_after["/data/file.bin"] = 700_000

    def interrupt(_seconds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", sha256=SHA, retry=NO_WAIT, sleep=interrupt)
    assert (tmp_path / "file.bin.part").stat().st_size == 700_000 and not (tmp_path / "file.bin").exists()
    fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", sha256=SHA, retry=NO_WAIT)
    assert (tmp_path / "file.bin").read_bytes() == BODY and server.sent["/data/file.bin"] == len(BODY)
    assert leftovers(tmp_path) == ["file.bin"]


def test_a_file_changed_on_the_server_restarts_instead_of_splicing(server, tmp_path):
    part = tmp_path / "file.bin.part"
    part.write_bytes(b"old version bytes")
    (tmp_path / "file.bin.part.json").write_text(json.dumps({"url": server.url + "/data/file.bin",
                                                             "validator": '"stale-etag"', "total": 99}))
    fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", sha256=SHA, retry=NO_WAIT)
    assert (tmp_path / "file.bin").read_bytes() == BODY  # If-Range did not match: the server sent it whole


def test_a_corrupted_byte_is_a_clear_error_and_nothing_is_left(server, tmp_path):
    corrupt = bytearray(BODY)
    corrupt[123_456] ^= 0xFF
    server.files["/data/file.bin"] = bytes(corrupt)
    with pytest.raises(InputError, match=f"sha256 [0-9a-f]{{64}} does not match the expected {SHA}") as error:
        fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", sha256=SHA, retry=NO_WAIT)
    assert str(tmp_path / "file.bin") in str(error.value) and "nothing was left in its place" in str(error.value)
    assert leftovers(tmp_path) == []


def test_a_404_falls_back_to_the_next_source(server, tmp_path):
    urls = [server.url + "/moved/file.bin", server.url + "/data/file.bin"]
    got = fetch(urls, tmp_path / "file.bin", sha256=SHA, retry=NO_WAIT)
    assert got.url == urls[1] and (tmp_path / "file.bin").read_bytes() == BODY
    assert [path for path, _ in server.requests] == ["/moved/file.bin", "/data/file.bin"]  # 404 is not retried


def test_server_errors_are_retried_with_exponential_back_off(server, tmp_path):
    server.fail["/data/file.bin"] = 503
    waits = []
    with pytest.raises(InputError, match="gave up after 4 tries without progress"):
        fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", retry=Retry(attempts=4, backoff=0.5),
              sleep=waits.append)
    assert waits == [0.5, 1.0, 2.0]


def test_a_wrong_size_announced_by_the_server_is_refused(server, tmp_path):
    with pytest.raises(InputError, match="has 1048576 bytes, expected 1000"):
        fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", size=1000, retry=NO_WAIT)
    assert leftovers(tmp_path) == []


def test_md5_where_a_dataset_publishes_only_md5(server, tmp_path):
    md5 = hashlib.md5(BODY).hexdigest()
    got = fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", md5=md5, retry=NO_WAIT)
    assert got.sha256 == SHA and (tmp_path / "file.bin").read_bytes() == BODY
    assert fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", md5=md5).url is None  # verified: kept
    wrong = "0" * 32
    with pytest.raises(InputError, match=f"md5 {md5} does not match the expected {wrong}"):
        fetch([server.url + "/data/file.bin"], tmp_path / "other.bin", md5=wrong, retry=NO_WAIT)
    assert leftovers(tmp_path) == ["file.bin"]
    server.requests.clear()
    fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", md5=md5, retry=NO_WAIT)
    assert server.requests == []
    (tmp_path / "file.bin").write_bytes(BODY[:-1] + b"?")  # changed on disk: fetched again, then verified
    fetch([server.url + "/data/file.bin"], tmp_path / "file.bin", md5=md5, retry=NO_WAIT)
    assert (tmp_path / "file.bin").read_bytes() == BODY and len(server.requests) == 1


def make_tar(members, path):
    """members: (name, bytes | None for a directory | ('symlink', target))."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def test_extract_keeps_folders_or_flattens_them(tmp_path):
    archive = make_tar([("paris", None), ("paris/eiffel/a.jpg", b"a"), ("paris/louvre/b.jpg", b"b")],
                       tmp_path / "paris_1.tgz")
    assert extract(archive, tmp_path / "kept") == 2
    assert (tmp_path / "kept/paris/louvre/b.jpg").read_bytes() == b"b"
    assert extract(archive, tmp_path / "jpg", flatten=True) == 2
    assert sorted(p.name for p in (tmp_path / "jpg").iterdir()) == ["a.jpg", "b.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jpg", "kept", "paris_1.tgz"]  # no staging left


@pytest.mark.parametrize("members", [
    [("ok.jpg", b"x"), ("../evil.txt", b"owned")],
    [("/tmp/evil.txt", b"owned")],
    [("ok.jpg", b"x"), ("link", ("symlink", "/etc/passwd"))],
], ids=["dot-dot", "absolute", "symlink"])
def test_extract_refuses_members_that_escape_and_writes_nothing(tmp_path, members):
    archive = make_tar(members, tmp_path / "evil.tgz")
    (tmp_path / "target").mkdir()
    with pytest.raises(InputError, match="refused, nothing was extracted") as error:
        extract(archive, tmp_path / "target")
    assert str(archive) in str(error.value)
    assert list((tmp_path / "target").iterdir()) == [] and not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tgz", "target"]


def test_extract_refuses_zip_escapes_and_name_clashes_when_flattening(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../evil.txt", b"owned")
    with pytest.raises(InputError, match="outside the target folder"):
        extract(archive, tmp_path / "target")
    clash = make_tar([("a/x.jpg", b"1"), ("b/x.jpg", b"2")], tmp_path / "clash.tgz")
    with pytest.raises(InputError, match="share the file name x.jpg"):
        extract(clash, tmp_path / "flat", flatten=True)
    assert not (tmp_path / "flat").exists() or not any((tmp_path / "flat").iterdir())


def test_a_truncated_archive_is_named_and_leaves_nothing(tmp_path):
    archive = make_tar([(f"{i}.jpg", bytes(5000)) for i in range(20)], tmp_path / "a.tgz")
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(InputError, match="corrupt or unreadable archive"):
        extract(archive, tmp_path / "jpg")
    assert not (tmp_path / "jpg").exists()


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("offline", ["dns", "refused"])
def test_an_unreachable_host_fails_at_once_in_one_line(tmp_path, monkeypatch, offline):
    url = f"http://127.0.0.1:{closed_port()}/data/file.bin"
    if offline == "dns":  # what urlopen raises on a machine without name resolution (the tests never go out)
        url = "https://no-such-host.invalid/data/file.bin"

        def unresolved(*args: object, **kwargs: object) -> None:
            raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

        monkeypatch.setattr(urllib.request, "urlopen", unresolved)
    waits = []
    with pytest.raises(InputError) as error:
        fetch([url], tmp_path / "file.bin", sha256=SHA, retry=Retry(attempts=5, backoff=1.0), sleep=waits.append)
    message = str(error.value)
    assert waits == [] and "\n" not in message and f"{url}: cannot reach " in message and "not retried" in message
    assert f"nothing was fetched: check the connection, or place the file at {tmp_path / 'file.bin'}" in message
    assert "--mirror URL_PREFIX" in message and "resume" not in message
    assert leftovers(tmp_path) == []


def test_data_download_with_no_server_leaves_no_folder_and_no_resume_advice(tmp_path):
    root = tmp_path / "data"
    result = CliRunner().invoke(cli, ["data", "download", "roxford5k", "--root", str(root), "--mirror-only",
                                      "--mirror", f"http://127.0.0.1:{closed_port()}/m"])
    assert result.exit_code == 2 and "2 of 2 files failed:" in result.output
    assert result.output.count("cannot reach 127.0.0.1:") == 2 and "resume" not in result.output
    assert not root.exists() or list(root.iterdir()) == []
