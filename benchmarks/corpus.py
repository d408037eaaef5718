"""Failure hygiene of the model-writing commands over the ONNX backend-test models.

Run (from the repository root)::

    python -m benchmarks.corpus --sample 150 --seed 0 [--commands simplify,fp16,quantize-dynamic]
        [--timeout 120] [--workers 1] [--fill] [--no-data] [--kinds ...] [--json FILE] [--work DIR]
    python -m benchmarks.corpus --render FILE.json      # the report of a saved run, again

The pool is the backend-test models of the installed ``onnx`` package:

- ``node``: the ~1,900 one-operator tests. The wheel does not ship their files, only the code
  that makes them (``onnx.backend.test.case.node``); they are generated in memory with numpy's
  global seed set to 0 first, so the same onnx version gives the same models and data;
- ``simple``, ``pytorch-converted``, ``pytorch-operator``: the folders shipped in
  ``onnx/backend/test/data`` (``model.onnx``, ``test_data_set_0/input_*.pb``, ``output_*.pb``);
- ``light``: ``data/light/light_*.onnx`` with reference outputs but no inputs; as onnx's runner
  does, each float input gets ``arange(n).reshape(shape) / n`` (unknown dims 1).

``--sample N`` draws N models from the pool in a seeded random order (``random.Random(seed)``
over the sorted ids). Each is kept only when onnxruntime (CPU) loads it and its outputs on the
reference inputs match the reference outputs (``rtol`` 1e-3, ``atol`` 1e-5, or the test's own
looser ones) and every input converts to ``.npz``; the others are dropped and counted by reason.
``--fill`` goes on drawing, in the same order, until N models are kept.

A kept model's reference inputs go into ``ref.npz`` (one sample: every array gets a leading axis
of size 1). Each command then runs as a subprocess of the installed ``onnxslim`` CLI in a fresh
folder holding copies of ``model.onnx`` and ``ref.npz``, with that folder as working directory::

    onnxslim simplify model.onnx -o out.onnx --data ref.npz
    onnxslim fp16 model.onnx -o out.onnx --data ref.npz
    onnxslim quantize model.onnx -o out.onnx --mode dynamic --data ref.npz

(``--no-data`` leaves ``--data`` out, for a baseline; it is left out of a command whose
``--help`` does not offer it, and the report says so.) A run that outlives ``--timeout`` gets
SIGINT, then SIGKILL 20 s later. Each run gets one outcome, the first that applies:

- ``input changed``: the sha256 of ``model.onnx`` or ``ref.npz`` differs after the run;
- ``output left after failure``: non-zero exit (or killed) and ``out.onnx`` or ``out.onnx.data``
  exists (unless killed by SIGKILL, which no program can clean up after: then ``hung``);
- ``temp left``: any other new file in the folder (e.g. ``.onnxslim-*``);
- ``hung``: the timeout;
- ``crashed``: a traceback on stderr, exit 1 without exactly one ``Error:`` line, or an exit
  code other than 0, 1, 2;
- ``usage``: exit 2;
- ``declined``: exit 1 with one ``Error:`` line on stderr and no traceback;
- ``invalid``: exit 0 but no output, or it fails ``onnx.checker`` (full check when the input
  passes it), or onnxruntime cannot load or run it on the reference inputs;
- ``ok``: exit 0 and the output is valid and runs.

Printed: a Markdown table (command x outcome counts), the drop reasons, the decline reasons
grouped (quoted names, paths and numbers normalized away), and every crash, hang, invalid
output and hygiene failure by model. ``--json FILE`` writes every run.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from onnxslim.report import markdown_table

__all__ = [
    "COMMANDS", "KINDS", "OUTCOMES", "Case", "Prepared", "RunFacts", "classify", "collect_pool",
    "draw", "load_case", "main", "normalize_reason", "prepare", "run_command", "sweep",
]

DATA_ROOT = Path(onnx.__file__).parent / "backend" / "test" / "data"
KINDS = ("node", "simple", "pytorch-converted", "pytorch-operator", "light")
#: command key -> onnxslim arguments after ``MODEL -o OUT``
COMMANDS: dict[str, list[str]] = {
    "simplify": ["simplify"],
    "fp16": ["fp16"],
    "quantize-dynamic": ["quantize", "--mode", "dynamic"],
    "fp16-weights-only": ["fp16", "--weights-only"],
    "prune": ["prune", "--ratio", "0.3"],
}
DEFAULT_COMMANDS = ("simplify", "fp16", "quantize-dynamic")
OUTCOMES = ("ok", "declined", "usage", "crashed", "hung", "invalid", "output left after failure",
            "temp left", "input changed")
MODEL_FILE, DATA_FILE, EXPECTED_FILE = "model.onnx", "ref.npz", "expected.npz"
OUT_FILES = ("out.onnx", "out.onnx.data")
RTOL, ATOL = 1e-3, 1e-5
KILL_GRACE_S = 20.0


# --------------------------------------------------------------------------------------------
# The pool


@dataclasses.dataclass
class Case:
    """One backend test: the model, the reference inputs and outputs (``None`` entries: missing)."""

    id: str
    model: onnx.ModelProto
    inputs: list[Any]
    outputs: list[Any]
    rtol: float = RTOL
    atol: float = ATOL


@functools.cache
def _node_cases() -> dict[str, Any]:
    """onnx's node test cases by name, made once per process with numpy's global seed at 0."""
    from onnx.backend.test.case import node

    np.random.seed(0)  # onnx's case code draws from the global generator
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        cases = node.collect_testcases()
    named: dict[str, Any] = {}
    for case in cases:
        name, k = case.name, 1
        while name in named:  # never seen in onnx 1.23, kept unique anyway
            k += 1
            name = f"{case.name}~{k}"
        named[name] = case
    return named


def collect_pool(kinds: Sequence[str] = KINDS) -> list[str]:
    """Sorted ids (``kind/name``) of every backend-test model of the given kinds."""
    ids = []
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
        if kind == "node":
            ids += [f"node/{name}" for name in _node_cases()]
        elif kind == "light":
            ids += [f"light/{p.stem}" for p in (DATA_ROOT / "light").glob("light_*.onnx")]
        else:
            ids += [f"{kind}/{p.name}" for p in (DATA_ROOT / kind).iterdir() if (p / MODEL_FILE).is_file()]
    return sorted(ids)


def draw(pool: Sequence[str], seed: int) -> list[str]:
    """The whole pool in the seeded random order the sample is drawn in."""
    return random.Random(seed).sample(sorted(pool), len(pool))


def _read_proto(path: Path, type_proto: onnx.TypeProto) -> Any:
    data = path.read_bytes()
    if type_proto.HasField("sequence_type"):
        seq = onnx.SequenceProto()
        seq.ParseFromString(data)
        return numpy_helper.to_list(seq)
    if type_proto.HasField("optional_type"):
        opt = onnx.OptionalProto()
        opt.ParseFromString(data)
        return numpy_helper.to_optional(opt)
    if type_proto.HasField("map_type"):
        raise ValueError("map inputs are not supported")
    tensor = onnx.TensorProto()
    tensor.ParseFromString(data)
    return numpy_helper.to_array(tensor)


def _dummy_input(value_info: onnx.ValueInfoProto) -> np.ndarray:
    """What onnx's runner feeds a light model: arange(n)/n in float32, unknown dims 1."""
    tensor = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or tensor.elem_type != onnx.TensorProto.FLOAT:
        raise ValueError(f"input '{value_info.name}' is not float32: onnx's runner feeds light models floats only")
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def load_case(case_id: str) -> Case:
    """The model and the reference inputs/outputs of ``test_data_set_0`` (light: made up)."""
    kind, name = case_id.split("/", 1)
    if kind == "node":
        test = _node_cases()[name]
        inputs, outputs = test.data_sets[0]
        return Case(case_id, test.model, [_as_value(v) for v in inputs], [_as_value(v) for v in outputs],
                    max(RTOL, test.rtol or 0.0), max(ATOL, test.atol or 0.0))
    if kind == "light":
        model = onnx.load(DATA_ROOT / "light" / f"{name}.onnx")
        initializers = {t.name for t in model.graph.initializer}
        inputs = [_dummy_input(v) for v in model.graph.input if v.name not in initializers]
        outputs = []
        for i, out in enumerate(model.graph.output):
            path = DATA_ROOT / "light" / f"{name}_output_{i}.pb"
            outputs.append(_read_proto(path, out.type) if path.exists() else None)
        return Case(case_id, model, inputs, outputs)
    folder = DATA_ROOT / kind / name
    model = onnx.load(folder / MODEL_FILE)
    data = folder / "test_data_set_0"
    inputs = [_read_proto(p, model.graph.input[i].type)
              for i, p in enumerate(sorted(data.glob("input_*.pb"), key=_index))]
    outputs = [_read_proto(p, model.graph.output[i].type)
               for i, p in enumerate(sorted(data.glob("output_*.pb"), key=_index))]
    return Case(case_id, model, inputs, outputs)


