"""ONNX graph clean-up after jax2onnx: constants folded, the network moved to NCHW, conv biases into the convs.

jax2onnx keeps the model's NHWC layout and wraps every (NCHW-only) Conv and MaxPool in a Transpose pair; the conv
bias follows as a separate Add. `lean_graph` gives each NHWC tensor computed from such a wrapped op an NCHW twin
(layout-agnostic ops, Concat, Slice and nearest upsampling are re-emitted on the twins), keeps an NHWC tensor only
where a layout-bound consumer (a Reshape in the head, a graph output) needs it (then as one Transpose of its twin),
and finally gives each Conv the constant Add that follows it as its bias input. Outputs are unchanged."""
from __future__ import annotations

import numpy as np

TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)
ELEMENTWISE = {"Abs", "Add", "Cast", "Clip", "Div", "Erf", "Exp", "HardSigmoid", "Identity", "LeakyRelu", "Log",
               "Max", "Min", "Mul", "Neg", "Pow", "Reciprocal", "Relu", "Sigmoid", "Sqrt", "Sub", "Tanh"}
MAX_FOLDED_ELEMENTS = 1 << 20


def lean_graph(model) -> None:
    """Rewrite `model` (an onnx.ModelProto, batch-leading NHWC image tensors) in place: same inputs, outputs and
    values, fewer nodes (no Transpose pairs around the convolutions, no separate bias Add)."""
    graph = model.graph
    _fold_constants(model)
    _to_nchw(graph)
    _drop_dead_nodes(graph)
    _fold_conv_bias(graph)
    _drop_dead_nodes(graph)


class _Constants:
    """The graph's initializers by name, as numpy arrays; new ones added under fresh names."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph, self.to_array, self.from_array = graph, numpy_helper.to_array, numpy_helper.from_array
        self.values = {init.name: self.to_array(init) for init in graph.initializer}
        self.count = 0

    def get(self, name: str):
        return self.values.get(name)

    def add(self, value: np.ndarray, hint: str) -> str:
        self.count += 1
        name = f"{hint}_lean_{self.count}"
        self.graph.initializer.append(self.from_array(np.asarray(value), name))
        self.values[name] = np.asarray(value)
        return name


def _subgraph_names(graph) -> set[str]:
    """Every name read inside a subgraph (Loop, If, Scan bodies): outer values these may capture."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for body in [attr.g] if attr.HasField("g") else list(attr.graphs):
                for inner in body.node:
                    names.update(inner.input)
                names.update(o.name for o in body.output)
                names |= _subgraph_names(body)
    return names


def _has_subgraph(node) -> bool:
    return any(attr.HasField("g") or len(attr.graphs) for attr in node.attribute)


