"""`onnxslim fp16` (full and weights-only) next to onnxconverter-common, on LeNet-5 and the zoo.

Run (from the repository root): ``python -m benchmarks.fp16 [NAME ...] [--runs N]`` — needs the
bench extra (``onnxconverter-common``; without it the peer's rows say so). Models are fetched
from the zoo on first use; task data is generated once into ``.cache/tasks``.

For every model, one row per variant — fp32 (the reference), ours full (``Fp16Options()``),
ours weights-only, and onnxconverter-common's ``convert_float_to_float16(model,
keep_io_types=True)`` with its defaults:

- **valid**: ``onnx.checker`` full check passes, onnxruntime loads it and runs it;
- **task metric**: the headline of the model's evaluation task (:mod:`benchmarks.tasks`, real
  data, through :func:`onnxslim.validate.validate`; graph optimizations on, as deployed), and its
  change against fp32;
- **cosine**: the smallest cosine similarity over the float outputs against fp32, on one fixed
  realistic input (OCR images in [-1, 1], YOLO images in [0, 1], 576 audio samples for Silero);
- **Casts**: Cast nodes in all graphs, and how many were added;
- **size** of the file, **p50 ×**: median latency over fp32's (``onnxslim.bench``, 1 thread,
  graph optimizations on, runs interleaved), and **load**: session creation in its own process.

``silero-vad in If`` is Silero wrapped as the then-branch of an If (validity and cosine only).

``--corpus`` instead converts every model of the ONNX backend test data shipped in the ``onnx``
wheel (``simple``, ``pytorch-converted``, ``pytorch-operator``: the models onnxruntime runs in
float32) with both converters and counts crashes, invalid outputs (checker or onnxruntime
refusal) and results beyond the fp16 tolerance (``|Δ| > 1e-3 + 1e-2·max|ref|``) on their own
test inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.run_tasks import DEFAULT_DATA_DIR, evaluate, task_data  # noqa: E402
from benchmarks.tasks import TaskUnavailable, load_task  # noqa: E402
from onnxslim import zoo  # noqa: E402
from onnxslim.bench import BenchOptions, bench  # noqa: E402
from onnxslim.report import human_bytes, markdown_table  # noqa: E402
from onnxslim.runtime import make_session, run_model  # noqa: E402
from passes._base import RunContext  # noqa: E402
from passes.fp16 import ConvertFloat16Pass, Fp16Options  # noqa: E402

LENET = REPO / "models" / "lenet5_digits.onnx"
#: model name -> (evaluation task, bench input shapes)
MODELS = {
    "lenet5-digits": ("digits", {"input": (1, 1, 32, 32)}),
    "ppocr-det": ("ocr-det", {"x": (1, 3, 320, 320)}),
    "ppocr-rec": ("ocr-rec", {"x": (1, 3, 48, 320)}),
    "ppocr-cls": ("ocr-cls", {"x": (1, 3, 48, 192)}),
    "yolov8n-nudenet": ("detect", {"images": (1, 3, 320, 320)}),
    "silero-vad": ("vad", {"input": (1, 576), "state": (2, 1, 128)}),
    "silero-vad in If": (None, {}),
}
VARIANTS = ("fp32", "ours full", "ours weights-only", "onnxconverter-common")


@dataclasses.dataclass
class Row:
    """One variant of one model."""

    model: str
    variant: str
    path: Path | None
    valid: str = "-"
    metric: str = "-"
    delta: str = "-"
    cosine: float | None = None
    casts: str = "-"
    size: int | None = None
    p50_ratio: float | None = None
    load_s: float | None = None
    runs: bool = False  # onnxruntime ran it (even if the checker refused it)


def _feeds(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if name == "lenet5-digits":
        return {"input": np.load(LENET.with_name("lenet5_digits_test.npz"))["input"][:16]}
    if name.startswith("silero"):
        feeds = {"input": (0.1 * rng.standard_normal((1, 576))).astype(np.float32),
                 "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
        return feeds | ({"run": np.array(True)} if "If" in name else {})
    (input_name, shape), = MODELS[name][1].items()
    low = 0.0 if name.startswith("yolo") else -1.0  # YOLO images in [0, 1], OCR ones normalized to [-1, 1]
    return {input_name: rng.uniform(low, 1, shape).astype(np.float32)}


def _wrap_in_if(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``'s graph as the then-branch of an If on a new bool input ``run`` (else: zeros)."""
    helper, graph = onnx.helper, model.graph
    then_g = helper.make_graph(list(graph.node), "then", [], list(graph.output), list(graph.initializer))
    zeros, zero_outs = [], []
    for k, out in enumerate(graph.output):
        shape = [d.dim_value or 1 for d in out.type.tensor_type.shape.dim]
        tensor = onnx.numpy_helper.from_array(np.zeros(shape, np.float32))
        zeros.append(helper.make_node("Constant", [], [f"zero_{k}"], value=tensor))
        zero_outs.append(helper.make_tensor_value_info(f"zero_{k}", onnx.TensorProto.FLOAT, shape))
    node = helper.make_node("If", ["run"], [o.name + "_wrapped" for o in graph.output],
                            then_branch=then_g, else_branch=helper.make_graph(zeros, "else", [], zero_outs))
    outputs = [helper.make_tensor_value_info(o.name + "_wrapped", onnx.TensorProto.FLOAT,
                                             [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim])
               for o in graph.output]
    inputs = [helper.make_tensor_value_info("run", onnx.TensorProto.BOOL, []), *graph.input]
    outer = helper.make_graph([node], "wrapped", inputs, outputs)
    return helper.make_model(outer, opset_imports=model.opset_import, ir_version=model.ir_version)