def _as_value(value: Any) -> Any:
    """Node-case data as onnxruntime takes it: TensorProto and numpy scalars become arrays."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, np.generic):
        return np.asarray(value)
    if isinstance(value, list):
        return [_as_value(v) for v in value]
    return value


def _index(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


# --------------------------------------------------------------------------------------------
# Keeping a model: onnxruntime runs it and agrees with the reference; its inputs fit a .npz


@dataclasses.dataclass
class Prepared:
    """A kept model in its own folder: ``model.onnx``, ``ref.npz`` (absent without inputs)."""

    id: str
    folder: Path
    inputs: dict[str, str]  # input name -> "float32[1x3x4]" as stored (with the sample axis)
    full_check: bool  # the input passes onnx.checker's full check, so its outputs must too

    @property
    def has_data(self) -> bool:
        return (self.folder / DATA_FILE).exists()


def _feed_names(model: onnx.ModelProto, count: int) -> list[str]:
    """Graph inputs fed by the test data: input_i is graph.input[i] (as onnx's runner maps)."""
    return [v.name for v in model.graph.input[:count]]


def _session(model: onnx.ModelProto | str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 4  # failures raise; no log lines on stderr
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _same(got: Any, want: Any, rtol: float, atol: float) -> bool:
    if want is None or got is None:
        return want is None and got is None
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            _same(g, w, rtol, atol) for g, w in zip(got, want))
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return False
    if want.dtype.kind in "fc" or want.dtype.name in {"bfloat16"} or want.dtype.name.startswith("float8"):
        try:
            return bool(np.allclose(got.astype(np.complex128), want.astype(np.complex128), rtol=rtol, atol=atol,
                                    equal_nan=True))
        except (TypeError, ValueError):
            return False
    if want.dtype.kind in "OSU":
        return [str(x) for x in got.ravel()] == [str(x) for x in want.ravel()]
    return bool(np.array_equal(got, want))


def _npz_array(name: str, value: Any) -> np.ndarray:
    """The value with a leading sample axis of size 1, or ValueError naming why it cannot be."""
    if name == "labels":
        raise ValueError("input 'labels' is the reserved key of .npz data")
    if value is None or isinstance(value, list):
        raise ValueError(f"input '{name}' is a {'sequence' if isinstance(value, list) else 'missing optional'}")
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise ValueError(f"input '{name}' is an optional or other non-tensor ({type(value).__name__})")
    if value.dtype.kind not in "biufc":
        raise ValueError(f"input '{name}' has dtype {value.dtype} (no .npz form readable without pickle)")
    if value.dtype.kind in "f" and value.dtype.name not in {"float16", "float32", "float64"}:
        raise ValueError(f"input '{name}' has dtype {value.dtype.name} (not a numpy dtype)")
    return value[np.newaxis]


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:400]


