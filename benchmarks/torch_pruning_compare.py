"""Our ONNX-side channel pruning next to Torch-Pruning on the same networks, ratio and criterion.

Run (from the repository root; needs the ``recipe`` extra: torch, and ``pip install torch-pruning``)::

    python -m benchmarks.torch_pruning_compare [lenet5|resnet18|mobilenet_v2 ...] [--ratio R]

Networks: LeNet-5 from ``models/recipes/lenet5_digits.py`` carrying the bundled model's trained
weights; ResNet-18 and MobileNetV2 written here in plain torch with torchvision's layouts, seeded
*random* weights (torchvision is not installed: it would pull another torch build). A structural
comparison does not need trained weights; accuracy is compared on LeNet-5 only.

Each network is handled twice from the same weights:

- **Torch-Pruning** (``MagnitudePruner``, ``MagnitudeImportance(p=1)`` = L1, per-layer ratio,
  no rounding, the classifier in ``ignored_layers``), stepped interactively to record every
  group's root layer and the channel indices it removes;
- **ours**: the unpruned network exported to ONNX (opset 13, BatchNorm kept as nodes so that the
  L1 criterion sees the same tensors as Torch-Pruning's), simplified without BN folding, pruned
  with ``PruneOptions(ratio, criterion="l1", per_layer=True, round_to=1)``.

Compared: the groups (matched by layer: ONNX node ``/layer1/layer1.0/conv1/Conv`` is module
``layer1.0.conv1``; Torch-Pruning's root may be any producer or depthwise conv of our group),
channels before and after, whether the removed indices are the same, and the
parameter count of both results *in ONNX* (the Torch-Pruning result is exported the same way,
so both counts include BN running statistics), plus Torch-Pruning's own torch parameter count.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch_pruning as tp  # noqa: E402
from torch import nn  # noqa: E402

from models.recipes import lenet5_digits as recipe  # noqa: E402
from onnxslim.report import markdown_table  # noqa: E402
from onnxslim.runtime import make_session  # noqa: E402
from passes._base import RunContext  # noqa: E402
from passes.prune import PruneOptions  # noqa: E402
import passes.prune._importance as importance  # noqa: E402
from passes.prune._apply import apply_removal  # noqa: E402
from passes.prune._cost import count_params  # noqa: E402
from passes.prune._prune import plan_pruning  # noqa: E402
from passes.simplify import SimplifyOptions, SimplifyPass  # noqa: E402

__all__ = ["resnet18", "mobilenet_v2", "lenet5", "compare", "main"]


# ----------------------------------------------------------------------------- networks


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class _ResNet18(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, c_in = (64, 128, 256, 512), 64
        for k, width in enumerate(widths):
            stride = 1 if k == 0 else 2
            setattr(self, f"layer{k + 1}", nn.Sequential(_BasicBlock(c_in, width, stride), _BasicBlock(width, width, 1)))
            c_in = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class _InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers = [] if expand == 1 else [_conv_bn(c_in, hidden, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, c_out, 1, bias=False),
                   nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class _MobileNetV2(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        config = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        c_in = 32
        for expand, c_out, repeats, stride in config:
            for k in range(repeats):
                layers.append(_InvertedResidual(c_in, c_out, stride if k == 0 else 1, expand))
                c_in = c_out
        layers.append(_conv_bn(c_in, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights, BN statistics included (so BN is not an identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.normal_(0, 0.1, generator=generator)
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


def resnet18() -> tuple[nn.Module, torch.Tensor, nn.Module]:
    """ResNet-18 (random weights), its example input and its classifier."""
    model = _randomize(_ResNet18(), 0)
    return model, torch.zeros(1, 3, 224, 224), model.fc


def mobilenet_v2() -> tuple[nn.Module, torch.Tensor, nn.Module]:
    """MobileNetV2 (random weights), its example input and its classifier."""
    model = _randomize(_MobileNetV2(), 0)
    return model, torch.zeros(1, 3, 224, 224), model.classifier[1]


def lenet5() -> tuple[nn.Module, torch.Tensor, nn.Module]:
    """The recipe's LeNet-5 carrying the bundled ONNX model's trained weights."""
    model = recipe.build_model()
    onnx_model = onnx.load(str(REPO / "models" / "lenet5_digits.onnx"))
    weights = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in onnx_model.graph.initializer}
    model.load_state_dict(weights)
    return model.eval(), torch.zeros(1, 1, 32, 32), model.fc3


NETWORKS = {"lenet5": lenet5, "resnet18": resnet18, "mobilenet_v2": mobilenet_v2}


# ----------------------------------------------------------------------------- both sides


def module_of(node_name: str) -> str:
    """Torch module path of an exported node: ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``."""
    parts: list[str] = []
    previous = ""
    for segment in node_name.strip("/").split("/")[:-1]:
        parts.append(segment[len(previous) + 1:] if previous and segment.startswith(previous + ".") else segment)
        previous = segment
    return ".".join(parts)


def _export(model: nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=13, do_constant_folding=True,
                          training=torch.onnx.TrainingMode.PRESERVE, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


def _onnx_params(model: onnx.ModelProto) -> int:
    return count_params(model)  # initializers and Constant tensors alike


def _simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    return SimplifyPass(SimplifyOptions(fold_batchnorm=False)).apply(model, RunContext()).model


def torch_pruning_side(model: nn.Module, example: torch.Tensor, classifier: nn.Module, ratio: float) -> dict[str, Any]:
    """Torch-Pruning's groups (root -> channels before, removed indices) and its result."""
    names = {m: n for n, m in model.named_modules()}
    pruned = copy.deepcopy(model)
    copies = dict(pruned.named_modules())
    ignored = [copies[names[classifier]]]
    importance = tp.importance.MagnitudeImportance(p=1)
    pruner = tp.pruner.MagnitudePruner(pruned, example, importance=importance, pruning_ratio=ratio, ignored_layers=ignored)
    back = {m: n for n, m in pruned.named_modules()}
    groups = {}
    for group in pruner.step(interactive=True):
        root = group[0].dep.target.module
        groups[back[root]] = (pruner.DG.get_out_channels(root), sorted(int(i) for i in group[0].idxs))
        group.prune()
    all_groups = len(list(tp.DependencyGraph().build_dependency(model, example).get_all_groups(
        ignored_layers=[classifier], root_module_types=[nn.Conv2d, nn.Linear])))
    macs, params = tp.utils.count_ops_and_params(pruned, example)
    return {"groups": groups, "all_groups": all_groups, "torch_params": int(params), "model": pruned,
            "onnx": _simplify(_export(pruned.eval(), example))}


