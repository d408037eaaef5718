"""onnxslim.bench and onnxslim.cpu: structure and sanity of the figures, never absolute speed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim import bench as bench_module
from onnxslim.bench import MIN_RUNS_WITH_BUDGET, BenchOptions, BenchReport, bench
from onnxslim.cpu import CpuInfo, detect_cpu, parse_cpuinfo
from onnxslim.runtime import feed_shapes, parse_shape_option
from passes._errors import DataError, ModelLoadError, OnnxSlimError

# The model: x [batch, 256] -> 4 x MatMul(256x256). At batch 64 one run is ~0.3 ms on a 2-core
# x86 machine: long enough that timer and Python overhead (~µs) do not dominate the ratio.
DIM = 256


def matmul_chain(
    path: Path,
    *,
    layers: int = 4,
    input_name: str = "x",
    dims: tuple[int | str, ...] = ("batch", DIM),
    elem: int = TensorProto.FLOAT,
) -> Path:
    rng = np.random.default_rng(0)
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    inits, nodes, prev = [], [], input_name
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((DIM, DIM)) / 16).astype(dtype), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"], name=f"matmul{i}"))
        prev = f"h{i}"
    out_dims = (*dims[:-1], DIM)
    graph = helper.make_graph(
        nodes,
        "matmul_chain",
        [helper.make_tensor_value_info(input_name, elem, list(dims))],
        [helper.make_tensor_value_info(prev, elem, list(out_dims))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bench")
    first = matmul_chain(folder / "first.onnx")
    second = matmul_chain(folder / "second.onnx", layers=2)
    return first, second


@pytest.fixture(scope="module")
def report(models: tuple[Path, Path]) -> BenchReport:
    """Two models x threads 1 and 2, with the own-process measurements (4 subprocesses)."""
    options = BenchOptions(runs=30, warmup=2, batch=8, threads=(1, 2))
    return bench(list(models), options)


# ----------------------------------------------------------------------------- full report


def test_rows_cover_each_thread_setting_and_model_in_order(report: BenchReport, models: tuple[Path, Path]) -> None:
    got = [(r.threads, r.runtime, r.label) for r in report.rows]
    assert got == [(t, "onnxruntime", p.name) for t in (1, 2) for p in models]
    assert [r.model for r in report.rows] == [str(p) for p in models] * 2


def test_all_figures_present_and_positive(report: BenchReport, models: tuple[Path, Path]) -> None:
    for row in report.rows:
        assert row.note is None
        assert row.runs == 30 and row.batch == 8
        for value in (row.mean_ms, row.p50_ms, row.p90_ms, row.p99_ms, row.throughput, row.speedup):
            assert value is not None and value > 0
        assert row.p50_ms <= row.p90_ms <= row.p99_ms
        assert row.throughput == pytest.approx(8 / (row.mean_ms / 1e3))
        assert row.session_create_s is not None and row.session_create_s > 0
        assert row.base_rss_mib is not None and 0 < row.base_rss_mib <= row.peak_rss_mib
        assert row.file_size == Path(row.model).stat().st_size


def test_first_model_of_each_group_is_the_speedup_reference(report: BenchReport) -> None:
    firsts = [r for r in report.rows if r.label == "first.onnx"]
    assert [r.speedup for r in firsts] == [1.0, 1.0]
    for second, first in zip(report.rows[1::2], report.rows[::2]):
        assert second.speedup == pytest.approx(first.p50_ms / second.p50_ms)


def test_report_is_json_ready(report: BenchReport) -> None:
    data = json.loads(json.dumps(report.to_dict()))
    assert data["percentile_method"] == "linear"
    assert data["inputs"] == {"x": [8, DIM]}
    assert data["options"]["threads"] == [1, 2]
    assert [r["p50_ms"] for r in data["rows"]] == [r.p50_ms for r in report.rows]
    assert set(data["cpu"]) >= {"model_name", "logical_cores", "avx512_vnni", "has_vnni"}


def test_render_explains_the_method_and_shows_every_row(report: BenchReport) -> None:
    text = report.render()
    assert "interleaved round-robin" in text
    assert "speedup = p50(first) / p50(this)" in text
    assert "int8 features: AVX2 " in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(report.rows)  # header, rule, rows
    for line, row in zip(table[2:], report.rows):
        assert line.startswith(f"| {row.label} ")
    assert "1.00x" in table[2]


# ----------------------------------------------------------------------------- latency only


def test_same_model_twice_gives_speedup_near_one(models: tuple[Path, Path], tmp_path: Path) -> None:
    # Two files with the same bytes, timed interleaved. Each p50 is the median of 150 runs of
    # ~0.3 ms, and the runs alternate, so noise on a shared 2-core machine hits both alike: with
    # two busy loops pinning both cores, 20 repeats gave ratios 0.987-1.014. To leave [2/3, 3/2]
    # one median must move 50 % against the other, which needs most runs of one model alone hit.
    twin = shutil.copy(models[0], tmp_path / "twin.onnx")
    result = bench([models[0], twin], BenchOptions(runs=150, warmup=5, batch=64, threads=(1,), isolate=False))
    assert 2 / 3 <= result.rows[1].speedup <= 3 / 2
    assert result.rows[1].session_create_s is None and result.rows[1].peak_rss_mib is None


def test_labels_tell_models_apart(models: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    other = shutil.copy(models[1], tmp_path / "sub" / models[0].name)
    result = bench([models[0], other, models[0]], BenchOptions(runs=1, warmup=0, batch=1, isolate=False))
    assert [r.label for r in result.rows] == [f"{models[0]} #1", str(other), f"{models[0]} #2"]


def test_time_budget_stops_the_timed_loop(models: tuple[Path, Path]) -> None:
    options = BenchOptions(runs=10**6, warmup=0, seconds=0.05, batch=1, isolate=False)
    result = bench([models[1]], options)
    assert MIN_RUNS_WITH_BUDGET <= result.rows[0].runs < 10**6
    assert "time budget 0.05 s" in result.render()


def test_progress_goes_to_the_callback_and_nothing_is_printed(
    models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[str] = []
    bench([models[1]], BenchOptions(runs=3, warmup=1, batch=1, isolate=False), progress=lines.append)
    assert any("warm-up" in line for line in lines)
    assert capsys.readouterr() == ("", "")


def test_fp16_model_gets_the_same_values_cast(models: tuple[Path, Path], tmp_path: Path) -> None:
    half = matmul_chain(tmp_path / "half.onnx", elem=TensorProto.FLOAT16)
    result = bench([models[0], half], BenchOptions(runs=3, warmup=1, batch=2, isolate=False))
    assert all(r.p50_ms for r in result.rows)
    assert any("cast from float32 to float16 for half.onnx" in n for n in result.notes)


# ----------------------------------------------------------------------------- optional runtimes


def test_missing_openvino_is_a_note_and_no_rows(models: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    options = BenchOptions(runs=3, warmup=1, batch=1, runtimes=("onnxruntime", "openvino"), isolate=False)
    result = bench([models[1]], options)
    assert [r.runtime for r in result.rows] == ["onnxruntime"]
    assert any("openvino is not installed" in n for n in result.notes)
    assert "openvino is not installed" in result.render()
    assert list(result.versions) == ["onnxruntime"]


def test_failed_own_process_measurement_is_a_row_note(models: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_module, "_CHILD_TIMEOUT_S", 1e-3)
    result = bench([models[1]], BenchOptions(runs=3, warmup=1, batch=1))
    row = result.rows[0]
    assert row.p50_ms and row.session_create_s is None and row.peak_rss_mib is None
    assert row.note == "own-process measurement timed out after 0.001 s"
    assert "| note" in result.render()


# ----------------------------------------------------------------------------- errors


def test_input_name_mismatch_names_the_input(models: tuple[Path, Path], tmp_path: Path) -> None:
    other = matmul_chain(tmp_path / "other.onnx", input_name="pixels")
    with pytest.raises(OnnxSlimError, match=r"other\.onnx has no input 'x'"):
        bench([models[0], other], BenchOptions(runs=1, batch=1, isolate=False))


def test_fixed_dim_mismatch_names_the_input(models: tuple[Path, Path], tmp_path: Path) -> None:
    fixed = matmul_chain(tmp_path / "fixed.onnx", dims=(4, DIM))
    with pytest.raises(OnnxSlimError, match=r"input 'x' of fixed\.onnx is 4x256, but first\.onnx takes 2x256"):
        bench([models[0], fixed], BenchOptions(runs=1, batch=2, isolate=False))


def test_dynamic_batch_defaults_to_one_with_a_note(models: tuple[Path, Path]) -> None:
    result = bench([models[0]], BenchOptions(runs=1, warmup=0, isolate=False))
    assert result.inputs == {"x": (1, DIM)} and result.batch == 1
    assert any("dynamic batch dim set to 1 (input 'x')" in n for n in result.notes)
    given = bench([models[0]], BenchOptions(runs=1, warmup=0, batch=3, isolate=False))
    assert given.inputs == {"x": (3, DIM)} and given.batch == 3
    assert not any("dynamic batch dim" in n for n in given.notes)


def test_other_dynamic_dims_are_all_named_with_a_pasteable_shape(tmp_path: Path) -> None:
    two = matmul_chain(tmp_path / "two.onnx", layers=1, dims=("batch", "seq", "pos", DIM))
    for options in (BenchOptions(runs=1, isolate=False), BenchOptions(runs=1, batch=2, isolate=False)):
        with pytest.raises(DataError) as err:
            bench([two], options)
        batch = options.batch or 1
        assert str(err.value) == (f"input 'x' has dynamic dims 'seq', 'pos' (shape {batch}xseqxposx{DIM}): "
                                  f"give --shape x={batch}x224x224x{DIM}")
    pasted = parse_shape_option([str(err.value).split("--shape ")[1]])
    assert feed_shapes(onnx.load(two), shapes=pasted) == ({"x": (2, 224, 224, DIM)}, ())


def test_batch_fills_only_the_first_dynamic_dim(tmp_path: Path) -> None:
    seq = matmul_chain(tmp_path / "seq.onnx", dims=("batch", "seq", DIM))
    with pytest.raises(DataError, match="dynamic dim 'seq'"):
        bench([seq], BenchOptions(runs=1, batch=2, isolate=False))
    result = bench([seq], BenchOptions(runs=1, warmup=0, shapes={"x": (3, 5, DIM)}, isolate=False))
    assert result.inputs == {"x": (3, 5, DIM)} and result.batch == 3
    assert not any("dynamic batch dim" in n for n in result.notes)


def test_batch_on_a_fixed_model_is_ignored_with_a_note(tmp_path: Path) -> None:
    fixed = matmul_chain(tmp_path / "fixed.onnx", dims=(4, DIM))
    result = bench([fixed], BenchOptions(runs=1, warmup=0, batch=16, isolate=False))
    assert result.batch == 4
    assert any("--batch 16 ignored" in n for n in result.notes)


def test_missing_model_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        bench([tmp_path / "absent.onnx"], BenchOptions(isolate=False))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runs": 0}, "runs must be at least 1"),
        ({"warmup": -1}, "warmup must be at least 0"),
        ({"seconds": 0}, "seconds must be positive"),
        ({"threads": (-1,)}, "threads must be >= 0"),
        ({"runtimes": ("tensorrt",)}, "unknown runtime 'tensorrt'"),
        ({"graph_opt": "max"}, "graph_opt must be one of"),
    ],
)
def test_options_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(OnnxSlimError, match=message):
        BenchOptions(**kwargs)


def test_repeated_settings_are_kept_once_in_order() -> None:
    options = BenchOptions(threads=[2, 1, 2], runtimes=["openvino", "onnxruntime", "openvino"])
    assert options.threads == (2, 1) and options.runtimes == ("openvino", "onnxruntime")


def test_no_models_is_an_error() -> None:
    with pytest.raises(OnnxSlimError, match="at least one model"):
        bench([])


# ----------------------------------------------------------------------------- cpu


_X86 = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw {extra}

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw {extra}
"""


