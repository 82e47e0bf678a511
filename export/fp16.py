"""fp16 export: half-precision weights and activations with float32 islands.

The network already computes its timestep embedding, GroupNorm and softmax in float32 and
casts back (backends/torch/models/unet.py). Converting with ``module.half()`` would also halve the
GroupNorm affine parameters, which then no longer match their float32 input, so norms keep
float32 parameters here. :func:`float32_islands` checks the result on the exported graph.
"""

from __future__ import annotations

import copy
from typing import Any

# Ops whose inputs must stay float32 in an fp16 graph (GroupNorm exports as InstanceNormalization
# plus an affine Mul/Add; the sinusoidal timestep embedding as Cos/Sin).
FLOAT32_OPS = ("Softmax", "InstanceNormalization", "Cos", "Sin")


def to_fp16(model: Any) -> Any:
    """A half-precision copy of ``model`` whose normalisation layers keep float32 parameters."""
    from torch import nn

    net = copy.deepcopy(model).half()
    for module in net.modules():
        if isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
            module.float()
    return net.eval()


def value_types(proto: Any) -> dict[str, int]:
    """Element type (onnx.TensorProto enum) of every typed value after shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    types: dict[str, int] = {}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    return types


def float32_islands(proto: Any) -> dict[str, dict[str, int]]:
    """Per op type of :data:`FLOAT32_OPS`: how many nodes get a float32 / float16 first input.
    An fp16 export is correct when every count under ``float16`` is 0."""
    import onnx

    types = value_types(proto)
    counts = {op: {"float32": 0, "float16": 0, "other": 0} for op in FLOAT32_OPS}
    for node in proto.graph.node:
        if node.op_type in counts and node.input:
            t = types.get(node.input[0])
            key = ("float32" if t == onnx.TensorProto.FLOAT else "float16" if t == onnx.TensorProto.FLOAT16
                   else "other")
            counts[node.op_type][key] += 1
    return counts


def boundary_types(proto: Any) -> dict[str, int]:
    """Element types of the graph's inputs and outputs."""
    return {v.name: v.type.tensor_type.elem_type for v in (*proto.graph.input, *proto.graph.output)}
