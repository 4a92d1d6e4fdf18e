"""Find a model's permutation groups by tracing it with torch.fx (:func:`rpgen.align.spec_from_model`).

Every traced tensor that holds hidden units carries the union-find id of their group, the axis
holding them (negative, counted from the end as broadcasting aligns), its number of axes when
known, and its block (after a flatten). Group ``FIXED`` is everything that must not move: the
model's inputs and outputs and whatever is summed with them. The groups and the rules of layers
with weights are :class:`rpgen.align.groups.UnitGroups`; this module says which rule each node follows.

Supported:

- Linear, Conv1d/2d/3d (``groups=1``): the output axis opens a group (weight and bias axis 0) and
  the weight's input axis (1) joins the group of the tensor read; nn.Embedding opens a group
  (weight axis 1). A module called twice shares its groups across the calls.
- BatchNorm1d/2d/3d (weight, bias, running_mean, running_var), LayerNorm over the last axis,
  GroupNorm with one group or one group per channel: their vectors join their input's group.
- elementwise activations, dropout, Identity; avg/max/adaptive pooling; mean/sum/amax over other
  axes; flatten (``block`` = the size of the flattened axes after the units), and
  ``view/reshape(x.size(0), -1)`` as a flatten; contiguous/clone/detach/float/to.
- add/sub/mul/div of two tensors: their groups become one (a residual sum); by a number: the
  group passes through; with a tensor that holds no units (the input): the group is fixed.
- anything reaching an output is fixed (so the last layer's outputs are never permuted).

Refused, in one :class:`RpgenError` line naming the node: anything else touching hidden units
(matmul between activations, attention, other views and reshapes, cat, indexing, transpose,
softmax, grouped convolutions, an unknown module or function). Operations on tensors without
hidden units (the input, sizes) are free. Without ``example_input``, conv inputs are assumed batched
and a BatchNorm1d/GroupNorm of unknown input rank is assumed to see its units on axis 1.
"""

from __future__ import annotations

import math
import operator
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node, symbolic_trace
from torch.fx.node import _get_qualified_name
from torch.fx.passes.shape_prop import ShapeProp

from rpgen.align.groups import FIXED, Entry, Refused, UnitGroups, Units
from rpgen.errors import RpgenError, first_line

ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Softplus, nn.Hardswish,
                       nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
ELEMENTWISE_FUNCTIONS = {torch.relu, torch.tanh, torch.sigmoid, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu,
                         F.mish, F.softplus, F.hardswish, F.hardtanh, F.tanh, F.sigmoid, F.dropout, F.dropout1d,
                         F.dropout2d}
ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid", "relu_", "tanh_", "sigmoid_"}
POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
POOL_FUNCTIONS = {F.avg_pool1d: 1, F.avg_pool2d: 2, F.max_pool1d: 1, F.max_pool2d: 2, F.adaptive_avg_pool1d: 1,
                  F.adaptive_avg_pool2d: 2, torch.avg_pool1d: 1, torch.max_pool1d: 1, torch.max_pool2d: 2}
BINARY_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
                    operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div}
BINARY_METHODS = {"add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_"}
REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax}
PASS_METHODS = {"contiguous", "clone", "detach", "float", "to"}
SIZE_METHODS = {"size", "dim"}


def trace_groups(model: nn.Module, example_input: torch.Tensor | tuple | None = None
                 ) -> tuple[dict[str, int], list[Entry]]:
    """Group sizes and ``(key, axis, group, block)`` entries of ``model``; the rules are in the module docstring."""
    try:
        graph_module = symbolic_trace(model)
    except Exception as exc:
        raise RpgenError(f"cannot trace {type(model).__name__} with torch.fx ({first_line(exc)}); "
                         "write a spec file (see rpgen.align)") from None
    if example_input is not None:
        _propagate_shapes(graph_module, model, example_input)
    tracer = _Tracer(model)
    for node in graph_module.graph.nodes:
        tracer.values[node] = tracer.visit(node)
    return tracer.result()


def _propagate_shapes(graph_module: GraphModule, model: nn.Module, example_input: torch.Tensor | tuple) -> None:
    """Record every node's output shape (``node.meta["tensor_meta"]``), in eval mode so BatchNorm
    statistics stay as they are."""
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(graph_module).propagate(*inputs)
    except Exception as exc:
        raise RpgenError(f"example_input: running {type(model).__name__} on it raised {first_line(exc)}") from None
    finally:
        for m, training in modes.items():
            m.train(training)


