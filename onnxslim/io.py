"""Reading and writing model files.

Loading checks the file is really an ONNX model (and passes ``onnx.checker``) and turns every
failure into a one-line :class:`ModelLoadError` / :class:`InvalidModelError`. Saving is atomic
(a temporary file in the target folder, then a rename), never writes onto the input model, and
switches to external data above the 2 GB protobuf limit or on request.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from passes._errors import InvalidModelError, ModelLoadError, ModelSaveError

__all__ = ["load_model", "save_model", "write_text_atomically", "refuse_overwrite", "check_output_path", "check_model", "model_file_size", "PROTO_LIMIT"]

#: Largest protobuf that can be serialized in one piece; above it weights go to external data.
PROTO_LIMIT = 2**31 - 1
# Leave room for the graph structure around the weights when deciding on external data.
_EXTERNAL_MARGIN = 64 * 2**20


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_model(path: str | os.PathLike[str], *, check: bool = True) -> onnx.ModelProto:
    """Load an ONNX model with its external data.

    Args:
        path: the model file.
        check: run ``onnx.checker`` (structure, not full shape inference) after loading.

    Raises:
        ModelLoadError: the file is missing, unreadable, not ONNX, truncated, or its external
            data is missing.
        InvalidModelError: the model loads but fails the checker (message names the node).
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder, not a model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as err:
        raise ModelLoadError(f"{path}: not an ONNX model or truncated file ({_one_line(err)})") from err
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path}: cannot read ({_one_line(err)})") from err
    if model.ir_version == 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(f"{path}: not an ONNX model (no IR version, graph or opset import)")
    if _uses_external_data(model):
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError, onnx.checker.ValidationError) as err:
            raise ModelLoadError(f"{path}: external data cannot be read ({_one_line(err)})") from err
    if check:
        check_model(model, where=str(path))
    return model


def _uses_external_data(model: onnx.ModelProto) -> bool:
    return any(
        t.data_location == onnx.TensorProto.EXTERNAL
        for t in onnx.external_data_helper._get_all_tensors(model)  # noqa: SLF001 - public since 1.9
    )


def model_file_size(path: str | os.PathLike[str]) -> int:
    """Bytes of the model file ``path`` plus its external data file ``<file>.data`` when present.

    Raises:
        OSError: ``path`` does not exist or cannot be read.
    """
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


_NODE_RE = re.compile(r"Name:\s*(\S*)\s*OpType:\s*(\S+)")


def check_model(model: onnx.ModelProto, *, where: str = "model") -> None:
    """Run ``onnx.checker`` and raise a one-line :class:`InvalidModelError` naming the node.

    Models over the protobuf limit are checked from a temporary file with external data.
    """
    try:
        if model.ByteSize() < PROTO_LIMIT:
            onnx.checker.check_model(model)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / "model.onnx"
                _write_external(model, target)
                onnx.checker.check_model(str(target))
    except onnx.checker.ValidationError as err:
        text = str(err)
        node = _NODE_RE.search(text)
        reason = _one_line(text.split("==>")[0])
        at = f" at node '{node.group(1) or '?'}' ({node.group(2)})" if node else ""
        raise InvalidModelError(f"{where}: invalid ONNX model{at}: {reason}") from err


def _needs_external(model: onnx.ModelProto) -> bool:
    try:
        return model.ByteSize() > PROTO_LIMIT - _EXTERNAL_MARGIN
    except ValueError:  # protobuf refuses to size a message this large
        return True


def _write_external(model: onnx.ModelProto, target: Path) -> None:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save_model(
        copy,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=target.name + ".data",
        size_threshold=1024,
    )


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and os.path.samefile(a, b)
    return False


def refuse_overwrite(output: Path, input_path: Path) -> None:
    """Raise :class:`ModelSaveError` when writing ``output`` would overwrite ``input_path``.

    Both the model file and its external data file (``<output>.data``) count.
    """
    if _same_file(output, input_path) or _same_file(Path(str(output) + ".data"), input_path):
        raise ModelSaveError(f"{output}: refusing to overwrite the input model; choose another -o")


def check_output_path(output: Path, input_path: Path | None = None) -> None:
    """Refuse, before any work, an output that cannot be written: the input itself (or its
    external data), a folder, or a path whose folder does not exist or is not writable.

    Raises:
        ModelSaveError: naming the path and the reason.
    """
    if input_path is not None:
        refuse_overwrite(output, input_path)
    if output.is_dir():
        raise ModelSaveError(f"{output}: is a folder")
    if output.parent.exists() and not output.parent.is_dir():
        raise ModelSaveError(f"{output}: {output.parent} is not a folder")
    if not output.parent.is_dir():
        raise ModelSaveError(f"{output}: folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise ModelSaveError(f"{output}: folder {output.parent} is not writable")


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename (a
    failure or Ctrl-C leaves the old file, if any, and no temporary file).

    Raises:
        ModelSaveError: the folder is missing or the write failed.
    """
    check_output_path(path)
    try:
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
            staged = Path(handle.name)
            handle.write(text)
        os.replace(staged, path)
    except BaseException as err:
        with contextlib.suppress(OSError, UnboundLocalError):
            staged.unlink()
        if isinstance(err, OSError):
            raise ModelSaveError(f"{path}: cannot write ({_one_line(err)})") from err
        raise


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    input_path: str | os.PathLike[str] | None = None,
    external_data: bool | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically.

    Args:
        model: the model to write (not modified).
        path: the target file; its folder must exist.
        input_path: the user's input model; writing onto it (or onto its external data file)
            is refused.
        external_data: ``True`` stores weights in ``<name>.data`` beside the model, ``False``
            forbids it, ``None`` decides by size (above the 2 GB protobuf limit).

    Returns:
        The path written.

    Raises:
        ModelSaveError: the target is the input model, its folder does not exist, the model is
            too large without external data, or the write failed. No partial file is left.
    """
    path = Path(path)
    check_output_path(path, None if input_path is None else Path(input_path))
    use_external = _needs_external(model) if external_data is None else external_data
    if not use_external and _needs_external(model):
        raise ModelSaveError(f"{path}: model is over 2 GB; it must be saved with external data")
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnxslim-") as tmp:
            staged = Path(tmp) / path.name
            if use_external:
                _write_external(model, staged)
                data = staged.with_name(staged.name + ".data")
                if data.exists():
                    os.replace(data, path.with_name(path.name + ".data"))
            else:
                staged.write_bytes(model.SerializeToString())
            os.replace(staged, path)
    except (OSError, ValueError) as err:
        raise ModelSaveError(f"{path}: cannot write ({_one_line(err)})") from err
    return path

