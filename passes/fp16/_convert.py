"""Full conversion: type every float tensor edge by its producer's precision, cast where they differ.

Steps, over the main graph and every If/Loop/Scan body (a *scope* each):

1. **Plan** every node (:mod:`passes.fp16._plan`).
2. **Votes**: every input slot with a fixed wanted type votes for that type on its tensor;
   so do main-graph outputs (float32 with ``keep_io_types``, else float16) and Loop/Scan body
   outputs (their declared type).
3. **Homes**: the precision each tensor is produced in. A converted node's converted outputs
   are float16; a constant (initializer or ``Constant`` node) is float16 when only float16
   was voted for it and it fits (|x| <= 65504); an existing ``Cast(to=FLOAT)`` becomes
   ``to=FLOAT16`` only when nobody wants its float32 result; an If output is float16 when every
   branch produces it in float16; graph inputs stay float32 with ``keep_io_types``.
4. **Wiring**: every slot reads the *version* of its tensor in the type it wants. A version is
   made once per (tensor, type) by a Cast placed in the tensor's own scope and reused by all
   readers, in any nested scope; the float16 version of a ``Cast(to=FLOAT)`` output is cast
   from that Cast's input instead (no Cast→Cast chain). A main-graph output whose home differs
   from its wanted type keeps its name on the final Cast; its producer's output is renamed.
5. **Rewrite**: constants to float16 data, Cast ``to`` attributes, ConstantOfShape values,
   declared types (inputs, outputs, value_info); each new Cast goes right after the node that
   produces its input, so every graph stays topologically sorted.

Steps 1–3 live in :mod:`passes.fp16._homes`.
"""

from __future__ import annotations

import logging

import onnx
from onnx import helper, numpy_helper

from passes._graph import is_onnx_domain, iter_subgraphs, replace_uses, subgraph_outer_inputs
from passes.fp16._facts import FLOAT, FLOAT16, ModelFacts, constant_attr_value, insert_after_sources, to_fp16
from passes.fp16._homes import ConversionResult, HomeAssigner, Scope
from passes.fp16._plan import Planner, node_label

__all__ = ["ConversionResult", "convert_model"]

log = logging.getLogger(__name__)

_SUFFIX = {FLOAT: "fp32", FLOAT16: "fp16"}