@contextlib.contextmanager
def _magnitude_roles(roles: frozenset[str]) -> Iterator[None]:
    """Temporarily score with other parameter roles (to mimic Torch-Pruning's choice)."""
    saved = importance.MAGNITUDE_ROLES
    importance.MAGNITUDE_ROLES = roles
    try:
        yield
    finally:
        importance.MAGNITUDE_ROLES = saved


def ours_side(model: nn.Module, example: torch.Tensor, ratio: float, *, like_tp: bool = False) -> dict[str, Any]:
    """Our groups (root -> channels before, removed indices) and the pruned ONNX model.

    ``like_tp`` leaves depthwise kernels out of the L1 score, as Torch-Pruning 1.6.1's
    ``MagnitudeImportance`` does (ours counts them: they are weights of the group).
    """
    exported = _simplify(_export(model, example))
    roles = importance.MAGNITUDE_ROLES - {"dw"} if like_tp else importance.MAGNITUDE_ROLES
    with _magnitude_roles(roles):
        plan = plan_pruning(exported, PruneOptions(ratio=ratio, per_layer=True, round_to=1), None)
    groups = {}
    for group in plan.groups.groups:
        removed = plan.removal.get(group.id)
        if not group.prunable or removed is None or not len(removed):
            continue
        producer = next(p for p in group.params if p.role == "out")
        indices = np.sort(group.indices[producer.space][removed].reshape(-1))
        roots = tuple(module_of(n) for n in group.nodes("out", "dw"))  # Torch-Pruning may root a group at its depthwise conv
        groups[roots] = (group.size, [int(i) for i in indices])
    prunable = sum(1 for g in plan.groups.groups if g.prunable)
    apply_removal(plan.model, plan.groups, plan.removal)
    return {"groups": groups, "prunable": prunable, "frozen": len(plan.groups.groups) - prunable,
            "onnx_before": exported, "onnx": plan.model}