def prepare(case: Case, folder: Path) -> Prepared | tuple[str, str]:
    """Write a kept model into ``folder``, or return ``(reason, detail)`` for a dropped one."""
    model = case.model
    initializers = {t.name for t in model.graph.initializer}
    if not case.outputs or any(o is None for o in case.outputs):
        return "no reference outputs", ""
    names = _feed_names(model, len(case.inputs)) if not case.id.startswith("light/") else [
        v.name for v in model.graph.input if v.name not in initializers]
    feeds = dict(zip(names, case.inputs))
    try:
        session = _session(model)
    except Exception as err:  # noqa: BLE001 - the reason is the outcome
        return "onnxruntime cannot load it", _first_line(err)
    try:
        got = session.run(None, feeds)
    except Exception as err:  # noqa: BLE001
        return "onnxruntime cannot run it", _first_line(err)
    if len(got) != len(case.outputs) or not all(
            _same(g, w, case.rtol, case.atol) for g, w in zip(got, case.outputs)):
        return "outputs differ from the reference", ""
    try:
        arrays = {n: _npz_array(n, v) for n, v in feeds.items()}
    except ValueError as err:
        return "input not convertible to .npz", str(err)
    try:
        onnx.checker.check_model(model, full_check=True)
        full = True
    except Exception:  # noqa: BLE001 - then outputs get the plain check only
        full = False
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(model.SerializeToString())
    if arrays:
        np.savez(folder / DATA_FILE, **arrays)
        with np.load(folder / DATA_FILE) as check:
            if sorted(check.files) != sorted(arrays):
                return "input not convertible to .npz", f"input names do not survive as .npz keys: {sorted(arrays)}"
    expected = {o.name: np.asarray(v) for o, v in zip(session.get_outputs(), got)
                if isinstance(v, np.ndarray) and v.dtype.kind == "f"}
    if expected:
        np.savez(folder / EXPECTED_FILE, **expected)
    shown = {n: f"{a.dtype}[{'x'.join(map(str, a.shape))}]" for n, a in arrays.items()}
    return Prepared(case.id, folder, shown, full)