class _Converter(HomeAssigner):
    """Steps 4 (wiring) and 5 (rewrite) on top of the planning and homes of :class:`HomeAssigner`."""

    # -- 4. wiring ------------------------------------------------------------------------------
    def _cast_node(self, source: str, target: str, to: int, hint: str) -> onnx.NodeProto:
        self.result.casts_inserted += 1
        self.final[target] = to
        name = self.alloc.fresh(f"{hint}_cast_{_SUFFIX.get(to, to)}")
        log.debug("cast %s -> %s (%s)", source, target, _SUFFIX.get(to, to))
        return helper.make_node("Cast", [source], [target], name=name, to=to)

    def rename_main_outputs(self, main: Scope) -> None:
        """Give a main-graph output whose home differs from its wanted type a final Cast."""
        done: set[str] = set()
        for out, want in zip(main.graph.output, main.out_wants):
            name, home = out.name, self.home.get(out.name)
            if want is None or home is None or home == want or name in done:
                continue
            done.add(name)
            fresh = self.alloc.fresh(f"{name}_{_SUFFIX.get(home, home)}")
            if not self._rename_definition(main, name, fresh):
                log.debug("output %s is a graph input; its type follows the input", name)
                continue
            self.home_name[name] = fresh
            self.final[fresh] = home
            main.new_nodes.append(self._cast_node(fresh, name, want, hint=name))
            self.versions[name][want] = name
            info = main.graph.value_info.add()
            info.CopyFrom(out)
            info.name = fresh
            info.type.tensor_type.elem_type = home

    @staticmethod
    def _rename_definition(scope: Scope, name: str, fresh: str) -> bool:
        node = scope.producer.get(name)
        if node is not None:
            node.output[list(node.output).index(name)] = fresh
            return True
        listed = {v.name for v in scope.graph.input}
        for init in scope.graph.initializer:
            if init.name == name and name not in listed:
                init.name = fresh
                return True
        return False

    def resolve(self, name: str, want: int | None) -> str:
        """The name of ``name``'s version in type ``want`` (made once, by a Cast, when missing)."""
        current = self.home_name.get(name, name)
        if not name or want is None or self.home.get(name) == want:
            return current
        if want in self.versions[name]:
            return self.versions[name][want]
        scope = self.scope_of.get(name, self.scopes[0])
        source = current
        producer = scope.producer.get(name)
        if want == FLOAT16 and self._is_widening_cast(producer):
            inner = producer.input[0]
            if self.home.get(inner) == FLOAT16:
                self.versions[name][want] = self.home_name.get(inner, inner)
                return self.versions[name][want]
            source = self.home_name.get(inner, inner)
        target = self.alloc.fresh(f"{name}_{_SUFFIX.get(want, want)}")
        scope.new_nodes.append(self._cast_node(source, target, want, hint=name))
        self.versions[name][want] = target
        return target

    def _is_widening_cast(self, node: onnx.NodeProto | None) -> bool:
        """An existing Cast to float32 from a numeric type: its fp16 version is cast from its input."""
        if node is None or node.op_type != "Cast" or not is_onnx_domain(node):
            return False
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        return to == FLOAT and self.types.get(node.input[0]) not in (None, onnx.TensorProto.STRING)

    def wire_node(self, node: onnx.NodeProto) -> None:
        """Point each input slot of ``node`` at the version of its tensor that the slot wants."""
        plan = self.plans[id(node)]
        groups: dict[str, list[int]] = {}
        for slot, (name, want) in enumerate(zip(list(node.input), plan.wants)):
            if not name:
                continue
            if isinstance(want, str):
                groups.setdefault(want, []).append(slot)
            else:
                node.input[slot] = self.resolve(name, want)
        for slots in groups.values():
            homes = {self.home.get(node.input[s]) for s in slots}
            for slot in slots:  # a flexible variable reads as is when its slots agree, else float32
                name = node.input[slot]
                mixed = len(homes) > 1 and self.home.get(name) == FLOAT16
                node.input[slot] = self.resolve(name, FLOAT if mixed else None)
        if plan.kind == "untouched":
            self._wire_untouched(node)

    def _wire_untouched(self, node: onnx.NodeProto) -> None:
        for sub in iter_subgraphs(node):
            for name in subgraph_outer_inputs(sub):
                original = self.types.get(name)
                new = self.resolve(name, original if isinstance(original, int) else None)
                if new != name:
                    replace_uses(sub, name, new)
                    for out in sub.output:
                        if out.name == name:
                            out.name = new

    def wire_outputs(self, scope: Scope) -> None:
        """Make each output of an If branch or Loop/Scan body the version its node expects."""
        for out, want in zip(scope.graph.output, scope.out_wants):
            home = self.home.get(out.name)
            if want is None or home is None:
                continue
            if home == want:
                new = self.home_name.get(out.name, out.name)
            elif self.scope_of.get(out.name) is scope:
                new = self.resolve(out.name, want)
            else:  # an outer value: cast it inside, so the body's output is its own
                new = self.alloc.fresh(f"{out.name}_{_SUFFIX.get(want, want)}")
                source = self.home_name.get(out.name, out.name)
                scope.new_nodes.append(self._cast_node(source, new, want, hint=out.name))
            out.name = new
            if out.type.HasField("tensor_type"):
                out.type.tensor_type.elem_type = want
            self.final[new] = want

    # -- 5. rewrite -----------------------------------------------------------------------------
    def rewrite(self, scope: Scope) -> None:
        """Convert constants and attributes, fix declared types, add the Casts, sort."""
        graph = scope.graph
        for init in graph.initializer:
            if init.data_type == FLOAT and self.home.get(init.name) == FLOAT16:
                array = to_fp16(numpy_helper.to_array(init), self.result.losses)
                init.CopyFrom(numpy_helper.from_array(array, init.name))
                self.result.constants_converted += 1
        for node in graph.node:
            self._rewrite_node(node)
        for value in (*graph.input, *graph.output, *graph.value_info):
            final = self.final.get(value.name)
            tensor = value.type.tensor_type if value.type.HasField("tensor_type") else None
            if final in (FLOAT, FLOAT16) and tensor is not None and tensor.elem_type in (FLOAT, FLOAT16):
                tensor.elem_type = final
        if scope.new_nodes:
            insert_after_sources(graph, scope.new_nodes)

    def _rewrite_node(self, node: onnx.NodeProto) -> None:
        plan = self.plans.get(id(node))
        if plan is None:
            return  # a Cast this pass added
        out_home = self.home.get(node.output[0]) if node.output else None
        if plan.kind == "constant" and out_home == FLOAT16 and self.types.get(node.output[0]) == FLOAT:
            array = to_fp16(constant_attr_value(node), self.result.losses)
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(array)))
            self.result.constants_converted += 1
        elif plan.kind == "cast" and out_home == FLOAT16 and self.types.get(node.output[0]) == FLOAT:
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = FLOAT16
            self.result.nodes_fp16 += 1
        elif plan.kind == "fp16":
            if node.op_type == "ConstantOfShape":
                _constant_of_shape_fp16(node, self.result)
            self.result.nodes_fp16 += 1
        if plan.reason is not None:
            entry = {"node": node_label(node), "op": node.op_type, "reason": plan.reason, **(plan.detail or {})}
            self.result.kept.append(entry)
            self.result.reasons[plan.reason] += 1
            log.debug("kept fp32: %s (%s): %s", entry["node"], node.op_type, plan.reason)


def _constant_of_shape_fp16(node: onnx.NodeProto, result: ConversionResult) -> None:
    for attr in node.attribute:
        if attr.name == "value":
            array = to_fp16(numpy_helper.to_array(attr.t), result.losses)
            attr.t.CopyFrom(numpy_helper.from_array(array))
            return
    node.attribute.append(helper.make_attribute("value", helper.make_tensor("value", FLOAT16, [1], [0.0])))


def convert_model(
    model: onnx.ModelProto, facts: ModelFacts, planner: Planner, *, keep_io_types: bool
) -> ConversionResult:
    """Convert ``model`` to float16 in place (steps 1–5 of the module docstring)."""
    converter = _Converter(model, facts, planner, keep_io_types=keep_io_types)
    main = converter.build(model.graph, "main")
    converter.collect_votes()
    converter.assign_homes(main)
    converter.rename_main_outputs(main)
    for scope in converter.scopes:
        for node in scope.graph.node:
            converter.wire_node(node)
        if scope.kind != "main":
            converter.wire_outputs(scope)
    for scope in reversed(converter.scopes):  # innermost first: sorting a graph copies its nodes
        converter.rewrite(scope)
    return converter.result
