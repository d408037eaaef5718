"""onnxruntime sessions, feeds and input synthesis.

Sessions are built from in-memory bytes when the model is under 2 GB, from a path otherwise.
ORT's own logging is quiet by default so its C++ warnings do not bury our output.

Inputs made up for a model follow one rule in every command: ``--shape`` gives whole shapes; a
dynamic batch dim (axis 0) left open is :data:`DEFAULT_BATCH` (1), and the caller's report says
so; any other open dynamic dim is an error that names all of them at once with a ``--shape``
that can be pasted as printed (:func:`runnable_feeds`, used to verify a rewrite, first tries
growing values until the model runs). A dim below 1 is a usage error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from calibration.datasets import InputSpec, input_specs
from passes._errors import DataError, OnnxSlimError, UsageError

__all__ = [
    "GRAPH_OPT_LEVELS",
    "InputSpec",
    "input_specs",
    "parse_shape_option",
    "DEFAULT_BATCH",
    "EXAMPLE_DIM",
    "DynamicDimsError",
    "example_shape",
    "dynamic_dim_labels",
    "feed_shapes",
    "batch_note",
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


#: What a dynamic batch dim (axis 0) becomes when inputs are made up and nothing else sets it.
DEFAULT_BATCH = 1
#: The size an error's pasteable ``--shape`` suggests for other unset dynamic dims.
EXAMPLE_DIM = 224

_SHAPE_RE = re.compile(r"^([^=]+)=(-?\d+(?:[x,]-?\d+)*)$")


class DynamicDimsError(DataError):
    """Inputs cannot be made up: some dynamic dims have no value. The message lists every one of
    them and a ``--shape`` that can be pasted as it is."""


def parse_shape_option(texts: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME=D1xD2…`` strings (``,`` also separates dims) into a mapping.

    Raises:
        UsageError: a text does not have that form, or a dim is below 1.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts:
        match = _SHAPE_RE.match(text.strip())
        if not match:
            raise UsageError(f"--shape '{text}' is not of the form NAME=D1xD2… (e.g. input=1x3x224x224)")
        dims = tuple(int(d) for d in re.split(r"[x,]", match.group(2)))
        if min(dims) < 1:
            raise UsageError(f"--shape '{text}': every dim must be at least 1, got {min(dims)}")
        shapes[match.group(1)] = dims
    return shapes


def example_shape(dims: Sequence[int | str | None]) -> str:
    """A value for ``--shape NAME=`` that parses as it is: fixed dims kept, a dynamic first dim
    (the batch) :data:`DEFAULT_BATCH`, other dynamic dims :data:`EXAMPLE_DIM`."""
    return "x".join(
        str(d) if isinstance(d, int) and d >= 0 else str(DEFAULT_BATCH if axis == 0 else EXAMPLE_DIM)
        for axis, d in enumerate(dims)
    )


def dynamic_dim_labels(dims: Sequence[int | str | None]) -> list[str]:
    """The dynamic dims among ``dims``: a symbolic dim by its quoted name, else ``axis N``."""
    return [f"'{d}'" if isinstance(d, str) else f"axis {axis}"
            for axis, d in enumerate(dims) if not (isinstance(d, int) and d >= 0)]


def _fixed_shape(spec: InputSpec, shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in shape)
    # a dim below 1 is the user's mistake, unless the model itself fixes it so (an empty axes input)
    chosen = [d for axis, d in enumerate(shape) if not (axis < len(spec.dims) and spec.dims[axis] == d)]
    if any(d < 1 for d in chosen):
        raise UsageError(f"--shape {spec.name}: every dim must be at least 1, got {min(chosen)}")
    if len(spec.dims) and len(shape) != len(spec.dims):
        raise DataError(f"--shape {spec.name}: {len(shape)} dims given, the input has {len(spec.dims)} ({spec.shape_text()})")
    for want, got in zip(spec.dims, shape):
        if isinstance(want, int) and want != got:
            raise DataError(f"--shape {spec.name}: fixed dim {want} given as {got} ({spec.shape_text()})")
    return shape


def _unset_message(unset: Sequence[tuple[InputSpec, list[int | None]]]) -> str:
    """``input 'x' has dynamic dims 'h', 'w' (shape 1xhxw): give --shape x=1x224x224``."""
    parts, flags = [], []
    for spec, shape in unset:
        open_dims = [d if v is None else v for d, v in zip(spec.dims, shape)]
        labels = dynamic_dim_labels(open_dims)
        text = "x".join("?" if d is None else str(d) for d in open_dims)
        parts.append(f"input '{spec.name}' has dynamic dim{'s' if len(labels) > 1 else ''} {', '.join(labels)} (shape {text})")
        flags.append(f"--shape {spec.name}={example_shape(shape)}")
    return f"{'; '.join(parts)}: give {' '.join(flags)}"


def feed_shapes(
    model: onnx.ModelProto,
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    fill: tuple[int, int] | None = None,
    batch: int | None = DEFAULT_BATCH,
) -> tuple[dict[str, tuple[int, ...]], tuple[str, ...]]:
    """The shape of each input's made-up value, and the inputs whose dynamic batch dim was set.

    An input named in ``shapes`` takes that whole shape, and its symbolic dims fix the dims of
    the same name in other inputs. Otherwise a dynamic first dim (the batch) takes ``fill[0]``,
    else ``batch``; other dynamic dims take ``fill[1]``, else stay unset. A symbolic dim keeps
    the value it first got, so dims that share a name agree across inputs.

    Returns:
        The shapes by input name, and the inputs (not named in ``shapes``) whose dynamic first
        dim took the batch value.

    Raises:
        UsageError: a ``shapes`` dim is below 1.
        DataError: a ``shapes`` entry names an unknown input or does not fit its input.
        DynamicDimsError: dynamic dims are left without a value (all of them are named).
    """
    given = {name: tuple(dims) for name, dims in (shapes or {}).items()}
    specs = input_specs(model)
    unknown = [name for name in given if name not in {s.name for s in specs}]
    if unknown:
        raise DataError(f"--shape names unknown input '{unknown[0]}' (inputs: {', '.join(s.name for s in specs) or 'none'})")
    out = {s.name: _fixed_shape(s, given[s.name]) for s in specs if s.name in given}
    named: dict[str, int] = {}
    for spec in specs:  # dims fixed through --shape also fix their symbolic names
        for dim, value in zip(spec.dims, out.get(spec.name, ())):
            if isinstance(dim, str):
                named.setdefault(dim, value)
    first = fill[0] if fill is not None else batch
    batch_names: set[str] = set()
    for spec in specs:  # the batch before other dims, so a name it sets holds everywhere
        head = spec.dims[0] if spec.dims and spec.name not in out else 0
        if isinstance(head, str) and head not in named and first is not None:
            named[head] = first
            batch_names.add(head)
    batched, unset = [], []
    for spec in specs:
        if spec.name in out:
            continue
        shape = _filled(spec, fill[1] if fill is not None else None, first, named)
        if spec.dims and ((spec.dims[0] is None and first is not None) or spec.dims[0] in batch_names):
            batched.append(spec.name)
        if None in shape:
            unset.append((spec, shape))
        else:
            out[spec.name] = tuple(int(d) for d in shape)  # type: ignore[arg-type]
    if unset:
        raise DynamicDimsError(_unset_message(unset))
    return {s.name: out[s.name] for s in specs}, tuple(batched)


def _filled(spec: InputSpec, other: int | None, first: int | None, named: dict[str, int]) -> list[int | None]:
    """``spec``'s dims with what is known; ``None`` where a dynamic dim has no value."""
    shape: list[int | None] = []
    for axis, dim in enumerate(spec.dims):
        if isinstance(dim, int):
            shape.append(dim)
        elif isinstance(dim, str) and dim in named:
            shape.append(named[dim])
        else:
            value = first if axis == 0 else other
            if isinstance(dim, str) and value is not None:
                named[dim] = value
            shape.append(value)
    return shape