# --------------------------------------------------------------------------------------------
# One run and its outcome


@dataclasses.dataclass
class RunFacts:
    """What one run left behind; :func:`classify` turns it into an outcome."""

    exit_code: int | None  # None: timed out
    stderr: str
    files_after: frozenset[str]  # names in the run folder after the run
    input_changed: bool = False
    killed: bool = False  # SIGKILL was needed after the timeout
    check_error: str | None = None  # output check (checker, onnxruntime); None: passed or not run


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def classify(facts: RunFacts, *, inputs: frozenset[str] = frozenset({MODEL_FILE, DATA_FILE})) -> str:
    """The outcome of one run (see the module docstring for the order)."""
    if facts.input_changed:
        return "input changed"
    if facts.killed:
        return "hung"
    failed = facts.exit_code != 0
    outputs = facts.files_after & set(OUT_FILES)
    if failed and outputs:
        return "output left after failure"
    if facts.files_after - inputs - set(OUT_FILES):
        return "temp left"
    if facts.exit_code is None:
        return "hung"
    if "Traceback (most recent call last)" in facts.stderr:
        return "crashed"
    if facts.exit_code == 0:
        return "ok" if OUT_FILES[0] in outputs and facts.check_error is None else "invalid"
    if facts.exit_code == 2:
        return "usage"
    if facts.exit_code == 1 and len(_error_lines(facts.stderr)) == 1:
        return "declined"
    return "crashed"


_ORT = re.compile(r"\[ONNXRuntimeError\].*?running (\w+) node.*?(?=; give |$)")  # to onnxslim's hint
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")
_PATH = re.compile(r"(?<![\w.])/(?:[\w.\-]+/)*[\w.\-]+")
_SHAPE = re.compile(r"(?<![\w.])(?:\d+|\?)(?:x(?:\d+|\?))+(?![\w])")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])")


def normalize_reason(line: str) -> str:
    """An ``Error:`` line without its specifics, so that alike reasons group.

    onnxruntime's run failures keep only the op that failed; quoted names, paths, shapes and
    numbers become '…', <path>, NxN and N.
    """
    text = line.removeprefix("Error:").strip()
    text = _ORT.sub(lambda m: f"[ONNXRuntimeError] running {m.group(1)} node: …", text)
    text = _QUOTED.sub("'…'", text)
    text = _PATH.sub("<path>", text)
    text = _SHAPE.sub("NxN", text)
    text = _NUMBER.sub("N", text)
    return text[:300]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def _onnxslim_executable() -> str:
    beside = Path(sys.executable).with_name("onnxslim")
    found = str(beside) if beside.exists() else shutil.which("onnxslim")
    if not found:
        raise SystemExit("the onnxslim CLI is not installed (pip install -e .)")
    return found


