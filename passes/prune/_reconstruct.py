"""Repair the layers that lost input channels, from calibration data (no labels, no training).

Each consumer layer is seen as ``Y = X·Wᵀ + b`` over its input features (a Conv's features are
its input channels × kernel positions, read as image patches; a Gemm's or MatMul's are its input
columns).

**Mean compensation** (always, with calibration data): a removed input feature ``f`` contributed
``W[:, f]·x_f`` to every output; replacing ``x_f`` by its calibration mean ``μ_f`` moves
``Σ_f W[:, f]·μ_f`` into the bias (a bias is created when the layer has none; Conv padding is
ignored).

**Least-squares re-fit** (``reconstruct``): layer by layer in graph order, the pruned model
(already repaired upstream) gives the layer's actual input ``X'`` and the unpruned model its
original output ``Y`` (kept output channels only). ``[W' b']`` minimizes
``‖Y − X'·W'ᵀ − b'‖² + λ‖[W' b'] − [W₀ b₀]‖²`` with ``W₀, b₀`` the mean-compensated weights and
``λ = ridge · trace(XᵀX)/D``. Only ``XᵀX`` and ``XᵀY`` are accumulated (float64), sample by
sample, on at most ``rows`` random output positions per sample, so memory does not depend on
the number of samples. Layers whose inputs do not depend on each other are fitted in the same
run over the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

from passes.prune._collect import Samples, TensorRunner
from passes.prune._layers import (Layer, conv_strides, current, ensure_bias, kernel_size, layer_of, out_axis,
                                  to_matrix, weight_matrix, write_weights)
from passes.prune._lstsq import ChannelFit, DenseFit
from passes.prune._patches import refit_problem, rows
from passes.prune._spaces import ChannelSpace, Consumer

__all__ = ["REFIT_LABEL", "RefitOptions", "compensate_means", "refit_layers"]

#: The progress label of the re-fit (see :attr:`passes._base.RunContext.progress`).
REFIT_LABEL = "re-fitting layers"


@dataclasses.dataclass(frozen=True)
class RefitOptions:
    """How the least-squares re-fit runs.

    Attributes:
        ridge: strength of the pull toward the mean-compensated weights (relative to the
            average input energy).
        rows: output positions used per sample and layer (chosen at random).
        seed: seed of that choice.
        sequential: fit layer by layer on the inputs of the partly repaired pruned model (one
            run over the data per round of independent layers); when ``False``, fit every layer
            at once on the unpruned model's inputs restricted to the kept channels (one run).
    """

    ridge: float = 1e-3
    rows: int = 1024
    seed: int = 0
    sequential: bool = True


def _columns(indices: np.ndarray, kernel: int) -> np.ndarray:
    return (indices[:, None] * kernel + np.arange(kernel)[None, :]).reshape(-1)


def compensate_means(
    model: onnx.ModelProto,
    consumers: Sequence[Consumer],
    kept: Mapping[ChannelSpace, np.ndarray],
    original: Mapping[str, np.ndarray],
    means: Mapping[tuple[str, int], np.ndarray],
) -> tuple[int, list[str]]:
    """Move the mean contribution of removed inputs into each consumer's bias (in place).

    Args:
        model: the pruned model.
        consumers: layers whose input channels were pruned.
        kept: kept indices per pruned space.
        original: unpruned value of each consumer weight (by the analysis' initializer name).
        means: per-index mean of each consumer input ``(tensor, axis)`` in the unpruned model.

    Returns:
        Number of layers compensated and the reasons for those skipped.
    """
    done, skipped = 0, []
    for c in consumers:
        if c.kind == "Depthwise":
            continue  # each output reads its own channel: no removed input to compensate
        layer = ensure_bias(model, layer_of(model, c.node, c.kind))
        mu = means.get((c.data.tensor, c.data.axis))
        if layer.bias_node < 0 or mu is None:
            skipped.append(f"{c.kind} without a bias to compensate" if mu is not None else "no calibration mean")
            continue
        removed = np.setdiff1d(np.arange(c.data.size), kept.get(c.data, np.arange(c.data.size)))
        w_orig = original[c.weight.tensor]
        w2 = to_matrix(w_orig, layer)
        kernel = kernel_size(w_orig.shape, c.kind)
        delta = w2[:, _columns(removed, kernel)] @ np.repeat(mu[removed], kernel)
        if c.kind == "ConvTranspose":  # each output pixel sees about one kernel position in stride²
            delta /= float(np.prod(conv_strides(model.graph.node[c.node])))
        out_space = ChannelSpace(c.weight.tensor, out_axis(c.kind, layer.trans_b), w2.shape[0], c.weight.user, c.weight.slot)
        delta = delta[kept.get(out_space, np.arange(w2.shape[0]))]
        w_now, b_now = weight_matrix(model, layer)
        write_weights(model, layer, w_now, b_now + delta)
        done += 1
    return done, skipped


# ----------------------------------------------------------------------------- least squares


def _waves(model: onnx.ModelProto, consumers: Sequence[Consumer]) -> list[list[Consumer]]:
    """Consumers in rounds: no consumer depends on another of its own round."""
    producer = {o: k for k, n in enumerate(model.graph.node) for o in n.output if o}
    wave: dict[int, int] = {}
    nodes = {c.node for c in consumers}
    for c in sorted(consumers, key=lambda c: c.node):
        seen, stack, depth = set(), [model.graph.node[c.node].input[0]], 0
        while stack:
            k = producer.get(stack.pop())
            if k is None or k in seen:
                continue
            seen.add(k)
            if k in nodes and k != c.node:
                depth = max(depth, wave.get(k, 0) + 1)
            stack.extend(i for i in model.graph.node[k].input if i)
        wave[c.node] = depth
    rounds: dict[int, list[Consumer]] = {}
    for c in consumers:
        rounds.setdefault(wave[c.node], []).append(c)
    return [rounds[k] for k in sorted(rounds)]


def _targets(layer: Layer, y: np.ndarray, kept_out: np.ndarray) -> np.ndarray:
    return y[..., kept_out] if layer.kind in ("Gemm", "MatMul") else y[:, kept_out]


def _fit_wave(
    pruned: onnx.ModelProto, reference: onnx.ModelProto, wave: list[tuple[Consumer, Layer, np.ndarray]],
    samples: Samples, options: RefitOptions, rng: np.random.Generator,
    kept: Mapping[ChannelSpace, np.ndarray] | None = None,
) -> list[float]:
    """Fit one round of layers (inputs from ``pruned``, or with ``kept`` from ``reference``); returns fit dBs."""
    inputs = {c.node: pruned.graph.node[layer.node].input[0] for c, layer, _ in wave}
    targets = [layer.output for _, layer, _ in wave]
    if kept is None:
        ref, cur = TensorRunner(reference, targets), TensorRunner(pruned, list(inputs.values()))
    else:
        ref = cur = TensorRunner(reference, targets + list(inputs.values()))
    kernels = {c.node: tuple(current(pruned, layer.node, layer.weight_slot).shape[2:]) for c, layer, _ in wave}
    fits = {c.node: ChannelFit() if c.kind == "Depthwise" else DenseFit() for c, _, _ in wave}
    for sample in samples:
        ys = ref.run(sample)
        xs = ys if cur is ref else cur.run(sample)
        for c, layer, kept_out in wave:
            target = _targets(layer, ys[layer.output], kept_out)
            x = xs[inputs[c.node]]
            if kept is not None and c.data in kept:
                x = np.take(x, kept[c.data], axis=c.data.axis)
            design, target = rows(pruned.graph.node[layer.node], layer.kind, kernels[c.node], x.astype(np.float64),
                                  target.astype(np.float64), options.rows * max(1, target.shape[0]), rng)
            if layer.bias_node >= 0:
                design = np.concatenate([design, np.ones((*design.shape[:-1], 1))], axis=-1)
            fits[c.node].add(design, target)
    quality = []
    for c, layer, _ in wave:
        w0, b0 = weight_matrix(pruned, layer)
        with_bias = layer.bias_node >= 0
        prior = np.hstack([w0, b0[:, None]]) if with_bias else w0
        theta, db = fits[c.node].solve(prior, options.ridge)
        quality.append(db)
        write_weights(pruned, layer, theta[:, :-1] if with_bias else theta, theta[:, -1] if with_bias else None)
    return quality


def refit_layers(
    pruned: onnx.ModelProto,
    reference: onnx.ModelProto,
    consumers: Sequence[Consumer],
    kept: Mapping[ChannelSpace, np.ndarray],
    samples: Samples,
    options: RefitOptions,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[list[float], list[str]]:
    """Re-fit each consumer of ``pruned`` to reproduce ``reference``'s output (in place).

    ``progress("re-fitting layers", done, total)`` is called before the first round of layers
    and after each (``done`` counts the layers of the rounds finished, ``total`` all of them).

    Returns:
        The fit of each re-fitted layer (dB, see :func:`_fit_db`) and the reasons for those skipped.
    """
    rng = np.random.default_rng(options.seed)
    fits, skipped = [], []
    rounds = _waves(pruned, consumers) if options.sequential else [list(consumers)]
    tick = progress or (lambda _label, _done, _total: None)
    done, total = 0, sum(len(wave) for wave in rounds)
    tick(REFIT_LABEL, done, total)
    for wave in rounds:
        todo = []
        for c in wave:
            problem = refit_problem(pruned.graph.node[c.node], c.kind, current(pruned, c.node, 1))
            if problem is not None:
                skipped.append(problem)
                continue
            layer = ensure_bias(pruned, layer_of(pruned, c.node, c.kind))
            axis = out_axis(c.kind, layer.trans_b)
            full = int(current(reference, c.node, 1).shape[axis])
            out_space = ChannelSpace(c.weight.tensor, axis, full, c.weight.user, c.weight.slot)
            todo.append((c, layer, kept.get(out_space, np.arange(full))))
        if todo:
            fits += _fit_wave(pruned, reference, todo, samples, options, rng, None if options.sequential else kept)
        done += len(wave)
        tick(REFIT_LABEL, done, total)
    return fits, skipped