def _source(name: str) -> onnx.ModelProto:
    if name == "lenet5-digits":
        return onnx.load(LENET)
    if name == "silero-vad in If":
        return _wrap_in_if(onnx.load(zoo.fetch("silero-vad")))
    return onnx.load(zoo.fetch(name))


def _peer(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxconverter_common import float16  # the bench extra

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(model, keep_io_types=True)


def _variants(model: onnx.ModelProto) -> dict[str, onnx.ModelProto | str]:
    """Each variant's model, or why it could not be made."""
    out: dict[str, onnx.ModelProto | str] = {"fp32": model}
    for label, options in (("ours full", Fp16Options()), ("ours weights-only", Fp16Options(weights_only=True))):
        out[label] = ConvertFloat16Pass(options).apply(model, RunContext()).model
    try:
        out["onnxconverter-common"] = _peer(model)
    except ImportError:
        out["onnxconverter-common"] = "not installed (pip install onnxconverter-common)"
    except Exception as err:  # noqa: BLE001 - the peer's crash is a result
        out["onnxconverter-common"] = f"crash: {type(err).__name__}"
    return out


def _cast_count(model: onnx.ModelProto) -> int:
    def count(graph: onnx.GraphProto) -> int:
        inner = sum(count(a.g) for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)
        return inner + sum(n.op_type == "Cast" for n in graph.node)

    return count(model.graph)


def _validity(path: Path, feeds: dict[str, np.ndarray], notes: list[str]) -> tuple[str, dict[str, np.ndarray] | None]:
    """``yes`` and the outputs, or ``no (…)`` with a footnote giving the first error line."""
    problems = []
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:  # noqa: BLE001 - the reason is the result
        problems.append(("checker", str(err).strip().splitlines()[0]))
    try:
        outputs = run_model(make_session(str(path)), feeds)
    except Exception as err:  # noqa: BLE001
        problems.append(("onnxruntime", str(err).strip().splitlines()[0]))
        outputs = None
    if not problems:
        return "yes", outputs
    for where, text in problems:
        notes.append(f"{path.stem}: {where}: {text}")
    refs = ", ".join(f"{where} [{len(notes) - len(problems) + i + 1}]" for i, (where, _) in enumerate(problems))
    return f"no: {refs}", outputs


def _min_cosine(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    values = []
    for name, r in ref.items():
        if np.issubdtype(r.dtype, np.floating):
            a, b = r.astype(np.float64).ravel(), got[name].astype(np.float64).ravel()
            denom = np.linalg.norm(a) * np.linalg.norm(b)
            values.append(float(a @ b / denom) if denom else float(np.array_equal(a, b)))
    return min(values)


def measure_model(name: str, workdir: Path, notes: list[str], *, runs: int) -> list[Row]:
    """The rows of model ``name``: validity, cosine, Casts and size, then metric and latency."""
    model, feeds = _source(name), _feeds(name)
    original_casts = _cast_count(model)
    rows, reference = [], None
    for label, variant in _variants(model).items():
        if isinstance(variant, str):
            rows.append(Row(name, label, None, valid=f"no: {variant}"))
            continue
        path = workdir / f"{name.replace(' ', '_')}.{label.replace(' ', '_')}.onnx"
        onnx.save(variant, path)
        row = Row(name, label, path, size=path.stat().st_size)
        count = _cast_count(variant)
        row.casts = f"{count} (+{count - original_casts})"
        row.valid, outputs = _validity(path, feeds, notes)
        row.runs = outputs is not None
        if label == "fp32":
            reference = outputs
        elif outputs is not None and reference is not None:
            row.cosine = _min_cosine(reference, outputs)
        rows.append(row)
    _task_metrics(name, rows)
    _latency(name, rows, runs=runs)
    return rows


def _task_metrics(name: str, rows: list[Row]) -> None:
    task = MODELS[name][0]
    usable = [r for r in rows if r.runs]
    if task is None or len(usable) < 2:
        return
    try:
        module = load_task(task)
        data = task_data(task, module, data_dir=DEFAULT_DATA_DIR, seed=0, n_eval=None, n_calib=None, regenerate=False)
    except TaskUnavailable as err:
        for row in usable:
            row.metric = f"skipped: {err}"
        return
    report = evaluate(task, [(r.variant, r.path) for r in usable], data)
    for row, result in zip(usable, report.rows):
        value = result.metrics[report.headline]
        row.metric = f"{report.headline} {value:.4f}"
        row.delta = f"{0.0 - result.drop:+.4f}" if row.variant != "fp32" else ""


def _latency(name: str, rows: list[Row], *, runs: int) -> None:
    usable = [r for r in rows if r.runs]
    shapes = MODELS[name][1]
    if not shapes or len(usable) < 2:
        return
    options = BenchOptions(runs=runs, warmup=max(5, runs // 10), threads=(1,), shapes=shapes)
    report = bench([str(r.path) for r in usable], options)
    base = report.rows[0].p50_ms
    for row, result in zip(usable, report.rows):
        row.p50_ratio = result.p50_ms / base if result.p50_ms and base else None
        row.load_s = result.session_create_s


def _corpus_cases() -> list[tuple[str, Path, list[Path]]]:
    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    cases = []
    for kind in ("simple", "pytorch-converted", "pytorch-operator"):
        for case in sorted((root / kind).iterdir()):
            inputs = sorted((case / "test_data_set_0").glob("input_*.pb"))
            if (case / "model.onnx").exists() and inputs:
                cases.append((f"{kind}/{case.name}", case / "model.onnx", inputs))
    return cases


def _corpus_outcome(convert, model: onnx.ModelProto, feeds: dict, reference: dict) -> str:
    from onnxslim.validate import tolerance_violation
    from passes.fp16 import FP16_TOLERANCE

    try:
        converted = convert(model)
    except Exception:  # noqa: BLE001 - a crash is the outcome
        return "crash"
    try:
        onnx.checker.check_model(converted, full_check=True)
        outputs = run_model(make_session(converted), feeds)
    except Exception:  # noqa: BLE001
        return "invalid"
    return "wrong" if tolerance_violation(reference, outputs, FP16_TOLERANCE) else "ok"


def corpus() -> str:
    """Outcome counts of both converters over the ONNX backend test models (see the docstring)."""
    converters = {
        "ours full": lambda m: ConvertFloat16Pass().apply(m, RunContext()).model,
        "onnxconverter-common": _peer,
    }
    counts = {label: dict.fromkeys(("ok", "crash", "invalid", "wrong"), 0) for label in converters}
    ran = 0
    for _name, path, inputs in _corpus_cases():
        model = onnx.load(path)
        try:
            names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
            feeds = {n: onnx.numpy_helper.to_array(onnx.load_tensor(str(p))) for n, p in zip(names, inputs)}
            reference = run_model(make_session(model), feeds)
        except Exception:  # noqa: BLE001 - not a float32 model onnxruntime runs: not counted
            continue
        ran += 1
        for label, convert in converters.items():
            counts[label][_corpus_outcome(convert, model, feeds, reference)] += 1
    rows = [[label, ran, *c.values()] for label, c in counts.items()]
    return markdown_table(["converter", "models", "ok", "crash", "invalid", "beyond fp16 tolerance"], rows)


def render(rows: list[Row]) -> str:
    """The side-by-side table."""
    headers = ["model", "variant", "valid", "task metric", "Δ vs fp32", "cosine (min)", "Casts (added)",
               "size", "p50 × fp32", "load s"]
    body = [[r.model, r.variant, r.valid, r.metric, r.delta,
             "-" if r.cosine is None else f"{r.cosine:.6f}", r.casts,
             "-" if r.size is None else human_bytes(r.size),
             "-" if r.p50_ratio is None else f"{r.p50_ratio:.2f}",
             "-" if r.load_s is None else f"{r.load_s:.3f}"] for r in rows]
    return markdown_table(headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(MODELS), help=f"models (default: all of {list(MODELS)})")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per variant (default 100)")
    parser.add_argument("--corpus", action="store_true", help="count outcomes over the ONNX backend test models")
    args = parser.parse_args()
    if args.corpus:
        print(corpus())
        return
    started, rows, notes = time.perf_counter(), [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names:
            print(f"{name}…", file=sys.stderr)
            rows += measure_model(name, Path(tmp), notes, runs=args.runs)
    print(render(rows))
    print("\n".join(["", *(f"[{i}] {text}" for i, text in enumerate(notes, 1))]) if notes else "")
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