def test_cpuinfo_with_avx512_vnni() -> None:
    info = parse_cpuinfo(_X86.format(extra="avx512_vnni amx_tile amx_int8"))
    assert info.model_name == "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert info.logical_cores == 2
    assert (info.avx2, info.avx512f, info.avx512_vnni, info.avx_vnni, info.amx) == (True, True, True, False, True)
    assert info.has_vnni is True
    assert info.features_text() == "AVX2 yes, AVX-512F yes, AVX512-VNNI yes, AVX-VNNI no, AMX yes"


def test_cpuinfo_without_vnni() -> None:
    info = parse_cpuinfo(_X86.format(extra="avx512_bf16"))
    assert (info.avx512_vnni, info.avx_vnni, info.amx) == (False, False, False)
    assert info.has_vnni is False


def test_cpuinfo_avx_vnni_alone_counts_as_vnni() -> None:
    assert parse_cpuinfo(_X86.format(extra="avx_vnni")).has_vnni is True


def test_cpuinfo_without_flags_is_unknown() -> None:
    info = parse_cpuinfo("processor\t: 0\nprocessor\t: 1\n")
    assert info.logical_cores == 2 and info.model_name is None
    assert info.avx2 is None and info.has_vnni is None
    assert info.features_text().endswith("AMX unknown")


def test_detect_cpu_without_proc_falls_back_to_unknown(tmp_path: Path) -> None:
    info = detect_cpu(tmp_path / "no-cpuinfo")
    assert isinstance(info, CpuInfo)
    assert info.avx2 is None and info.source == "platform"
    assert json.dumps(info.to_dict())
