"""The own-process part of ``onnxslim bench``: session creation time and peak RSS of one model.

The parent calls :func:`run_child` once per (model, runtime, threads) combination. It starts
``python -m onnxslim._bench_child --child SPEC`` with this very ``onnxslim`` first on
``PYTHONPATH``, where ``SPEC`` is JSON naming the model, runtime, threads, graph-opt level and
an ``.npz`` of the inputs (stored positionally, so any input name works). The child:

1. reads its baseline peak RSS (interpreter and libraries, before the model);
2. loads the inputs, creates the session and times that with ``time.perf_counter()``;
3. runs the model a few times and prints one JSON line with ``session_create_s``,
   ``base_rss_kib`` and ``peak_rss_kib`` (or ``{"error": ...}`` and exit 1).

Peak RSS is ``VmHWM`` from ``/proc/self/status``; ``getrusage().ru_maxrss`` is only a fallback
where ``/proc`` is missing, because on Linux it survives fork + exec and would report the
parent's peak. The parent reads the last JSON line of stdout and turns a timeout, a signal or a
non-zero exit into one line saying why there are no figures.

:func:`open_runner` (one inference of a model on onnxruntime or openvino) lives here too, so
the child imports nothing of the report side; the parent's latency loop uses it as well.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxslim.runtime import make_session, run_model
from passes._errors import DataError, OnnxSlimError

__all__ = ["Runner", "last_line", "open_runner", "run_child"]

Runner = Callable[[Mapping[str, np.ndarray]], object]

_CHILD_RUNS = 3


def last_line(err: BaseException | str) -> str:
    """The last non-blank line of ``err``'s message (its type name when there is none)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def open_runner(runtime: str, path: Path, threads: int, graph_opt: str) -> Runner:
    """A function running one inference of ``path`` on ``runtime``.

    Raises:
        OnnxSlimError: the runtime cannot load the model.
    """
    if runtime == "onnxruntime":
        return functools.partial(run_model, make_session(str(path), threads=threads, graph_opt=graph_opt))
    import openvino

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = openvino.Core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
    except Exception as err:  # openvino raises RuntimeError and others
        raise OnnxSlimError(f"openvino cannot compile the model: {last_line(err)}") from err

    def run(feeds: Mapping[str, np.ndarray], _keep: object = compiled) -> object:
        try:
            return request.infer(dict(feeds))
        except Exception as err:
            raise DataError(f"openvino failed to run the model: {last_line(err)}") from err

    return run


# ----------------------------------------------------------------------------- parent side


def run_child(spec: dict[str, Any], timeout_s: float) -> dict[str, Any] | str:
    """Measure ``spec`` in a subprocess: its JSON figures, or one line saying why there are none."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)  # the child must import this very onnxslim
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "onnxslim._bench_child", "--child", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        return f"own-process measurement timed out after {timeout_s:g} s"
    except OSError as err:
        return f"own-process measurement could not start: {err}"
    result = _last_json(done.stdout)
    if done.returncode == 0 and result is not None and "error" not in result:
        return result
    if result is not None and "error" in result:
        return f"own-process measurement failed: {result['error']}"
    if done.returncode < 0:
        hint = " (out of memory?)" if done.returncode == -9 else ""
        return f"own-process measurement killed by signal {-done.returncode}{hint}"
    return f"own-process measurement failed (exit {done.returncode}): {last_line(done.stderr or 'no message')}"


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None


# ----------------------------------------------------------------------------- child side


def _peak_rss_kib() -> int | None:
    """This process's peak RSS in KiB: ``VmHWM`` on Linux, else ``ru_maxrss``; ``None`` if unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024 if sys.platform == "darwin" else peak)


def _child_main(argv: Sequence[str]) -> int:
    """Entry of the measuring subprocess: prints one JSON line; exit 1 on an expected error."""
    spec = json.loads(argv[0])
    if spec["runtime"] == "openvino":
        import openvino  # noqa: F401 - the baseline includes the engine's libraries, as for onnxruntime
    base = _peak_rss_kib()
    try:
        with np.load(spec["feeds"]) as data:
            feeds = {name: data[f"arr_{k}"] for k, name in enumerate(spec["inputs"])}
        start = time.perf_counter()
        run = open_runner(spec["runtime"], Path(spec["model"]), int(spec["threads"]), spec["graph_opt"])
        created = time.perf_counter() - start
        for _ in range(_CHILD_RUNS):
            run(feeds)
    except OnnxSlimError as err:
        print(json.dumps({"error": str(err)}))
        return 1
    print(json.dumps({"session_create_s": created, "base_rss_kib": base, "peak_rss_kib": _peak_rss_kib()}))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["--child"] or len(sys.argv) != 3:
        sys.exit("usage: python -m onnxslim._bench_child --child SPEC_JSON (internal; use `onnxslim bench`)")
    sys.exit(_child_main(sys.argv[2:]))