def _random_array(dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 8, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(size=shape).astype(dtype)
    raise DataError(f"cannot synthesize inputs of dtype {dtype}")


def synthesize_feeds(
    model: onnx.ModelProto,
    *,
    rng: np.random.Generator,
    shapes: Mapping[str, Sequence[int]] | None = None,
    fill: tuple[int, int] | None = None,
    batch: int | None = DEFAULT_BATCH,
) -> dict[str, np.ndarray]:
    """Random inputs of the shapes :func:`feed_shapes` gives (a dynamic batch dim is ``batch``,
    1 by default; ``batch=None`` makes it an error like any other unset dim).

    Floats are standard normal, integers in ``[0, 8)``, booleans uniform.

    Raises:
        UsageError: a ``shapes`` dim is below 1.
        DataError: a ``shapes`` entry does not fit, or a dtype cannot be made up.
        DynamicDimsError: dynamic dims other than the batch have no value (all are named).
    """
    resolved, _ = feed_shapes(model, shapes=shapes, fill=fill, batch=batch)
    return {spec.name: _random_array(spec.dtype, resolved[spec.name], rng) for spec in input_specs(model)}


def batch_note(inputs: Sequence[str], batch: int = DEFAULT_BATCH) -> str:
    """``dynamic batch dim set to 1 (input 'x')``: what a report says when the batch was chosen."""
    names = ", ".join(f"'{n}'" for n in inputs)
    return f"dynamic batch dim set to {batch} (input{'s' if len(inputs) > 1 else ''} {names})"


def make_session(
    model: onnx.ModelProto | str,
    *,
    threads: int = 0,
    graph_opt: str = "disable",
    optimized_model_path: str | None = None,
    profile_prefix: str | None = None,
) -> ort.InferenceSession:
    """Build a CPU session; ``threads=0`` lets onnxruntime choose; with ``profile_prefix``,
    onnxruntime's profiler writes there (``session.end_profiling()`` names the file).

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
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
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


#: Values tried for unset dynamic dims when inputs must be made up: batch 1, other dims growing
#: until the model runs (spatial dims often need room for several stride-2 stages).
DIM_FILLS: tuple[tuple[int, int], ...] = ((1, 1), (1, 32), (1, 64), (1, 128), (1, 320))


def runnable_feeds(
    model: onnx.ModelProto,
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    samples: int,
    seed: int = 0,
) -> tuple[list[dict[str, np.ndarray]], str]:
    """Random inputs the model actually runs on, and a note saying how dynamic dims were set.

    A dynamic batch dim (axis 0) not given in ``shapes`` is :data:`DEFAULT_BATCH` and the note
    says so (``random inputs, dynamic batch dim set to 1``). When other dynamic dims are unset,
    the fills of :data:`DIM_FILLS` are tried in order and the first on which onnxruntime runs
    ``model`` is kept. Sample ``i`` is drawn with seed ``seed + i``.

    Raises:
        UsageError: a ``shapes`` dim is below 1.
        DataError: ``shapes`` does not fit the model, or no fill gives inputs the model runs on
            (the message lists the unset dims with a pasteable ``--shape``).
    """
    try:
        resolved, batched = feed_shapes(model, shapes=shapes)
    except DynamicDimsError as err:
        unset = err
    else:
        feeds = [synthesize_feeds(model, rng=np.random.default_rng(seed + i), shapes=resolved) for i in range(samples)]
        return feeds, "random inputs" + (f", dynamic batch dim set to {DEFAULT_BATCH}" if batched else "")
    session = make_session(model, graph_opt="disable")
    problem = ""
    for fill in DIM_FILLS:
        resolved, batched = feed_shapes(model, shapes=shapes, fill=fill)
        feeds = [synthesize_feeds(model, rng=np.random.default_rng(seed + i), shapes=resolved) for i in range(samples)]
        try:
            run_model(session, feeds[0])
        except DataError as err:
            problem = str(err)
            continue
        batch = f", dynamic batch dim set to {fill[0]}" if batched else ""
        return feeds, f"random inputs{batch}, other dynamic dims {fill[1]} (--shape chooses)"
    tried = ", ".join(str(f[1]) for f in DIM_FILLS)
    raise DataError(f"no random inputs found that the model runs on (other dynamic dims tried at {tried}: {problem}); {unset}")
