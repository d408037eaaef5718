"""onnxruntime sessions, feeds and input synthesis.

Sessions are built from in-memory bytes when the model is under 2 GB, from a path otherwise.
ORT's own logging is quiet by default so its C++ warnings do not bury our output.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from calibration.datasets import InputSpec, input_specs
from passes._errors import DataError, OnnxSlimError

__all__ = [
    "GRAPH_OPT_LEVELS",
    "InputSpec",
    "input_specs",
    "parse_shape_option",
    "make_session",
    "run_model",
    "synthesize_feeds",
    "runnable_feeds",
    "cast_feeds",
    "DIM_FILLS",
]

GRAPH_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

_MAX_PROTO = 2**31 - 1


_SHAPE_RE = re.compile(r"^([^=]+)=(\d+(?:[x,]\d+)*)$")


def parse_shape_option(texts: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME=D1xD2…`` strings (``,`` also separates dims) into a mapping.

    Raises:
        DataError: a text does not have that form.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts:
        match = _SHAPE_RE.match(text.strip())
        if not match:
            raise DataError(f"--shape '{text}' is not of the form NAME=D1xD2… (e.g. input=1x3x224x224)")
        shapes[match.group(1)] = tuple(int(d) for d in re.split(r"[x,]", match.group(2)))
    return shapes


def make_session(
    model: onnx.ModelProto | str,
    *,
    threads: int = 0,
    graph_opt: str = "disable",
    optimized_model_path: str | None = None,
) -> ort.InferenceSession:
    """Build a CPU session; ``threads=0`` lets onnxruntime choose.

    Raises:
        OnnxSlimError: onnxruntime refuses the model (its reason is in the message).
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # fatal only: failures reach the caller as exceptions
    opts.graph_optimization_level = GRAPH_OPT_LEVELS[graph_opt]
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if optimized_model_path:
        opts.optimized_model_filepath = optimized_model_path
    if isinstance(model, onnx.ModelProto):
        source: str | bytes = model.SerializeToString() if model.ByteSize() < _MAX_PROTO else ""
        if not source:
            raise OnnxSlimError("model is over 2 GB in memory; run it from a file with external data")
    else:
        source = model
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises several unrelated types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OnnxSlimError(f"onnxruntime cannot load the model: {first}") from err


