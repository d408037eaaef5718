"""int8 side by side: fp32, onnxruntime's quantizer, and ours, on LeNet-5 and the zoo.

Run (from the repository root)::

    python -m benchmarks.quantize [NAME ...] [--runs N]     # the main table (one child per model)
    python -m benchmarks.quantize --forms                   # which dynamic form ORT runs fastest
    python -m benchmarks.quantize --calib-memory [--samples 512]   # calibration peak RSS

For every model (``lenet5-digits``/digits, ``ppocr-rec``/ocr-rec, ``ppocr-cls``/ocr-cls,
``ppocr-det``/ocr-det, ``yolov8n-nudenet``/detect, ``silero-vad``/vad) one row per variant:

- **fp32**: the model as shipped;
- **ORT static**: ``onnxruntime.quantization.quantize_static(fp32, out, reader,
  quant_format=QDQ, per_channel=True, calibrate_method=MinMax)``, u8 activations / s8 weights
  (its defaults), the reader feeding the task's calibration split one sample at a time. No
  ``quant_pre_process``: ``quantize_static`` does not run it itself, and the plain call is
  what its docstring example shows; a failure is recorded as ``failed: reason``;
- **ORT dynamic**: ``quantize_dynamic(fp32, out)`` with its defaults (s8 weights, per tensor,
  ``MatMulConstBOnly``); Conv becomes u8×s8 ``ConvInteger``, which onnxruntime cannot load;
- **ours static**: ``passes.quantize.QuantizeStaticPass()`` with a MinMax
  ``calibration.collect.collect`` table of the calibration split in the ``RunContext``
  (skipped with a note while that pass is not in the tree);
- **ours dynamic**: ``QuantizeDynamicPass()`` (per-channel s8 weights, MatMul/Gemm).

Columns: the task's headline metric (:mod:`benchmarks.tasks`, graph optimizations on) and its
drop against fp32; p50 latency at 1 thread (``onnxslim.bench.bench`` with every variant of the
model in ONE call, so runs are interleaved) and the speed-up over fp32; file size; and what
onnxruntime fused (:func:`onnxslim.fusion.fusion_report`: int8 compute nodes of all compute
nodes). Each model runs in its own child process with ``RLIMIT_AS`` of 16 GiB.

``--calib-memory`` runs ``calibration.collect.collect(ppocr-rec, 512 samples, method="minmax")``
in a child process and reports its peak RSS (``VmHWM``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.run_tasks import DEFAULT_DATA_DIR, evaluate, task_data  # noqa: E402
from benchmarks.tasks import TaskUnavailable, load_task  # noqa: E402
from calibration.datasets import NpzDataset, input_specs  # noqa: E402
from onnxslim import zoo  # noqa: E402
from onnxslim.bench import BenchOptions, bench  # noqa: E402
from onnxslim.cpu import detect_cpu  # noqa: E402
from onnxslim.fusion import fusion_report  # noqa: E402
from onnxslim.report import human_bytes, markdown_table  # noqa: E402
from passes._base import RunContext  # noqa: E402
from passes.quantize._dynamic import DynamicQuantOptions, QuantizeDynamicPass  # noqa: E402

__all__ = ["MODELS", "VARIANTS", "Row", "measure_model", "forms", "calib_memory", "render", "main"]

LENET = REPO / "models" / "lenet5_digits.onnx"
#: model name -> (evaluation task, bench input shapes)
MODELS = {
    "lenet5-digits": ("digits", {"input": (1, 1, 32, 32)}),
    "ppocr-rec": ("ocr-rec", {"x": (1, 3, 48, 320)}),
    "ppocr-cls": ("ocr-cls", {"x": (1, 3, 48, 192)}),
    "ppocr-det": ("ocr-det", {"x": (1, 3, 480, 640)}),
    "yolov8n-nudenet": ("detect", {"images": (1, 3, 320, 320)}),
    "silero-vad": ("vad", {"input": (1, 576), "state": (2, 1, 128)}),
}
VARIANTS = ("fp32", "ORT static", "ORT dynamic", "ours static", "ours dynamic")
_AS_LIMIT = 16 * 2**30


@dataclasses.dataclass
class Row:
    """One variant of one model."""

    model: str
    variant: str
    status: str = "ok"
    metric: str = "-"
    drop: str = "-"
    p50_ms: float | None = None
    speedup: float | None = None
    size: int | None = None
    fused: str = "-"
    build_s: float | None = None


def _source_path(name: str) -> Path:
    return LENET if name == "lenet5-digits" else zoo.fetch(name)


def _calib(name: str) -> Path:
    task = MODELS[name][0]
    module = load_task(task)
    return task_data(task, module, data_dir=DEFAULT_DATA_DIR, seed=0, n_eval=None, n_calib=None,
                     regenerate=False).calib_path


def _ort_static(src: Path, out: Path, calib: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(NpzDataset(calib, input_specs(onnx.load(str(src)))))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax)


def _ort_dynamic(src: Path, out: Path, calib: Path) -> None:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(src), str(out))


def _ours_static(src: Path, out: Path, calib: Path) -> None:
    try:
        from passes.quantize import QuantizeStaticPass  # the static engineer's pass
    except ImportError as err:
        raise NotImplementedError("passes.quantize.QuantizeStaticPass is not in the tree yet") from err
    from calibration.collect import collect

    model = onnx.load(str(src))
    dataset = NpzDataset(calib, input_specs(model))
    ctx = RunContext(calibration=collect(model, dataset, method="minmax"), dataset=dataset)
    onnx.save(QuantizeStaticPass().apply(model, ctx).model, str(out))


def _ours_dynamic(src: Path, out: Path, calib: Path) -> None:
    onnx.save(QuantizeDynamicPass().apply(onnx.load(str(src)), RunContext()).model, str(out))


_BUILDERS = {"ORT static": _ort_static, "ORT dynamic": _ort_dynamic, "ours static": _ours_static,
             "ours dynamic": _ours_dynamic}


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def _build(name: str, workdir: Path) -> tuple[list[Row], list[Path | None]]:
    src, calib = _source_path(name), _calib(name)
    rows, paths = [Row(name, "fp32", size=src.stat().st_size)], [src]
    for variant, build in _BUILDERS.items():
        out = workdir / f"{name}.{variant.replace(' ', '_')}.onnx"
        row, started = Row(name, variant), time.perf_counter()
        try:
            build(src, out, calib)
            onnx.checker.check_model(str(out), full_check=True)
            fusion = fusion_report(out)  # also proves onnxruntime loads it
            row.fused = f"{fusion.int8_compute}/{fusion.quantizable}"
            row.size = out.stat().st_size
            paths.append(out)
        except NotImplementedError as err:
            row.status = f"skipped: {err}"
            paths.append(None)
        except Exception as err:  # noqa: BLE001 - the peer's (or our) failure is a result
            row.status = f"failed: {_first_line(err)}"
            paths.append(None)
        row.build_s = time.perf_counter() - started
        rows.append(row)
    fusion = fusion_report(src)
    rows[0].fused = f"{fusion.int8_compute}/{fusion.quantizable}"
    return rows, paths


def _metrics(name: str, rows: list[Row], paths: list[Path | None]) -> None:
    task = MODELS[name][0]
    usable = [(r, p) for r, p in zip(rows, paths) if p is not None]
    module = load_task(task)
    data = task_data(task, module, data_dir=DEFAULT_DATA_DIR, seed=0, n_eval=None, n_calib=None, regenerate=False)
    for row, path in usable[1:]:
        try:
            report = evaluate(task, [("fp32", paths[0]), (row.variant, path)], data)
        except Exception as err:  # noqa: BLE001
            row.metric = f"failed: {_first_line(err)}"
            continue
        ref, got = report.rows
        rows[0].metric = f"{report.headline} {ref.metrics[report.headline]:.4f}"
        row.metric = f"{got.metrics[report.headline]:.4f}"
        row.drop = f"{got.drop:+.4f}"


def _latency(name: str, rows: list[Row], paths: list[Path | None], *, runs: int) -> None:
    usable = [(r, p) for r, p in zip(rows, paths) if p is not None]
    options = BenchOptions(runs=runs, warmup=max(5, runs // 10), threads=(1,), shapes=MODELS[name][1], isolate=False)
    report = bench([str(p) for _, p in usable], options)
    base = report.rows[0].p50_ms
    for (row, _), result in zip(usable, report.rows):
        row.p50_ms = result.p50_ms
        row.speedup = base / result.p50_ms if base and result.p50_ms else None


def measure_model(name: str, *, runs: int) -> list[Row]:
    """Every variant of model ``name``: build, fusion, task metric, interleaved latency."""
    with tempfile.TemporaryDirectory(prefix="onnxslim-quantize-bench-") as tmp:
        rows, paths = _build(name, Path(tmp))
        try:
            _metrics(name, rows, paths)
        except TaskUnavailable as err:
            for row in rows:
                row.metric = f"skipped: {err}"
        _latency(name, rows, paths, runs=runs)
    return rows


def render(rows: list[Row]) -> str:
    """The side-by-side Markdown table."""
    headers = ["model", "variant", "status", "task metric", "Δ vs fp32", "p50 ms (1 thr)", "× fp32",
               "size", "int8 / compute nodes (ORT fused)", "build s"]
    body = [[r.model, r.variant, r.status, r.metric, r.drop,
             "-" if r.p50_ms is None else f"{r.p50_ms:.3f}",
             "-" if r.speedup is None else f"{r.speedup:.2f}",
             "-" if r.size is None else human_bytes(r.size), r.fused,
             "-" if r.build_s is None else f"{r.build_s:.1f}"] for r in rows]
    return markdown_table(headers, body)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_AS_LIMIT, _AS_LIMIT))


def _child(args: list[str], *, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks.quantize", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=_limit_memory, check=False)


def _run_children(names: list[str], runs: int) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        print(f"{name}…", file=sys.stderr, flush=True)
        done = _child(["--child", name, "--runs", str(runs)])
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["?"])[-1]
            rows.append(Row(name, "all", status=f"child failed ({done.returncode}): {tail[:200]}"))
            continue
        rows += [Row(**r) for r in json.loads(done.stdout.strip().splitlines()[-1])]
    return rows


# ----------------------------------------------------------------------------- forms


def _mlp(seed: int = 0) -> onnx.ModelProto:
    """A MatMul-heavy toy: x [1, 128, 512] through 4 blocks of MatMul 512×2048, Relu, 2048×512."""
    rng = np.random.default_rng(seed)
    h, nodes, inits, x = onnx.helper, [], [], "x"
    for i in range(4):
        for j, (k, n) in enumerate(((512, 2048), (2048, 512))):
            w = f"w{i}_{j}"
            inits.append(onnx.numpy_helper.from_array((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32), w))
            nodes.append(h.make_node("MatMul", [x, w], [f"{w}_out"]))
            x = f"{w}_out"
            if j == 0:
                nodes.append(h.make_node("Relu", [x], [f"{w}_relu"]))
                x = f"{w}_relu"
    nodes.append(h.make_node("Identity", [x], ["y"]))
    graph = h.make_graph(nodes, "mlp", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 128, 512])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 128, 512])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=8)


_FORMS = {
    "integer per-channel (default)": DynamicQuantOptions(),
    "integer per-tensor": DynamicQuantOptions(per_channel=False),
    "weight-only DQ per-channel": DynamicQuantOptions(weight_only=True),
    "integer + Conv u8u8": DynamicQuantOptions(conv=True),
}


def forms(*, runs: int) -> str:
    """p50 of each emitted form against fp32 and ORT's quantize_dynamic, per model."""
    from onnxruntime.quantization import quantize_dynamic

    cases = {"mlp 4×(512→2048→512)": (_mlp(), {}), "lenet5-digits": (onnx.load(LENET), MODELS["lenet5-digits"][1]),
             "ppocr-rec": (onnx.load(zoo.fetch("ppocr-rec")), MODELS["ppocr-rec"][1])}
    body = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (model, shapes) in cases.items():
            paths = {"fp32": Path(tmp) / f"{len(body)}_fp32.onnx"}
            onnx.save(model, paths["fp32"])
            for form, options in _FORMS.items():
                paths[form] = Path(tmp) / f"{len(body)}_{len(paths)}.onnx"
                onnx.save(QuantizeDynamicPass(options).apply(model, RunContext()).model, paths[form])
            peer = Path(tmp) / f"{len(body)}_ort.onnx"
            try:
                quantize_dynamic(str(paths["fp32"]), str(peer))
                paths["ORT quantize_dynamic"] = peer
            except Exception as err:  # noqa: BLE001 - the peer's failure is a result
                body.append([label, "ORT quantize_dynamic", "-", "-", "-", f"failed: {_first_line(err)}"])
            body += _forms_rows(label, paths, shapes, runs)
    headers = ["model", "form", "p50 ms", "× fp32", "size", "ORT optimized graph"]
    return markdown_table(headers, body)


