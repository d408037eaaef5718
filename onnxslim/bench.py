"""``onnxslim bench``: latency, throughput, session-creation time and peak memory of models.

How the figures are made:

- **Latency** (all in this process): every (threads, runtime, model) combination gets its own
  session and its warm-up runs; then the timed runs go round-robin over the combinations (round
  ``r`` starts at combination ``r mod n`` so none always follows the same neighbour). Machine
  drift (clock boost, heat, noisy neighbours) thus hits every model alike. One run is timed with
  ``time.perf_counter_ns()`` around the runtime's run call, on the same inputs for every model
  (synthesized once with a fixed seed). mean, p50, p90, p99 use
  ``numpy.percentile(method="linear")``; throughput = batch / mean (samples per second);
  ``speedup = p50(first model) / p50(this)`` within the same threads and runtime.
- **Session creation and peak RSS** (one subprocess per combination, ``python -m
  onnxslim._bench_child --child SPEC``; see :mod:`onnxslim._bench_child`): the child loads the
  same inputs from an ``.npz``, creates the session (timed), runs it a few times and prints
  JSON. Peak RSS is the child's ``VmHWM`` from ``/proc/self/status``; ``getrusage().ru_maxrss``
  is only a fallback where ``/proc`` is missing, because on Linux it survives fork + exec and
  would report the parent's peak.
- ``--runtime openvino`` (optional) compiles the same ONNX file with
  ``openvino.Core().compile_model(path, "CPU", config)``; when ``openvino`` is not installed the
  report says so in a note and has no rows for it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from onnxslim._bench_child import open_runner, run_child
from onnxslim.cpu import CpuInfo, detect_cpu
from onnxslim.io import load_model, model_file_size
from onnxslim.report import human_bytes, markdown_table
from onnxslim.runtime import (
    DEFAULT_BATCH,
    GRAPH_OPT_LEVELS,
    InputSpec,
    batch_note,
    cast_feeds,
    feed_shapes,
    input_specs,
    make_session,
    run_model,
    synthesize_feeds,
)
from passes._errors import OnnxSlimError

__all__ = ["RUNTIMES", "PERCENTILE_METHOD", "MIN_RUNS_WITH_BUDGET", "BenchOptions", "BenchRow", "BenchReport", "bench", "op_type_times", "side_by_side_runs"]

#: Engines ``--runtime`` accepts; every one but onnxruntime is an optional extra.
RUNTIMES = ("onnxruntime", "openvino")
#: How percentiles are interpolated (``numpy.percentile(method=...)``).
PERCENTILE_METHOD = "linear"
#: With a time budget (``seconds``) the timed loop still does at least this many rounds.
MIN_RUNS_WITH_BUDGET = 10
_CHILD_TIMEOUT_S = 600.0
_PROGRESS_EVERY_S = 1.0

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """How to benchmark; each field is one ``onnxslim bench`` flag.

    Attributes:
        runs: timed runs per combination (``--runs``), at least 1.
        warmup: untimed runs per combination before timing (``--warmup``), at least 0.
        seconds: time budget of the timed loop (``--seconds``); it stops after the round that
            exceeds it, but not before :data:`MIN_RUNS_WITH_BUDGET` rounds (or ``runs``).
        batch: value of each input's dynamic first dim (``--batch``); ``None``: 1, said in a note.
        shapes: whole shapes of inputs by name (``--shape NAME=DIMS``); they win over ``batch``.
        graph_opt: onnxruntime graph optimization level (``--graph-opt``).
        threads: intra-op thread settings, each its own group of rows (``--threads``, repeatable);
            0 lets the runtime choose.
        runtimes: engines to run (``--runtime``, repeatable), from :data:`RUNTIMES`.
        isolate: measure session-creation time and peak RSS in subprocesses.
        seed: seed of the synthesized inputs.
    """

    runs: int = 100
    warmup: int = 10
    seconds: float | None = None
    batch: int | None = None
    shapes: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    graph_opt: str = "all"
    threads: tuple[int, ...] = (0,)
    runtimes: tuple[str, ...] = ("onnxruntime",)
    isolate: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.runs >= 1, f"runs must be at least 1, got {self.runs}"),
            (self.warmup >= 0, f"warmup must be at least 0, got {self.warmup}"),
            (self.seconds is None or self.seconds > 0, f"seconds must be positive, got {self.seconds}"),
            (self.batch is None or self.batch >= 1, f"batch must be at least 1, got {self.batch}"),
            (self.graph_opt in GRAPH_OPT_LEVELS, f"graph_opt must be one of {', '.join(GRAPH_OPT_LEVELS)}"),
            (len(self.threads) > 0 and all(t >= 0 for t in self.threads), f"threads must be >= 0, got {self.threads}"),
            (len(self.runtimes) > 0, "give at least one runtime"),
        ]
        checks += [(r in RUNTIMES, f"unknown runtime '{r}'; choose from {', '.join(RUNTIMES)}") for r in self.runtimes]
        for ok, message in checks:
            if not ok:
                raise OnnxSlimError(message)
        object.__setattr__(self, "threads", tuple(dict.fromkeys(int(t) for t in self.threads)))
        object.__setattr__(self, "runtimes", tuple(dict.fromkeys(self.runtimes)))
        object.__setattr__(self, "shapes", {k: tuple(int(d) for d in v) for k, v in self.shapes.items()})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict whose keys are the field names."""
        out = dataclasses.asdict(self)
        out.update(shapes={k: list(v) for k, v in self.shapes.items()}, threads=list(self.threads))
        out["runtimes"] = list(self.runtimes)
        return out