def run_model(
    session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run ``session`` and return outputs by name.

    Raises:
        DataError: onnxruntime rejected the feeds (wrong shape or dtype) or failed while running.
    """
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, dict(feeds))
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"onnxruntime failed to run the model: {first}") from err
    return dict(zip(names, values))


def cast_feeds(feeds: Mapping[str, np.ndarray], model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """``feeds`` with float arrays cast to the model's float input types (e.g. a float16
    model fed the float32 samples of its float32 original); other arrays unchanged."""
    wanted = {s.name: s.dtype for s in input_specs(model)}
    out = {}
    for name, value in feeds.items():
        dtype = wanted.get(name)
        floats = dtype is not None and np.issubdtype(dtype, np.floating) and np.issubdtype(value.dtype, np.floating)
        out[name] = value.astype(dtype) if floats and value.dtype != dtype else value
    return out


def _random_array(dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 8, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(size=shape).astype(dtype)
    raise DataError(f"cannot synthesize inputs of dtype {dtype}")


def _fixed_shape(spec: InputSpec, shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in shape)
    if len(spec.dims) and len(shape) != len(spec.dims):
        raise DataError(f"--shape {spec.name}: {len(shape)} dims given, the input has {len(spec.dims)} ({spec.shape_text()})")
    for want, got in zip(spec.dims, shape):
        if isinstance(want, int) and want != got:
            raise DataError(f"--shape {spec.name}: fixed dim {want} given as {got} ({spec.shape_text()})")
    return shape


def _filled_shape(spec: InputSpec, fill: tuple[int, int] | None, named: dict[str, int]) -> tuple[int, ...]:
    shape = []
    for axis, dim in enumerate(spec.dims):
        if isinstance(dim, int):
            shape.append(dim)
        elif isinstance(dim, str) and dim in named:
            shape.append(named[dim])
        elif fill is not None:
            value = fill[0] if axis == 0 else fill[1]
            if isinstance(dim, str):
                named[dim] = value
            shape.append(value)
        else:
            label = f"'{dim}'" if dim else f"#{axis}"
            raise DataError(
                f"input '{spec.name}' has dynamic dim {label} (shape {spec.shape_text()}); "
                f"give it with --shape {spec.name}=D1xD2…"
            )
    return tuple(shape)


def synthesize_feeds(
    model: onnx.ModelProto,
    *,
    rng: np.random.Generator,
    shapes: Mapping[str, Sequence[int]] | None = None,
    fill: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """Random inputs matching the model's input specs.

    Floats are standard normal, integers in ``[0, 8)``, booleans uniform. An input named in
    ``shapes`` takes that whole shape. Otherwise a dynamic dim takes ``fill[0]`` on axis 0 (the
    batch) and ``fill[1]`` elsewhere; a symbolic dim keeps the value it first got, so dims that
    share a name agree across inputs. Without ``fill`` a dynamic dim is an error naming it.

    Raises:
        DataError: a dynamic dim has no value, or a ``shapes`` entry does not fit the input.
    """
    shapes = dict(shapes or {})
    specs = input_specs(model)
    named: dict[str, int] = {}
    for spec in specs:  # dims fixed through --shape also fix their symbolic names
        if spec.name in shapes:
            for dim, value in zip(spec.dims, _fixed_shape(spec, shapes[spec.name])):
                if isinstance(dim, str):
                    named.setdefault(dim, value)
    feeds = {}
    for spec in specs:
        if spec.name in shapes:
            shape = _fixed_shape(spec, shapes.pop(spec.name))
        else:
            shape = _filled_shape(spec, fill, named)
        feeds[spec.name] = _random_array(spec.dtype, shape, rng)
    if shapes:
        raise DataError(f"--shape names unknown input '{next(iter(shapes))}'")
    return feeds


#: Values tried for unset dynamic dims when inputs must be made up: batch 1, other dims growing
#: until the model runs (spatial dims often need room for several stride-2 stages).
DIM_FILLS: tuple[tuple[int, int], ...] = ((1, 1), (1, 32), (1, 64), (1, 128), (1, 320))


def runnable_feeds(
    model: onnx.ModelProto,
    *,
    shapes: Mapping[str, Sequence[int]] | None,
    samples: int,
    seed: int = 0,
) -> tuple[list[dict[str, np.ndarray]], str]:
    """Random inputs the model actually runs on, and a note saying how dynamic dims were set.

    With every dynamic dim given (``shapes``), those are used. Otherwise the fills of
    :data:`DIM_FILLS` are tried in order and the first on which onnxruntime runs ``model`` is
    kept.

    Raises:
        DataError: ``shapes`` does not fit the model, or no fill gives inputs the model runs on.
    """
    try:
        feeds = [synthesize_feeds(model, rng=np.random.default_rng(seed + i), shapes=shapes) for i in range(samples)]
        return feeds, "random inputs"
    except DataError as err:
        if "dynamic dim" not in str(err):
            raise
    session = make_session(model, graph_opt="disable")
    problem = ""
    for fill in DIM_FILLS:
        feeds = [synthesize_feeds(model, rng=np.random.default_rng(seed + i), shapes=shapes, fill=fill) for i in range(samples)]
        try:
            run_model(session, feeds[0])
        except DataError as err:
            problem = str(err)
            continue
        return feeds, f"random inputs, unset dynamic dims: batch {fill[0]}, others {fill[1]} (--shape chooses)"
    raise DataError(f"no random inputs found that the model runs on; give --shape ({problem})")
