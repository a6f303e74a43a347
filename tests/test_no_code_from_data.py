"""No code from data: the repository never unpickles freely, never loads torch files with code, never runs a
shell; archives cannot write outside their target or create links; plain http needs a checksum."""
from __future__ import annotations

import ast
import io
import subprocess
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch

from benchmarks.core.archives import extract
from benchmarks.core.download import Retry, fetch, unverifiable
from benchmarks.core.errors import InputError
from benchmarks.core.provenance import REPO_ROOT
from benchmarks.training.common import load_state
from methods.netvlad import NetVLADMethod
from methods.weights import load_checkpoint
from tests.loopback import LoopbackServer
from tests.test_download import BODY, SHA, make_tar

# The one place a pickle may be read: the restricted unpickler of the ground-truth readers.
UNPICKLER_HOME = Path("datasets/formats.py")


def python_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    return [Path(name) for name in listed if (REPO_ROOT / name).exists()]


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "<expression>"
    return None


def code_from_data_calls(source: str, path: Path) -> list[str]:
    """Each call in ``source`` that could run code from data or a shell, as 'path:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and path != UNPICKLER_HOME \
                and any(_dotted(base).endswith("Unpickler") for base in node.bases):
            found.append(f"{path}:{node.lineno}: an Unpickler outside {UNPICKLER_HOME}")
        if not isinstance(node, ast.Call):
            continue
        name, where = _dotted(node.func), f"{path}:{node.lineno}"
        if _keyword(node, "shell") not in (None, False):
            found.append(f"{where}: shell={_keyword(node, 'shell')}")
        if name in ("os.system", "os.popen", "eval", "exec"):
            found.append(f"{where}: {name}")
        if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "joblib.load") \
                and path != UNPICKLER_HOME:
            found.append(f"{where}: {name} outside the restricted unpickler")
        if name == "torch.load" and _keyword(node, "weights_only") is not True:
            found.append(f"{where}: torch.load without weights_only=True")
        if name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") not in (None, False):
            found.append(f"{where}: np.load with allow_pickle")
        if name == "yaml.load" or name.endswith(".extractall"):
            found.append(f"{where}: {name}")
    return found


def test_the_checker_finds_each_kind_of_call():
    bad = ("import pickle, torch, subprocess, numpy as np\nsubprocess.run('ls', shell=True)\npickle.load(f)\n"
           "torch.load(p)\ntorch.load(p, weights_only=False)\nnp.load(p, allow_pickle=True)\ntar.extractall(d)\n"
           "class U(pickle.Unpickler): pass\n")
    assert [f.split(": ", 1)[1] for f in code_from_data_calls(bad, Path("x.py"))] == [
        "an Unpickler outside datasets/formats.py", "shell=True", "pickle.load outside the restricted unpickler",
        "torch.load without weights_only=True", "torch.load without weights_only=True", "np.load with allow_pickle",
        "tar.extractall"]
    assert code_from_data_calls("torch.load(p, map_location='cpu', weights_only=True)\n", Path("x.py")) == []


def test_no_file_of_the_repository_runs_code_from_data():
    files = python_files()
    assert Path("benchmarks/core/download.py") in files and Path(__file__).relative_to(REPO_ROOT) in files
    found = [hit for path in files for hit in code_from_data_calls((REPO_ROOT / path).read_text(), path)]
    assert found == []


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_or_training_state_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code-ran"
    for name in ("w.pt", "w.pt.state"):
        torch.save({"format": "image-retrieval-benchmarks/weights", "hook": _RunsCode(marker)}, tmp_path / name)
    with pytest.raises(InputError, match="not a readable weights file"):
        load_checkpoint(NetVLADMethod, tmp_path / "w.pt")
    with pytest.raises(InputError, match="unreadable training state"):
        load_state(tmp_path / "w.pt.state")
    assert not marker.exists()


def make_zip(path: Path, name: str, *, symlink_to: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.jpg", b"x")
        info = zipfile.ZipInfo(name)
        if symlink_to is not None:
            info.external_attr = (0o120777 << 16)  # how Unix zip stores a symbolic link
        zf.writestr(info, symlink_to or b"owned")
    return path


def tar_with(path: Path, kind: bytes, name: str = "evil", link: str = "") -> Path:
    with tarfile.open(path, "w") as tar:
        tar.addfile(tarfile.TarInfo("ok.jpg"), io.BytesIO(b""))
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        tar.addfile(info)
    return path


@pytest.mark.parametrize(("archive", "message"), [
    (lambda d: tar_with(d / "a.tar", tarfile.LNKTYPE, link="/etc/passwd"), "is a link or device"),
    (lambda d: tar_with(d / "a.tar", tarfile.LNKTYPE, link="ok.jpg"), "is a link or device"),
    (lambda d: tar_with(d / "a.tar", tarfile.SYMTYPE, link="ok.jpg"), "is a link or device"),
    (lambda d: tar_with(d / "a.tar", tarfile.CHRTYPE), "is a link or device"),
    (lambda d: tar_with(d / "a.tar", tarfile.FIFOTYPE), "is a link or device"),
    (lambda d: make_tar([("sub/../../evil", b"owned")], d / "a.tgz"), "outside the target folder"),
    (lambda d: make_zip(d / "a.zip", "/tmp/evil"), "outside the target folder"),
    (lambda d: make_zip(d / "a.zip", "C:/evil"), "outside the target folder"),
    (lambda d: make_zip(d / "a.zip", "sub\\..\\..\\evil"), "outside the target folder"),
    (lambda d: make_zip(d / "a.zip", "link", symlink_to="/etc/passwd"), "is a symbolic link"),
], ids=["tar-hardlink-out", "tar-hardlink-in", "tar-symlink-in", "tar-device", "tar-fifo", "tar-dotdot-nested",
        "zip-absolute", "zip-drive", "zip-backslash-dotdot", "zip-symlink"])
def test_hostile_archives_are_refused_and_write_nothing(tmp_path, archive, message):
    source = archive(tmp_path)
    target = tmp_path / "out" / "target"
    with pytest.raises(InputError, match=message) as error:
        extract(source, target)
    assert str(source) in str(error.value) and "nothing was extracted" in str(error.value)
    assert not target.exists() or not any(target.iterdir())
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted([source.name, "out"])


def test_plain_http_needs_a_checksum(tmp_path, monkeypatch):
    assert unverifiable("https://example.org/x") is None and unverifiable("http://127.0.0.1:8/x") is None
    assert "plain http without a checksum" in unverifiable("http://example.org/x")
    tried = []

    def offline(request, *args, **kwargs):
        tried.append(request.full_url)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    retry = Retry(attempts=1, backoff=0.0, timeout=1.0)
    with pytest.raises(InputError, match="http://example.org/x: plain http without a checksum") as error:
        fetch(["http://example.org/x"], tmp_path / "x", retry=retry)
    assert tried == [] and "nothing was left in its place" in str(error.value)  # never even asked
    for kwargs in ({"sha256": SHA}, {"allow_insecure_http": True}):
        with pytest.raises(InputError, match="gave up after 1 tries"):
            fetch(["http://example.org/x"], tmp_path / "x", retry=retry, **kwargs)
    assert tried == ["http://example.org/x"] * 2  # with a checksum, or trusted once, it is fetched


def test_a_redirect_to_plain_http_is_refused_without_a_checksum(tmp_path, monkeypatch):
    real = urllib.request.urlopen

    class Redirected:
        """The loopback response, as if https://mirror.example had redirected to plain http."""

        def __init__(self, response):
            self.response = response

        def __getattr__(self, name):
            return getattr(self.response, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.response.close()

        def geturl(self):
            return "http://mirror.example/file.bin"

    with LoopbackServer() as server:
        server.files["/file.bin"] = BODY
        monkeypatch.setattr(urllib.request, "urlopen", lambda request, **kw: Redirected(
            real(urllib.request.Request(server.url + "/file.bin", headers=dict(request.header_items())), **kw)))
        with pytest.raises(InputError, match="redirected to http://mirror.example/file.bin: plain http"):
            fetch(["https://mirror.example/file.bin"], tmp_path / "file.bin", retry=Retry(1, 0.0, 5.0))
        assert not (tmp_path / "file.bin").exists()
        fetch(["https://mirror.example/file.bin"], tmp_path / "file.bin", sha256=SHA, retry=Retry(1, 0.0, 5.0))
    assert (tmp_path / "file.bin").read_bytes() == BODY