@dataclasses.dataclass(frozen=True)
class BenchRow:
    """One (model, runtime, threads) combination; a figure that could not be measured is ``None``.

    Attributes:
        model: the model path as given.
        label: short name shown in the table (the file name unless two models share it).
        runtime: ``"onnxruntime"`` or ``"openvino"``.
        threads: intra-op threads (0: the runtime's default).
        runs: timed runs done.
        batch: samples per run (for throughput).
        mean_ms: mean latency in milliseconds; ``p50_ms``, ``p90_ms``, ``p99_ms`` likewise.
        throughput: samples per second, ``batch / mean``.
        session_create_s: session creation (model load + optimization) in its own process.
        peak_rss_mib: peak resident memory of that process (MiB), after creation and a few runs.
        base_rss_mib: its resident memory before loading the model (interpreter and libraries).
        file_size: bytes of the model file plus ``<file>.data`` when present.
        speedup: p50 of the first model in the same (threads, runtime) group / this p50.
        note: one line saying why figures are missing, else ``None``.
    """

    model: str
    label: str
    runtime: str
    threads: int
    runs: int
    batch: int
    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    throughput: float | None
    session_create_s: float | None
    peak_rss_mib: float | None
    base_rss_mib: float | None
    file_size: int
    speedup: float | None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict whose keys are the field names."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BenchReport:
    """Everything ``onnxslim bench`` reports.

    Attributes:
        cpu: the machine's CPU (model, cores, int8 features).
        options: the options used.
        inputs: shape of each synthesized input, by name (as fed to the first model).
        batch: samples per run used for throughput.
        versions: runtime name -> version, for the runtimes that ran.
        rows: one per (threads, runtime, model), in that nesting order.
        notes: skipped runtimes, ignored options, input casts and other remarks.
    """

    cpu: CpuInfo
    options: BenchOptions
    inputs: Mapping[str, tuple[int, ...]]
    batch: int
    versions: Mapping[str, str]
    rows: tuple[BenchRow, ...]
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``json.dumps`` works on it)."""
        return {
            "cpu": self.cpu.to_dict(),
            "options": self.options.to_dict(),
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "batch": self.batch,
            "versions": dict(self.versions),
            "percentile_method": PERCENTILE_METHOD,
            "rows": [r.to_dict() for r in self.rows],
            "notes": list(self.notes),
        }

    def render(self) -> str:
        """The report as Markdown: a header of facts and method, the table, then notes."""
        notes = ["", *(f"- note: {n}" for n in self.notes)] if self.notes else []
        return "\n".join([*_header(self), "", _table(self.rows), *notes])


# ----------------------------------------------------------------------------- API


@dataclasses.dataclass(frozen=True)
class _Model:
    path: Path
    label: str
    feeds: dict[str, np.ndarray]
    file_size: int


@dataclasses.dataclass(frozen=True)
class _Combo:
    model: int
    runtime: str
    threads: int


def bench(
    models: Sequence[str | os.PathLike[str]],
    options: BenchOptions | None = None,
    *,
    progress: Progress | None = None,
) -> BenchReport:
    """Benchmark ``models`` (see the module docstring for the method).

    Args:
        models: model files; the first is the reference for ``speedup``. All must share their
            input names (floating inputs of another precision get the same values cast).
        options: how to benchmark; defaults to :class:`BenchOptions()`.
        progress: called with a short line of progress now and then (never printed here).

    Raises:
        ModelLoadError: a model file is missing or not ONNX.
        OnnxSlimError: the models' inputs differ (the message names the input), or
            onnxruntime cannot load or run a model.
        DataError: an input has a dynamic dim besides the batch that ``shapes`` does not give
            (every such dim is named, with a ``--shape`` to paste); a dynamic batch dim is
            ``batch``, else 1, and a note says so.
    """
    options = options or BenchOptions()
    say = progress or (lambda _line: None)
    if not models:
        raise OnnxSlimError("bench needs at least one model")
    notes: list[str] = []
    runtimes, versions = _available_runtimes(options.runtimes, notes)
    say(f"loading {len(models)} model(s)")
    loaded, batch = _load_models([Path(m) for m in models], options, notes)
    cpu = detect_cpu()
    notes += [
        f"threads {t} is more than the {cpu.logical_cores} logical cores"
        for t in options.threads
        if cpu.logical_cores and t > cpu.logical_cores
    ]
    if "openvino" in runtimes and options.graph_opt != "all":
        notes.append(f"graph-opt {options.graph_opt} applies to onnxruntime only")
    combos = [_Combo(m, rt, t) for t in options.threads for rt in runtimes for m in range(len(loaded))]
    samples, failures = _measure_latency(combos, loaded, options, say)
    isolated = _measure_isolated(combos, loaded, options, set(failures), say) if options.isolate else {}
    rows = _rows(combos, loaded, batch, samples, isolated, failures)
    inputs = {name: tuple(value.shape) for name, value in loaded[0].feeds.items()}
    return BenchReport(cpu, options, inputs, batch, versions, tuple(rows), tuple(notes))


def _available_runtimes(requested: Sequence[str], notes: list[str]) -> tuple[list[str], dict[str, str]]:
    versions: dict[str, str] = {}
    for name in requested:
        if name == "onnxruntime":
            versions[name] = ort.__version__
            continue
        try:
            import openvino
        except (ImportError, OSError) as err:
            why = "is not installed (pip install openvino)" if isinstance(err, ImportError) else f"cannot load ({err})"
            notes.append(f"openvino {why}: its rows are skipped")
            continue
        versions[name] = str(getattr(openvino, "__version__", "unknown"))
    return [r for r in requested if r in versions], versions


# ----------------------------------------------------------------------------- inputs


def _load_models(paths: list[Path], options: BenchOptions, notes: list[str]) -> tuple[list[_Model], int]:
    labels = _labels(paths)
    first = load_model(paths[0])
    shapes, batched = _feed_shapes(first, options, notes)
    feeds = synthesize_feeds(first, rng=np.random.default_rng(options.seed), shapes=shapes)
    del first
    out = [_Model(paths[0], labels[0], feeds, model_file_size(paths[0]))]
    for path, label in zip(paths[1:], labels[1:]):
        specs = input_specs(load_model(path))
        out.append(_Model(path, label, _adapt_feeds(feeds, specs, label, labels[0], notes), model_file_size(path)))
    first_dims = [v.shape[0] for v in feeds.values() if v.ndim]
    batch = (options.batch or DEFAULT_BATCH) if batched else (first_dims[0] if first_dims else 1)
    return out, int(batch)


def _labels(paths: list[Path]) -> list[str]:
    """File names; the path where names collide; ``#n`` appended when a path is given twice."""
    names = [p.name if [q.name for q in paths].count(p.name) == 1 else str(p) for p in paths]
    return [f"{n} #{names[: i + 1].count(n)}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _feed_shapes(model: Any, options: BenchOptions, notes: list[str]) -> tuple[dict[str, tuple[int, ...]], bool]:
    """Every input's shape: ``options.shapes``, then the batch (``options.batch``, else
    :data:`~onnxslim.runtime.DEFAULT_BATCH`, said in a note) in a dynamic first dim.

    Returns:
        The shapes by input name, and whether some input's dynamic first dim took the batch.

    Raises:
        DynamicDimsError: other dynamic dims are unset (all named, with a pasteable ``--shape``).
    """
    batch = options.batch or DEFAULT_BATCH
    shapes, batched = feed_shapes(model, shapes=options.shapes, batch=batch)
    if batched and options.batch is None:
        notes.append(f"{batch_note(batched, batch)}; --batch or --shape chooses")
    if not batched and options.batch is not None:
        notes.append(f"--batch {options.batch} ignored: no input without --shape has a dynamic first dim")
    return shapes, bool(batched)


def _adapt_feeds(
    feeds: Mapping[str, np.ndarray], specs: list[InputSpec], label: str, first: str, notes: list[str]
) -> dict[str, np.ndarray]:
    """The first model's feeds checked against (and cast to) another model's inputs."""
    names, share = [s.name for s in specs], "benchmarked models must share their inputs"
    for name in feeds:
        if name not in names:
            raise OnnxSlimError(f"{label} has no input '{name}' but {first} has; {share}")
    out = {}
    for spec in specs:
        if spec.name not in feeds:
            raise OnnxSlimError(f"{label} has input '{spec.name}' but {first} has not; {share}")
        value = feeds[spec.name]
        fixed = [(w, g) for w, g in zip(spec.dims, value.shape) if isinstance(w, int)]
        if spec.dims and (len(spec.dims) != value.ndim or any(w != g for w, g in fixed)):
            shape = "x".join(map(str, value.shape))
            raise OnnxSlimError(f"input '{spec.name}' of {label} is {spec.shape_text()}, but {first} takes {shape}")
        if spec.dtype != value.dtype:
            if not (np.issubdtype(spec.dtype, np.floating) and np.issubdtype(value.dtype, np.floating)):
                raise OnnxSlimError(f"input '{spec.name}' of {label} is {spec.dtype}, but {first} takes {value.dtype}")
            notes.append(f"input '{spec.name}' cast from {value.dtype} to {spec.dtype} for {label}")
            value = value.astype(spec.dtype)
        out[spec.name] = value
    return out


# ----------------------------------------------------------------------------- latency


def _measure_latency(
    combos: list[_Combo], loaded: list[_Model], options: BenchOptions, say: Progress
) -> tuple[dict[int, list[int]], dict[int, str]]:
    """Nanoseconds per timed run by combination index, and why combinations failed."""
    failures: dict[int, str] = {}
    runners: dict[int, Callable[[], object]] = {}

    def fail(i: int, err: OnnxSlimError) -> None:
        combo = combos[i]
        if combo.runtime == "onnxruntime":
            raise type(err)(f"{loaded[combo.model].label}: {err}") from err
        failures[i] = str(err)
        runners.pop(i, None)

    say(f"creating {len(combos)} session(s)")
    for i, combo in enumerate(combos):
        model = loaded[combo.model]
        try:
            run = open_runner(combo.runtime, model.path, combo.threads, options.graph_opt)
            runners[i] = functools.partial(run, model.feeds)
        except OnnxSlimError as err:
            fail(i, err)
    say(f"warm-up: {options.warmup} run(s) per session")
    for i in list(runners):
        try:
            for _ in range(options.warmup):
                runners[i]()
        except OnnxSlimError as err:
            fail(i, err)
    return _timed_rounds(runners, options, say, fail), failures


def _timed_rounds(
    runners: dict[int, Callable[[], object]],
    options: BenchOptions,
    say: Progress,
    fail: Callable[[int, OnnxSlimError], None],
) -> dict[int, list[int]]:
    order = list(runners)
    samples: dict[int, list[int]] = {i: [] for i in order}
    least = min(options.runs, MIN_RUNS_WITH_BUDGET)
    start = last = time.perf_counter()
    for r in range(options.runs):
        for k in range(len(order)):
            i = order[(r + k) % len(order)]
            if i not in runners:
                continue
            run = runners[i]
            try:
                t0 = time.perf_counter_ns()
                run()
                samples[i].append(time.perf_counter_ns() - t0)
            except OnnxSlimError as err:
                fail(i, err)
        now = time.perf_counter()
        if options.seconds is not None and r + 1 >= least and now - start >= options.seconds:
            say(f"time budget of {options.seconds:g} s reached after {r + 1} round(s)")
            break
        if now - last >= _PROGRESS_EVERY_S:
            say(f"timed runs: {r + 1}/{options.runs} round(s), {now - start:.0f} s")
            last = now
    return samples


def op_type_times(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *, runs: int = 10, threads: int = 1,
                  graph_opt: str = "all") -> dict[str, float]:
    """Mean milliseconds per run each kernel type of ``model`` takes on ``feeds``, the most
    costly first: onnxruntime's profiler on the optimized graph, so the types are what runs
    (``QLinearConv``, a fused ``Conv``, a ``DequantizeLinear`` no fusion absorbed); ``runs`` runs
    after one warm-up. Where a model's time goes, not how long it takes (profiling has a cost)."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        session = make_session(model, threads=threads, graph_opt=graph_opt, profile_prefix=os.path.join(tmp, "profile"))
        feeds = cast_feeds(feeds, model)
        for _ in range(runs + 1):
            run_model(session, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    timed = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run")[1:]  # the warm-up run left out
    totals: dict[str, float] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if any(lo <= event.get("ts", -1) <= hi for lo, hi in timed):
            op = event.get("args", {}).get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + event.get("dur", 0) / 1000.0
    return {op: total / max(len(timed), 1) for op, total in sorted(totals.items(), key=lambda kv: -kv[1])}


def side_by_side_runs(
    models: Sequence[onnx.ModelProto],
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int = 1,
    runs: int = 30,
    warmup: int = 3,
    graph_opt: str = "all",
) -> list[list[float]]:
    """Milliseconds of every timed run of each model on the same feeds, timed round-robin in
    this process: entry ``k`` of every list comes from the same round, so runs can be compared
    pairwise (machine drift hits both alike).

    The quick check commands use to say whether a rewrite made a model faster; ``bench`` is the
    full measurement.
    """
    runners: dict[int, Callable[[], object]] = {}
    for i, model in enumerate(models):
        session = make_session(model, threads=threads, graph_opt=graph_opt)
        runners[i] = functools.partial(run_model, session, cast_feeds(feeds, model))
    for run in runners.values():
        for _ in range(warmup):
            run()

    def fail(index: int, err: OnnxSlimError) -> None:
        raise err

    samples = _timed_rounds(runners, BenchOptions(runs=runs, warmup=0), lambda _: None, fail)
    return [[ns / 1e6 for ns in samples[i]] for i in range(len(models))]


# ----------------------------------------------------------------------------- subprocesses


def _measure_isolated(
    combos: list[_Combo], loaded: list[_Model], options: BenchOptions, skip: set[int], say: Progress
) -> dict[int, dict[str, Any] | str]:
    """Per combination: the child's JSON figures, or one line saying why there are none."""
    todo = [i for i in range(len(combos)) if i not in skip]
    results: dict[int, dict[str, Any] | str] = {}
    with tempfile.TemporaryDirectory(prefix="onnxslim-bench-") as tmp:
        feed_files: dict[int, str] = {}
        for n, i in enumerate(todo, start=1):
            combo, model = combos[i], loaded[combos[i].model]
            if combo.model not in feed_files:
                feed_files[combo.model] = str(Path(tmp) / f"feeds{combo.model}.npz")
                np.savez(feed_files[combo.model], *model.feeds.values())  # positional: any input name works
            what = f"{model.label}, {combo.runtime}, threads {combo.threads}"
            say(f"session creation and peak RSS, own process {n}/{len(todo)}: {what}")
            spec = {
                "model": str(model.path), "runtime": combo.runtime, "threads": combo.threads,
                "graph_opt": options.graph_opt, "feeds": feed_files[combo.model], "inputs": list(model.feeds),
            }  # fmt: skip
            results[i] = run_child(spec, _CHILD_TIMEOUT_S)
    return results


# ----------------------------------------------------------------------------- rows and rendering


def _rows(
    combos: list[_Combo],
    loaded: list[_Model],
    batch: int,
    samples: Mapping[int, list[int]],
    isolated: Mapping[int, dict[str, Any] | str],
    failures: Mapping[int, str],
) -> list[BenchRow]:
    rows, first_p50 = [], {}
    for i, combo in enumerate(combos):
        model, taken = loaded[combo.model], samples.get(i, [])
        ms = np.asarray(taken, dtype=np.float64) / 1e6
        mean, p50, p90, p99 = (None,) * 4
        if i not in failures and ms.size:
            mean = float(ms.mean())
            p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99], method=PERCENTILE_METHOD))
        if combo.model == 0:
            first_p50[(combo.threads, combo.runtime)] = p50
        base = first_p50.get((combo.threads, combo.runtime))
        child = isolated.get(i)
        figures = child if isinstance(child, dict) else {}
        rss = {k: figures[f"{k}_kib"] / 1024 if figures.get(f"{k}_kib") else None for k in ("peak_rss", "base_rss")}
        rows.append(BenchRow(
            str(model.path), model.label, combo.runtime, combo.threads, 0 if i in failures else ms.size, batch,
            mean, p50, p90, p99, batch / (mean / 1e3) if mean else None, figures.get("session_create_s"),
            rss["peak_rss"], rss["base_rss"], model.file_size, base / p50 if base and p50 else None,
            failures.get(i) or (child if isinstance(child, str) else None),
        ))  # fmt: skip
    return rows


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _header(report: BenchReport) -> list[str]:
    cpu, opts = report.cpu, report.options
    cores = f"{cpu.logical_cores} logical cores" if cpu.logical_cores else "unknown core count"
    versions = ", ".join(f"{k} {v.split('-')[0]}" for k, v in report.versions.items()) or "none available"
    inputs = ", ".join(f"{k}={'x'.join(map(str, v)) or 'scalar'}" for k, v in report.inputs.items())
    least = min(opts.runs, MIN_RUNS_WITH_BUDGET)
    budget = f", time budget {opts.seconds:g} s (at least {least} runs)" if opts.seconds else ""
    base = [r.base_rss_mib for r in report.rows if r.base_rss_mib]
    lines = [
        "## onnxslim bench",
        "",
        f"- CPU: {cpu.model_name or 'unknown'}, {cores}; int8 features: {cpu.features_text()}",
        f"- runtimes: {versions}; onnxruntime graph-opt {opts.graph_opt}",
        f"- inputs: {inputs} (batch {report.batch}, seed {opts.seed})",
        f"- runs: warm-up {opts.warmup}, timed up to {opts.runs}{budget}",
        f"- latency: interleaved round-robin; percentiles by numpy ({PERCENTILE_METHOD}); "
        "speedup = p50(first) / p50(this) within the same threads and runtime; throughput = batch / mean",
    ]
    if opts.isolate:
        before = f"; about {min(base):.0f} MiB before loading a model" if base else ""
        lines.append(f"- session creation and peak RSS: each model in its own process (whole-process RSS{before})")
    return lines


def _table(rows: Sequence[BenchRow]) -> str:
    headers = ["model", "runtime", "threads", "runs", "mean ms", "p50 ms", "p90 ms", "p99 ms",
               "samples/s", "create s", "peak RSS MiB", "size", "speedup"]  # fmt: skip
    with_notes = any(r.note for r in rows)
    body = []
    for r in rows:
        cells = [
            r.label, r.runtime, r.threads or "auto", r.runs, _fmt(r.mean_ms, ".3f"), _fmt(r.p50_ms, ".3f"),
            _fmt(r.p90_ms, ".3f"), _fmt(r.p99_ms, ".3f"), _fmt(r.throughput, ".1f"), _fmt(r.session_create_s, ".3f"),
            _fmt(r.peak_rss_mib, ".1f"), human_bytes(r.file_size), _fmt(r.speedup, ".2f", "x"),
        ]  # fmt: skip
        body.append(cells + ([r.note or ""] if with_notes else []))
    return markdown_table(headers + (["note"] if with_notes else []), body)