def _fold_constants(model) -> None:
    """Nodes whose inputs are all initializers (shape arithmetic, anchor grids) replaced by their values."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    constants = _Constants(graph)
    graph_inputs = {i.name for i in graph.input}
    kept = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if (_has_subgraph(node) or not node.output or any(n not in constants.values or n in graph_inputs
                                                           for n in inputs)):
            kept.append(node)
            continue
        single = onnx.helper.make_graph(
            [node], "fold", [onnx.helper.make_tensor_value_info(n, 0, None) for n in inputs],
            [onnx.helper.make_tensor_value_info(n, 0, None) for n in node.output])
        try:
            values = ReferenceEvaluator(onnx.helper.make_model(single, opset_imports=model.opset_import)).run(
                None, {n: constants.values[n] for n in inputs})
        except Exception:  # an op the reference evaluator lacks: the runtime computes it
            kept.append(node)
            continue
        if sum(np.asarray(v).size for v in values) > MAX_FOLDED_ELEMENTS:
            kept.append(node)
            continue
        for name, value in zip(node.output, values):
            graph.initializer.append(constants.from_array(np.asarray(value), name))
            constants.values[name] = np.asarray(value)
    del graph.node[:]
    graph.node.extend(kept)


def _perm(node) -> tuple[int, ...] | None:
    return next((tuple(a.ints) for a in node.attribute if a.name == "perm"), None)


def _attr(node, name: str, default=None):
    return next((a for a in node.attribute if a.name == name), default)


def _nchw_constant(value: np.ndarray) -> np.ndarray | None:
    """A constant operand of an elementwise op on a rank-4 NHWC tensor, as the operand of its NCHW twin."""
    if value.size == 1 or value.ndim == 0:
        return value
    if value.ndim > 4:
        return None
    return np.transpose(value.reshape((1,) * (4 - value.ndim) + value.shape), TO_NCHW)


class _Layout:
    """NCHW twins of NHWC tensors, built node by node in graph order."""

    def __init__(self, graph):
        import onnx

        self.helper, self.constants = onnx.helper, _Constants(graph)
        self.twin: dict[str, str] = {}  # NHWC tensor -> the same values in NCHW
        self.alias: dict[str, str] = {}  # output of Transpose(to NCHW) of a twinned tensor -> that twin
        self.producer = {out: node for node in graph.node for out in node.output}

    def const(self, name: str):
        return self.constants.get(name)

    def shadow(self, node):
        """The NCHW twin of `node` (its outputs registered as twins), or None when it has no layout-free form."""
        if node.op_type in ELEMENTWISE:
            return self._elementwise(node)
        if node.op_type == "Concat":
            return self._concat(node)
        if node.op_type == "Slice":
            return self._slice(node)
        if node.op_type == "Reshape":
            return self._upsample(node)
        return None

    def _emit(self, node, op_type: str, inputs: list[str], **attrs):
        out = f"{node.output[0]}_nchw"
        new = self.helper.make_node(op_type, inputs, [out], name=f"{node.name or node.output[0]}_nchw", **attrs)
        self.twin[node.output[0]] = out
        return new

    def _elementwise(self, node):
        inputs, twinned = [], False
        for name in node.input:
            value = self.const(name) if name else None
            if name in self.twin:
                inputs.append(self.twin[name])
                twinned = True
            elif not name or (value is not None and value.size == 1 and value.ndim <= 4):
                inputs.append(name)
            elif value is not None and (moved := _nchw_constant(value)) is not None:
                inputs.append(self.constants.add(moved, name))
            else:
                return None
        if not twinned:
            return None
        return self._emit(node, node.op_type, inputs, **{a.name: self.helper.get_attribute_value(a)
                                                         for a in node.attribute})

    def _concat(self, node):
        if not all(name in self.twin for name in node.input):
            return None
        axis = _attr(node, "axis").i % 4
        return self._emit(node, "Concat", [self.twin[name] for name in node.input], axis=TO_NHWC[axis])

    def _slice(self, node):
        data, starts, ends, *rest = node.input
        axes_name = rest[0] if rest else ""
        if data not in self.twin or self.const(starts) is None or self.const(ends) is None:
            return None
        axes = self.const(axes_name) if axes_name else np.arange(len(self.const(starts)))
        if axes is None:
            return None
        moved = np.array([TO_NHWC[int(a) % 4] for a in axes], dtype=np.int64)
        return self._emit(node, "Slice", [self.twin[data], starts, ends, self.constants.add(moved, "axes"),
                                          *rest[1:]])

    def dims(self, name: str) -> tuple | None:
        """A shape tensor's values, None for the batch entry when it is computed (dynamic batch)."""
        value = self.const(name)
        if value is not None:
            return tuple(int(v) for v in value)
        source = self.producer.get(name)
        if source is None or source.op_type != "Concat":
            return None
        tail = [self.const(part) for part in source.input[1:]]
        if any(v is None or v.size != 1 for v in tail):
            return None
        return (None, *(int(v.reshape(())) for v in tail))

    def _upsample(self, node):
        """Reshape [N, H, 1, W, 1, C] -> Expand to [N, H, a, W, b, C] -> Reshape [N, aH, bW, C] (jax's nearest
        repeat) on a twinned input: a nearest Resize of the twin by (a, b)."""
        shape = self.dims(node.input[1])
        source = self.producer.get(node.input[0])
        expanded = None
        while source is not None and source.op_type == "Expand" and self.dims(source.input[1]) is not None:
            expanded = self.dims(source.input[1]) if expanded is None else expanded
            source = self.producer.get(source.input[0])
        if (shape is None or expanded is None or source is None or source.op_type != "Reshape"
                or source.input[0] not in self.twin):
            return None
        split = self.dims(source.input[1])
        if split is None or len(split) != 6 or len(expanded) != 6 or split[2] != 1 or split[4] != 1:
            return None
        _, h, a, w, b, c = expanded
        if split[1::2] != (h, w, c) or shape[1:] != (h * a, w * b, c):
            return None
        scales = self.constants.add(np.array([1, 1, a, b], dtype=np.float32), "scales")
        return self._emit(node, "Resize", [self.twin[source.input[0]], "", scales], mode="nearest",
                          coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def _to_nchw(graph) -> None:
    """Every tensor with an NCHW twin is read through the twin; an NHWC tensor still needed is one Transpose."""
    layout = _Layout(graph)
    order, shadowed = [], set()
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = layout.alias.get(name, name)
        perm = _perm(node) if node.op_type == "Transpose" else None
        if perm == TO_NHWC:
            layout.twin[node.output[0]] = node.input[0]
        elif perm == TO_NCHW and node.input[0] in layout.twin:
            layout.alias[node.output[0]] = layout.twin[node.input[0]]
        elif len(node.output) == 1 and (twin := layout.shadow(node)) is not None:
            order.append(twin)  # before `node`: where `node` may become a Transpose of it
            shadowed.add(id(node))
        order.append(node)
    needed = {o.name for o in graph.output} | _subgraph_names(graph)
    needed.update(name for node in order if id(node) not in shadowed for name in node.input)
    for i, node in enumerate(order):
        if id(node) in shadowed and node.output[0] in needed:
            order[i] = layout.helper.make_node("Transpose", [layout.twin[node.output[0]]], [node.output[0]],
                                               name=f"{node.output[0]}_nhwc", perm=list(TO_NHWC))
    del graph.node[:]
    graph.node.extend(order)


def _drop_dead_nodes(graph) -> None:
    """Nodes whose outputs nothing reads (graph outputs and subgraph captures count as reads)."""
    live = {o.name for o in graph.output} | _subgraph_names(graph)
    kept = []
    for node in reversed(graph.node):
        if any(out in live for out in node.output):
            kept.append(node)
            live.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used = live | {i.name for i in graph.input}
    initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _fold_conv_bias(graph) -> None:
    """Conv -> Add(constant broadcast along the channels) becomes one Conv with that bias (NCHW)."""
    constants = _Constants(graph)
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output} | _subgraph_names(graph)
    dropped = set()
    for conv in graph.node:
        if conv.op_type != "Conv" or conv.output[0] in outputs or len(readers.get(conv.output[0], [])) != 1:
            continue
        add = readers[conv.output[0]][0]
        weight = constants.get(conv.input[1])
        other = [name for name in add.input if name != conv.output[0]]
        if add.op_type != "Add" or len(other) != 1 or weight is None or constants.get(other[0]) is None:
            continue
        value, channels = constants.get(other[0]), weight.shape[0]
        if value.ndim > 4 or (value.size != 1 and value.reshape((1,) * (4 - value.ndim) + value.shape).shape
                                                    != (1, channels, 1, 1)):
            continue
        bias = np.broadcast_to(value.reshape(-1), (channels,)).astype(weight.dtype)
        if len(conv.input) > 2 and conv.input[2]:
            old = constants.get(conv.input[2])
            if old is None:
                continue
            bias = bias + old
        while len(conv.input) < 3:
            conv.input.append("")
        conv.input[2] = constants.add(bias, "bias")
        conv.output[0] = add.output[0]
        dropped.add(id(add))
    kept = [node for node in graph.node if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