def _shape(node: Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def _describe(node: Node, module: nn.Module | None) -> str:
    if node.op == "call_module":
        return f"call_module {node.target}: {type(module).__name__}"
    if node.op == "call_function":
        return f"call_function {_get_qualified_name(node.target).replace('_operator.', 'operator.')}"
    return f"{node.op} {node.target}"


def _spatial(module: nn.Module) -> int:
    """1, 2 or 3 for a ``...1d/2d/3d`` module (its number of spatial axes)."""
    return int(type(module).__name__[-2])


class _Tracer(UnitGroups):
    """Which rule each node of the graph follows (the rules are in the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.modules = dict(model.named_modules())
        self.values: dict[Node, Units | None] = {}  # None: not a tensor (a size, a number)

    # --- nodes ---------------------------------------------------------------------------------

    def visit(self, node: Node) -> Units | None:
        module = self.modules.get(node.target) if node.op == "call_module" else None
        try:
            out = self._visit(node, module)
        except Refused as refused:
            why = refused.args[1] if len(refused.args) > 1 else "mixes hidden units"
            raise RpgenError(f"cannot derive permutation groups: node {node.name!r} ({_describe(node, module)}) "
                             f"{why}; write a spec file (see rpgen.align)") from None
        return self._checked(node, out)

    def _visit(self, node: Node, module: nn.Module | None) -> Units | None:
        ins = [self.values[a] for a in node.all_input_nodes]
        x = self.values.get(node.args[0]) if node.args and isinstance(node.args[0], Node) else None
        if node.op in ("placeholder", "get_attr"):
            return Units(FIXED, ndim=None)
        if node.op == "output":
            for v in ins:
                if v is not None:
                    self.union(v.group, FIXED, node)
            return None
        if isinstance(module, nn.Linear):
            return self.weighted(node, module, x, read=(1, -1, module.in_features), out_size=module.out_features)
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if self.hidden(x) and module.groups != 1:
                raise Refused(node, "is a grouped convolution")
            k = _spatial(module)
            return self.weighted(node, module, x, read=(1, -1 - k, module.in_channels), out_size=module.out_channels,
                                  out_dim=-1 - k, out_ndim=k + 2 if x is None or x.ndim is None else x.ndim)
        if isinstance(module, nn.Embedding):
            if self.hidden(x):
                raise Refused(node, "reads hidden units as indices")
            ndim = x.ndim + 1 if x is not None and x.ndim is not None else None
            return self.weighted(node, module, x, read=None, out_size=module.embedding_dim, out_axis=1, out_ndim=ndim)
        if node.op == "call_method" and node.target in SIZE_METHODS or node.target is getattr:
            return None
        if not any(self.hidden(v) for v in ins):  # nothing that moves: a fixed tensor, or arithmetic on sizes
            sizes_only = ins and all(v is None for v in ins)
            return None if sizes_only and (node.target in BINARY_FUNCTIONS or node.target is operator.getitem) \
                else Units(FIXED, ndim=x.ndim if x is not None else None)
        return self._hidden_op(node, module, x, ins)

    def _hidden_op(self, node: Node, module: nn.Module | None, x: Units | None, ins: list[Units | None]) -> Units:
        op, target = node.op, node.target
        if op == "call_function" and target in BINARY_FUNCTIONS or op == "call_method" and target in BINARY_METHODS:
            return self.binary(node, ins)
        if not self.hidden(x) or sum(self.hidden(v) for v in ins) > 1:
            raise Refused(node)
        if isinstance(module, ELEMENTWISE_MODULES) or target in ELEMENTWISE_FUNCTIONS or (
                op == "call_method" and target in ELEMENTWISE_METHODS | PASS_METHODS):
            return x
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            self.channels(node, x, None if isinstance(module, nn.BatchNorm1d) else _spatial(module),
                           module.num_features)
            return self.join(node, module, x, ("weight", "bias", "running_mean", "running_var"), block=1)
        if isinstance(module, nn.GroupNorm):
            if module.num_groups not in (1, module.num_channels):
                raise Refused(node, f"normalises {module.num_groups} groups of channels together")
            self.channels(node, x, None, module.num_channels)
            return self.join(node, module, x, ("weight", "bias"), block=1)
        if isinstance(module, nn.LayerNorm):
            if len(module.normalized_shape) != 1 or x.dim != -1:
                raise Refused(node, "normalises over more than the hidden units' axis")
            block = self.block(node, x, module.normalized_shape[0])
            return self.join(node, module, x, ("weight", "bias"), block=block)
        if isinstance(module, POOL_MODULES) or target in POOL_FUNCTIONS:
            self.channels(node, x, _spatial(module) if module is not None else POOL_FUNCTIONS[target], None)
            return x
        if isinstance(module, nn.Flatten):
            return self._flatten(node, x, module.start_dim, module.end_dim)
        if target is torch.flatten or op == "call_method" and target == "flatten":
            return self._flatten(node, x, *_args(node, ("start_dim", 0), ("end_dim", -1)))
        if op == "call_method" and target in ("view", "reshape"):
            shape = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
            if len(shape) == 2 and shape[1] == -1 and _is_batch_size(shape[0]):  # x.view(x.size(0), -1)
                return self._flatten(node, x, 1, -1)
            raise Refused(node, "reshapes hidden units")
        if target in REDUCE_FUNCTIONS or op == "call_method" and target in ("mean", "sum", "amax"):
            return self._reduce(node, x, *_args(node, ("dim", None), ("keepdim", False)))
        raise Refused(node)

    # --- shapes --------------------------------------------------------------------------------

    def _flatten(self, node: Node, x: Units, start: int, end: int) -> Units:
        if x.ndim is None:
            raise Refused(node, "flattens a tensor of unknown rank (pass example_input)")
        s, e = (d - x.ndim if d >= 0 else d for d in (start, end))
        if s >= e:
            return x
        if s < x.dim <= e:
            raise Refused(node, "flattens hidden units behind another axis")
        if x.dim > e:
            return replace(x, ndim=x.ndim - (e - s))
        if x.dim < s:
            return replace(x, dim=x.dim + (e - s), ndim=x.ndim - (e - s))
        shape = _shape(node.args[0])
        block = None if shape is None or x.block is None else x.block * math.prod(shape[len(shape) + s + 1:][:e - s])
        return Units(x.group, e, x.ndim - (e - s), block)

    def _reduce(self, node: Node, x: Units, dims: int | tuple[int, ...] | None, keepdim: bool) -> Units:
        if dims is None:
            raise Refused(node, "reduces over the hidden units")
        if x.ndim is None and any(d >= 0 for d in (dims if isinstance(dims, (tuple, list)) else (dims,))):
            raise Refused(node, "reduces a tensor of unknown rank (pass example_input)")
        reduced = {d - x.ndim if d >= 0 else d for d in (dims if isinstance(dims, (tuple, list)) else (dims,))}
        if x.dim in reduced:
            raise Refused(node, "reduces over the hidden units")
        if keepdim:
            return x
        ndim = None if x.ndim is None else x.ndim - len(reduced)
        return replace(x, dim=x.dim + sum(d > x.dim for d in reduced), ndim=ndim)

    def _checked(self, node: Node, out: Units | None) -> Units | None:
        """``out`` with its rank and block from the recorded shape, which must agree with the trace."""
        shape = _shape(node)
        if out is None or shape is None:
            return out
        if not self.hidden(out):
            return replace(out, ndim=len(shape))
        size = self.size[self.find(out.group)]
        if -out.dim > len(shape) or shape[out.dim] % size or (out.block not in (None, shape[out.dim] // size)):
            raise RpgenError(f"cannot derive permutation groups: node {node.name!r} has shape {list(shape)}, "
                             f"not {size} units on axis {out.dim}; write a spec file (see rpgen.align)")
        return replace(out, ndim=len(shape), block=shape[out.dim] // size)


def _is_batch_size(arg: object) -> bool:
    """``x.size(0)`` or ``x.shape[0]``."""
    if not isinstance(arg, Node):
        return False
    if arg.op == "call_method" and arg.target == "size":
        return arg.args[1:] == (0,)
    source = arg.args[0] if arg.target is operator.getitem else None
    return (isinstance(source, Node) and source.target is getattr and source.args[1] == "shape"
            and arg.args[1] == 0)


def _args(node: Node, *params: tuple[str, object]) -> list:
    """The values of ``params`` (name, default) after the tensor, positional or keyword."""
    return [node.args[i + 1] if len(node.args) > i + 1 else node.kwargs.get(name, default)
            for i, (name, default) in enumerate(params)]
