"""Steps 1-3 of the full conversion (see :mod:`passes.fp16._convert`): scopes and plans, votes,
and the precision each tensor is produced in (its *home*)."""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any

import onnx

from passes._graph import NameAllocator, iter_subgraphs, subgraph_outer_inputs
from passes.fp16._facts import FLOAT, FLOAT16, FP16_MAX, LossCounts, ModelFacts
from passes.fp16._plan import NodePlan, Planner

__all__ = ["ConversionResult", "Scope", "HomeAssigner"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Scope:
    """One graph being converted: the main graph, an If branch or a Loop/Scan body.

    Attributes:
        graph: the graph.
        kind: ``main``, ``branch`` (If) or ``body`` (Loop/Scan).
        producer: output name -> node, for this graph's nodes.
        out_wants: per graph output, the type it must have (``None``: not fixed yet).
        new_nodes: Casts to add to this graph.
        children: per control-flow node (by ``id``), the scopes of its subgraphs.
    """

    graph: onnx.GraphProto
    kind: str  # "main", "branch" (If) or "body" (Loop/Scan)
    producer: dict[str, onnx.NodeProto]
    out_wants: list[int | None]
    new_nodes: list[onnx.NodeProto] = dataclasses.field(default_factory=list)
    children: dict[int, list[Scope]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ConversionResult:
    """Counters and lists of one conversion."""

    nodes_fp16: int = 0
    casts_inserted: int = 0
    constants_converted: int = 0
    kept: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    out_of_range: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    losses: LossCounts = dataclasses.field(default_factory=LossCounts)
    retyped: int = 0  # tensors whose element type changed

    @property
    def changed(self) -> bool:
        return bool(self.retyped or self.casts_inserted)


class HomeAssigner:
    """Builds scopes, plans every node, collects votes and assigns homes."""

    def __init__(self, model: onnx.ModelProto, facts: ModelFacts, planner: Planner, *, keep_io_types: bool) -> None:
        self.model, self.facts, self.planner, self.keep_io = model, facts, planner, keep_io_types
        self.types = facts.types
        self.alloc = NameAllocator(model.graph)
        self.plans: dict[int, NodePlan] = {}
        self.scopes: list[Scope] = []
        self.scope_of: dict[str, Scope] = {}
        self.votes: dict[str, set[int]] = collections.defaultdict(set)
        self.home: dict[str, int | None] = {}
        self.home_name: dict[str, str] = {}
        self.versions: dict[str, dict[int, str]] = collections.defaultdict(dict)
        self.final: dict[str, int] = {}
        self.result = ConversionResult()

    # -- 1. scopes and plans ------------------------------------------------------------------
    def build(self, graph: onnx.GraphProto, kind: str) -> Scope:
        listed = {v.name for v in graph.input}
        wants: list[int | None] = [self._output_want(kind, o.name) for o in graph.output]
        scope = Scope(graph, kind, {}, wants)
        self.scopes.append(scope)
        for name in (*listed, *(t.name for t in graph.initializer)):
            self.scope_of[name] = scope
        for node in graph.node:
            plan = self.planner.plan(node)
            self.plans[id(node)] = plan
            for out in node.output:
                if out:
                    scope.producer[out] = node
                    self.scope_of[out] = scope
            if plan.kind == "control":
                sub_kind = "branch" if node.op_type == "If" else "body"
                scope.children[id(node)] = [self.build(sub, sub_kind) for sub in iter_subgraphs(node)]
        return scope

    def _output_want(self, kind: str, name: str) -> int | None:
        original = self.types.get(name)
        if kind == "branch":
            return None  # decided with the If's outputs
        if kind == "main" and original == FLOAT and not self.keep_io:
            return FLOAT16
        return original

    # -- 2. votes -------------------------------------------------------------------------------
    def collect_votes(self) -> None:
        for scope in self.scopes:
            for node in scope.graph.node:
                plan = self.plans[id(node)]
                for name, want in zip(node.input, plan.wants):
                    if name and isinstance(want, int):
                        self.votes[name].add(want)
                if plan.kind == "untouched":
                    for sub in iter_subgraphs(node):
                        for name in subgraph_outer_inputs(sub):
                            if isinstance(self.types.get(name), int):
                                self.votes[name].add(self.types[name])
            for out, want in zip(scope.graph.output, scope.out_wants):
                if want is not None:
                    self.votes[out.name].add(want)

    # -- 3. homes -------------------------------------------------------------------------------
    def assign_homes(self, scope: Scope) -> None:
        listed = {v.name for v in scope.graph.input}
        initializers = {t.name for t in scope.graph.initializer}
        for value in scope.graph.input:
            self._set_home(value.name, self._input_home(scope, value.name))
        for name in initializers - listed:
            self._set_home(name, self._constant_home(name))
        for node in scope.graph.node:
            plan = self.plans[id(node)]
            if plan.kind == "control":
                for child in scope.children[id(node)]:
                    self.assign_homes(child)
            homes = self._node_homes(node, plan, scope)
            for out, home in zip(node.output, homes):
                if out:
                    self._set_home(out, home)

    def _set_home(self, name: str, home: int | None) -> None:
        self.home[name] = home
        self.home_name.setdefault(name, name)
        if home is not None:
            self.final[name] = home
        if home != self.types.get(name):
            self.result.retyped += 1

    def _input_home(self, scope: Scope, name: str) -> int | None:
        original = self.types.get(name)
        if scope.kind != "main" or original != FLOAT or self.keep_io:
            return original
        default = self.facts.defaults.get(name)  # an initializer listed as an input
        if default is not None and default.max_abs > FP16_MAX:
            self._out_of_range(name, default.kind, default.max_abs)
            return FLOAT
        return FLOAT16

    def _out_of_range(self, name: str, kind: str, max_abs: float) -> None:
        self.result.out_of_range.append({"tensor": name, "kind": kind, "max_abs": max_abs})
        log.debug("%s %s kept float32: max |x| %.3g > 65504", kind, name, max_abs)

    def _constant_home(self, name: str) -> int | None:
        info = self.facts.constants.get(name)
        if info is None:
            return self.types.get(name)
        if info.max_abs > FP16_MAX:
            self._out_of_range(name, info.kind, info.max_abs)
            return FLOAT
        votes = self.votes.get(name, set())
        return FLOAT16 if FLOAT16 in votes and FLOAT not in votes else FLOAT

    def _node_homes(self, node: onnx.NodeProto, plan: NodePlan, scope: Scope) -> list[int | None]:
        originals = [self.types.get(o) for o in node.output]
        if plan.kind == "constant":
            return [self._constant_home(node.output[0])]
        if plan.kind == "cast":
            votes = self.votes.get(node.output[0], set())
            convert = originals[0] == FLOAT and FLOAT16 in votes and FLOAT not in votes
            return [FLOAT16 if convert else originals[0]]
        if plan.kind == "control" and node.op_type == "If":
            return self._if_homes(node, scope.children[id(node)], originals)
        return [FLOAT16 if fp16 else t for fp16, t in zip(plan.out_fp16, originals)]

    def _if_homes(self, node: onnx.NodeProto, branches: list[Scope], originals: list[int | None]) -> list[int | None]:
        homes: list[int | None] = []
        for k, original in enumerate(originals):
            branch_homes = {self.home.get(b.graph.output[k].name) for b in branches}
            home = FLOAT16 if original == FLOAT and branch_homes == {FLOAT16} else original
            for branch in branches:
                branch.out_wants[k] = home
            homes.append(home)
        return homes