def _forms_rows(label: str, paths: dict[str, Path], shapes: dict, runs: int) -> list[list[Any]]:
    loadable = {}
    rows = []
    for form, path in paths.items():
        try:
            loadable[form] = (path, fusion_report(path).verdict())
        except Exception as err:  # noqa: BLE001
            rows.append([label, form, "-", "-", human_bytes(path.stat().st_size), f"failed: {_first_line(err)}"])
    options = BenchOptions(runs=runs, warmup=max(5, runs // 10), threads=(1,), shapes=shapes, isolate=False)
    report = bench([str(p) for p, _ in loadable.values()], options)
    base = report.rows[0].p50_ms
    for (form, (path, verdict)), result in zip(loadable.items(), report.rows):
        rows.append([label, form, f"{result.p50_ms:.3f}", f"{base / result.p50_ms:.2f}",
                     human_bytes(path.stat().st_size), verdict])
    return rows


# ----------------------------------------------------------------------------- calibration memory


def _calib_memory_child(samples: int) -> dict[str, Any]:
    from calibration.collect import collect

    task = "ocr-rec"
    data = task_data(task, load_task(task), data_dir=DEFAULT_DATA_DIR, seed=0, n_eval=None, n_calib=samples,
                     regenerate=False)
    model = onnx.load(str(zoo.fetch("ppocr-rec")))
    started = time.perf_counter()
    table = collect(model, NpzDataset(data.calib_path, input_specs(model)), method="minmax")
    seconds = time.perf_counter() - started
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"samples": samples, "tensors": len(table),
            "seconds": seconds, "vmhwm_kib": int(status["VmHWM"].split()[0])}


def calib_memory(samples: int) -> str:
    """Peak RSS of a child process calibrating ppocr-rec with MinMax on ``samples`` samples."""
    done = _child(["--calib-memory-child", str(samples)])
    if done.returncode != 0:
        return f"calibration child failed ({done.returncode}): {done.stderr.strip()[-400:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    peak = result["vmhwm_kib"] * 1024
    verdict = "within" if peak <= 2 * 2**30 else "OVER"
    return (f"ppocr-rec MinMax calibration, {result['samples']} samples, {result['tensors']} tensors: "
            f"{result['seconds']:.0f} s, peak RSS {human_bytes(peak)} ({verdict} the 2 GiB budget)")


def main() -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(MODELS), help=f"models (default: all of {list(MODELS)})")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per variant (default 50)")
    parser.add_argument("--forms", action="store_true", help="compare the dynamic pass's emitted forms")
    parser.add_argument("--calib-memory", action="store_true", help="measure calibration peak RSS")
    parser.add_argument("--samples", type=int, default=512, help="calibration samples for --calib-memory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--calib-memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps([dataclasses.asdict(r) for r in measure_model(args.child, runs=args.runs)]))
        return
    if args.calib_memory_child:
        print(json.dumps(_calib_memory_child(args.calib_memory_child)))
        return
    cpu = detect_cpu()
    print(f"CPU: {cpu.model_name}, {cpu.logical_cores} logical cores; {cpu.features_text()}\n")
    started = time.perf_counter()
    if args.forms:
        print(forms(runs=args.runs))
    elif args.calib_memory:
        print(calib_memory(args.samples))
    else:
        print(render(_run_children(args.names, args.runs)))
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