@functools.cache
def _offers_data(executable: str, subcommand: str) -> bool:
    helped = subprocess.run([executable, subcommand, "--help"], capture_output=True, text=True, timeout=120, check=False)
    return "--data" in helped.stdout


def _run(argv: list[str], cwd: Path, timeout: float) -> tuple[int | None, str, str, bool]:
    """Exit code (None on timeout), stdout, stderr, and whether SIGKILL was needed."""
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C: the tool should clean up and exit 130
        try:
            out, err = proc.communicate(timeout=KILL_GRACE_S)
            return None, out, err, False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return None, out, err, True


def _check_output(prepared: Prepared, out: Path, timeout: float) -> dict[str, Any]:
    """Check ``out`` in a child process (an onnxruntime crash must not end the sweep)."""
    argv = [sys.executable, "-m", "benchmarks.corpus", "_check", str(out), str(prepared.folder)]
    if prepared.full_check:
        argv.append("--full")
    code, stdout, stderr, _ = _run(argv, REPO, timeout)
    if code == 0 and stdout.strip():
        return json.loads(stdout.strip().splitlines()[-1])
    tail = stderr.strip().splitlines()[-1:] or [""]
    return {"error": f"output check {'timed out' if code is None else f'died (exit {code})'}: {tail[0][:300]}"}


def check_output_main(out: str, folder: str, full: bool) -> dict[str, Any]:
    """onnx.checker, then onnxruntime on the reference inputs; the largest relative deviation."""
    result: dict[str, Any] = {"error": None, "deviation": None}
    try:
        onnx.checker.check_model(out, full_check=full)
    except Exception as err:  # noqa: BLE001
        result["error"] = f"onnx.checker: {_first_line(err)}"
        return result
    data, expected = Path(folder) / DATA_FILE, Path(folder) / EXPECTED_FILE
    feeds = {}
    if data.exists():
        with np.load(data) as z:
            feeds = {k: np.asarray(z[k][0]) for k in z.files}  # a scalar input stays a 0-d array
    try:
        session = _session(out)
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    except Exception as err:  # noqa: BLE001
        result["error"] = f"onnxruntime: {_first_line(err)}"
        return result
    if expected.exists():
        worst = 0.0
        with np.load(expected) as z:
            for name in z.files:
                ref, val = z[name].astype(np.float64), got.get(name)
                if not isinstance(val, np.ndarray) or val.shape != ref.shape:
                    worst = float("inf")
                    continue
                val = val.astype(np.float64)
                with np.errstate(invalid="ignore"):
                    diff = np.where(np.isnan(val) & np.isnan(ref), 0.0, np.abs(val - ref))
                    diff = np.where(np.isinf(val) & (val == ref), 0.0, diff)
                scale = float(np.max(np.abs(ref[np.isfinite(ref)]), initial=0.0)) or 1.0
                worst = max(worst, float("inf") if np.isnan(diff).any() else float(np.max(diff, initial=0.0)) / scale)
        result["deviation"] = worst
    return result


def run_command(prepared: Prepared, command: str, root: Path, *, timeout: float, use_data: bool,
                executable: str, keep: bool = False) -> dict[str, Any]:
    """Run one command on one kept model in a fresh folder under ``root``; the JSON record."""
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{command}-", dir=root))
    shutil.copy(prepared.folder / MODEL_FILE, folder / MODEL_FILE)
    data = prepared.has_data
    if data:
        shutil.copy(prepared.folder / DATA_FILE, folder / DATA_FILE)
    before = {name: _sha256(folder / name) for name in (MODEL_FILE, DATA_FILE)}
    args = COMMANDS[command]
    pass_data = use_data and data and _offers_data(executable, args[0])
    argv = [executable, args[0], MODEL_FILE, "-o", OUT_FILES[0], *args[1:]]
    if pass_data:
        argv += ["--data", DATA_FILE]
    started = time.perf_counter()
    code, _stdout, stderr, killed = _run(argv, folder, timeout)
    duration = time.perf_counter() - started
    files = frozenset(p.name for p in folder.iterdir())
    changed = any(_sha256(folder / name) != digest for name, digest in before.items())
    check = None
    if code == 0 and (folder / OUT_FILES[0]).exists() and not changed:
        check = _check_output(prepared, folder / OUT_FILES[0], timeout)
    facts = RunFacts(code, stderr, files, changed, killed, (check or {}).get("error"))
    outcome = classify(facts)
    errors = _error_lines(stderr)
    record = {
        "model": prepared.id, "command": command, "argv": ["onnxslim", *argv[1:]], "data": pass_data,
        "exit_code": code, "killed": killed, "outcome": outcome, "duration_s": round(duration, 2),
        "error": errors[-1] if errors else None,
        "files_left": sorted(files - {MODEL_FILE, DATA_FILE}),
        "check": check,
    }
    if outcome not in {"ok", "declined", "usage"}:
        record["stderr_tail"] = stderr.strip().splitlines()[-15:]
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return record