def compare(name: str, ratio: float) -> dict[str, Any]:
    """Both sides on network ``name``; returns the figures and the per-group matching."""
    model, example, classifier = NETWORKS[name]()
    theirs = torch_pruning_side(model, example, classifier, ratio)
    ours = ours_side(model, example, ratio)
    like_tp = ours_side(model, example, ratio, like_tp=True)["groups"]
    same_like_tp = sum(1 for roots, (_, removed) in like_tp.items()
                       if any(theirs["groups"].get(r, (0, None))[1] == removed for r in roots))
    matched, rows = set(), []
    for roots, (size, removed) in ours["groups"].items():
        root = next((r for r in roots if r in theirs["groups"]), None)
        if root is None:
            rows.append([" + ".join(roots), size, len(removed), "-", "-", "no Torch-Pruning group"])
            continue
        matched.add(root)
        their_size, their_removed = theirs["groups"][root]
        rows.append([" + ".join(roots), size, len(removed), their_size, len(their_removed),
                     "same" if their_removed == removed else "differ"])
    for root, (size, removed) in theirs["groups"].items():
        if root not in matched:
            rows.append([root, "-", "-", size, len(removed), "only Torch-Pruning"])
    return {"name": name, "rows": rows, "ours": ours, "theirs": theirs, "same_like_tp": same_like_tp}


def _accuracy_lenet(model: onnx.ModelProto | nn.Module) -> float:
    test = np.load(REPO / "models" / "lenet5_digits_test.npz")
    if isinstance(model, nn.Module):
        with torch.no_grad():
            logits = model(torch.from_numpy(test["input"])).numpy()
    else:
        session = make_session(model)
        logits = session.run(None, {session.get_inputs()[0].name: test["input"]})[0]
    return float(np.mean(logits.argmax(axis=1) == test["labels"]))


def _summary(result: dict[str, Any]) -> list[Any]:
    ours, theirs = result["ours"], result["theirs"]
    same = sum(1 for r in result["rows"] if r[-1] == "same")
    return [result["name"], f"{_onnx_params(ours['onnx_before']):,}", f"{theirs['torch_params']:,}",
            f"{_onnx_params(theirs['onnx']):,}", f"{_onnx_params(ours['onnx']):,}",
            f"{len(theirs['groups'])} / {theirs['all_groups']}", f"{len(ours['groups'])} / {ours['prunable']} (+{ours['frozen']} frozen)",
            f"{same} of {len(result['rows'])}", f"{result['same_like_tp']} of {len(result['rows'])}"]


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"networks (default all): {', '.join(NETWORKS)}")
    parser.add_argument("--ratio", type=float, help="pruning ratio (default 0.5 for lenet5, 0.3 otherwise)")
    parser.add_argument("--groups", action="store_true", help="also print the per-group matching")
    args = parser.parse_args(argv)
    results = []
    for name in args.names or list(NETWORKS):
        if name not in NETWORKS:
            parser.error(f"unknown network {name!r}; choose from {', '.join(NETWORKS)}")
        results.append(compare(name, args.ratio or (0.5 if name == "lenet5" else 0.3)))
    header = ["network", "params (ONNX, unpruned)", "Torch-Pruning (torch params)", "Torch-Pruning (ONNX)",
              "ours (ONNX)", "TP groups pruned / all", "our groups pruned / prunable", "same removed channels",
              "same, depthwise kernels out of the score"]
    print(markdown_table(header, [_summary(r) for r in results]))
    for r in results:
        if r["name"] == "lenet5":
            print(f"\nlenet5 accuracy (test split, no training): unpruned {_accuracy_lenet(r['ours']['onnx_before']):.4f}, "
                  f"Torch-Pruning {_accuracy_lenet(r['theirs']['model']):.4f}, ours {_accuracy_lenet(r['ours']['onnx']):.4f}")
        if args.groups:
            print(f"\n{r['name']}:\n")
            print(markdown_table(["our root(s)", "ours", "ours removed", "TP", "TP removed", "indices"], r["rows"]))


if __name__ == "__main__":  # pragma: no cover
    main()