# --------------------------------------------------------------------------------------------
# The sweep and its report


def sweep(*, sample: int, seed: int, commands: Sequence[str], timeout: float, workers: int, work: Path,
          kinds: Sequence[str] = KINDS, fill: bool = False, use_data: bool = True, keep: bool = False,
          log=None) -> dict[str, Any]:
    """Draw, keep, run every command on every kept model; everything as one JSON-able dict."""
    if not 1 <= workers <= 2:
        raise ValueError("workers must be 1 or 2 (the machines have 2 cores)")
    unknown = [c for c in commands if c not in COMMANDS]
    if unknown:
        raise ValueError(f"unknown command {unknown[0]!r} (commands: {', '.join(COMMANDS)})")
    log = log or (lambda text: None)
    executable = _onnxslim_executable()
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    head, dirty = _git("rev-parse", "HEAD"), _git("status", "--porcelain", "--untracked-files=no")
    pool = collect_pool(kinds)
    order = draw(pool, seed)
    kept: list[Prepared] = []
    dropped: list[dict[str, str]] = []
    drawn = 0
    for case_id in order:
        if len(kept) >= sample if fill else drawn >= sample:
            break
        drawn += 1
        try:
            case = load_case(case_id)
        except Exception as err:  # noqa: BLE001 - a test the runner cannot read is dropped, not fatal
            dropped.append({"model": case_id, "reason": "cannot read the test data", "detail": _first_line(err)})
            continue
        result = prepare(case, work / "models" / f"{drawn:04d}")
        if isinstance(result, Prepared):
            kept.append(result)
        else:
            dropped.append({"model": case_id, "reason": result[0], "detail": result[1]})
    log(f"drawn {drawn}, kept {len(kept)}, dropped {len(dropped)}; {len(kept) * len(commands)} runs")
    kept.sort(key=lambda p: p.id)
    runs_root = work / "runs"
    runs_root.mkdir(parents=True, exist_ok=True)
    jobs = [(p, c) for p in kept for c in commands]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as executor:
        futures = [executor.submit(run_command, p, c, runs_root, timeout=timeout, use_data=use_data,
                                   executable=executable, keep=keep) for p, c in jobs]
        for i, future in enumerate(futures, 1):
            record = future.result()
            log(f"[{i}/{len(futures)}] {record['command']} {record['model']}: {record['outcome']}")
    runs = [f.result() for f in futures]
    data_flags = {c: _offers_data(executable, COMMANDS[c][0]) for c in commands}
    return {
        "date": started, "git_head": head, "git_dirty_files": len(dirty.splitlines()),  # at the start
        "onnx": onnx.__version__, "onnxruntime": _ort_version(),
        "seed": seed, "sample": sample, "fill": fill, "kinds": list(kinds), "commands": list(commands),
        "timeout_s": timeout, "use_data": use_data, "cli_offers_data": data_flags,
        "pool": dict(collections.Counter(i.split("/", 1)[0] for i in pool)),
        "drawn": drawn, "kept": [dataclasses.asdict(p) | {"folder": None} for p in kept],
        "dropped": dropped, "runs": runs,
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def outcome_table(runs: Sequence[dict[str, Any]], commands: Sequence[str]) -> str:
    """Command x outcome counts (every outcome a column, so a zero is a measured zero)."""
    rows = []
    for command in commands:
        counts = collections.Counter(r["outcome"] for r in runs if r["command"] == command)
        rows.append([command, sum(counts.values()), *(counts.get(o, 0) for o in OUTCOMES)])
    return markdown_table(["command", "runs", *OUTCOMES], rows)


def render(report: dict[str, Any]) -> str:
    """The Markdown report: header, outcome table, drops, grouped declines, every other failure."""
    runs, commands = report["runs"], report["commands"]
    data = "with --data ref.npz" if report["use_data"] else "without --data"
    missing = [c for c, offered in report["cli_offers_data"].items() if not offered]
    dirty = f" + {report['git_dirty_files']} modified files" if report["git_dirty_files"] else ""
    lines = [
        (f"corpus: {report['drawn']} of {sum(report['pool'].values())} backend-test models drawn "
         f"(seed {report['seed']}{', filled' if report['fill'] else ''}), {len(report['kept'])} kept, "
         f"{len(report['dropped'])} dropped; {data}"
         f"{f' (not offered by: {missing})' if missing and report['use_data'] else ''}; "
         f"timeout {report['timeout_s']:g} s"),
        (f"onnx {report['onnx']}, onnxruntime {report['onnxruntime']}, git {report['git_head'][:10]}{dirty}, "
         f"{report['date']}"),
        "",
        outcome_table(runs, commands),
        "",
        "Kept by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(collections.Counter(
            p["id"].split("/", 1)[0] for p in report["kept"]).items())),
        "Dropped: " + (", ".join(f"{n} {reason}" for reason, n in collections.Counter(
            d["reason"] for d in report["dropped"]).most_common()) or "none"),
    ]
    for command in commands:
        mine = [r for r in runs if r["command"] == command]
        groups: dict[str, list[str]] = collections.defaultdict(list)
        for r in mine:
            if r["outcome"] == "declined":
                groups[normalize_reason(r["error"] or "")].append(r["model"])
        if groups:
            lines += ["", f"{command}: declined {sum(map(len, groups.values()))}", ""]
            for reason, models in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                lines.append(f"- {len(models)} × {reason} (e.g. {models[0]})")
        others = [r for r in mine if r["outcome"] not in {"ok", "declined"}]
        if others:
            lines += ["", f"{command}: other than ok or declined", ""]
            for r in others:
                why = r["error"] or ((r.get("check") or {}).get("error")) or " ".join(r.get("stderr_tail", [])[-1:])
                left = f" left {r['files_left']}" if r["files_left"] and r["outcome"] != "ok" else ""
                lines.append(f"- {r['outcome']}: {r['model']} (exit {r['exit_code']}){left}: {(why or '')[:300]}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_check"]:  # internal: check one output in this child process
        parser = argparse.ArgumentParser(prog="benchmarks.corpus _check")
        parser.add_argument("out")
        parser.add_argument("folder")
        parser.add_argument("--full", action="store_true")
        args = parser.parse_args(argv[1:])
        print(json.dumps(check_output_main(args.out, args.folder, args.full)))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=150, help="models to draw (default 150)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    parser.add_argument("--fill", action="store_true", help="draw on until --sample models are kept")
    parser.add_argument("--commands", default=",".join(DEFAULT_COMMANDS),
                        help=f"comma-separated, of {', '.join(COMMANDS)} (default: %(default)s)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated pool kinds (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run (default 120)")
    parser.add_argument("--workers", type=int, default=1, choices=(1, 2), help="runs at a time (default 1)")
    parser.add_argument("--no-data", dest="use_data", action="store_false", help="do not pass --data ref.npz")
    parser.add_argument("--json", type=Path, help="write every run as JSON to this file")
    parser.add_argument("--work", type=Path, help="keep the models and run folders here (default: a temp folder)")
    parser.add_argument("--render", type=Path, metavar="FILE.json", help="print the report of a saved --json; run nothing")
    args = parser.parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    commands = [c for c in args.commands.split(",") if c]
    kinds = [k for k in args.kinds.split(",") if k]

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        if args.work:
            work = args.work
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="onnxslim-corpus-")))
        try:
            report = sweep(sample=args.sample, seed=args.seed, commands=commands, timeout=args.timeout,
                           workers=args.workers, work=work, kinds=kinds, fill=args.fill, use_data=args.use_data,
                           keep=args.work is not None, log=log)
        except ValueError as err:
            parser.error(str(err))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
