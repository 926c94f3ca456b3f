"""Run a Core ML ML program (.mlpackage) on numpy, so packages can be checked numerically where Core ML does
not exist (Linux CI, training machines). Written here because no library does this: coremltools can read a
package on Linux but only macOS can run it.

- The program is read from the package's protobuf spec (coremltools' pure-Python classes) and its weights from
  weight.bin (memory-mapped); ops run in program order on numpy arrays.
- fp16 programs: every op computes in float32 and its result is stored as float16 when the program declares a
  float16 output, the way Core ML's fp16 path holds tensors between ops; fp16 error is therefore seen.
- Compressed weights (constexpr ops) are decompressed exactly.
- Control flow (cond, while_loop) runs the op's nested blocks, which see the enclosing scope.
- Stateful programs (iOS18 state inputs) keep their buffers in the dict `make_state()` returns, passed to `run`.
- An op this interpreter does not know raises an error naming the op, its output (location) and the opset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mvkit.coreml.ops import implementation_of
from mvkit.coreml.ops.common import DTYPES, SUB_BYTE, UnsupportedOp, register_constant, unpack_bits
from mvkit.coreml.ops.state import StateTensor
from mvkit.coreml.package import load_spec, spec_file
from mvkit.errors import MvkitError


def _shape(tensor_type) -> tuple[int, ...]:
    return tuple(int(d.constant.size) for d in tensor_type.dimensions)


class WeightFile:
    """weight.bin: 64-byte header, then per blob a 64-byte record {u32 sentinel, u32 dtype, u64 size,
    u64 data offset} that a const's `offset` points at."""

    def __init__(self, path: Path):
        self.data = np.memmap(path, dtype=np.uint8, mode="r") if path.exists() else None

    def read(self, offset: int, tensor_type) -> np.ndarray:
        if self.data is None:
            raise MvkitError("the package refers to weight.bin, which is missing")
        sentinel, _ = np.frombuffer(self.data[offset:offset + 8].tobytes(), dtype="<u4")
        if sentinel != 0xDEADBEEF:
            raise MvkitError(f"weight.bin record at {offset} is damaged (sentinel {sentinel:#x})")
        size, start = np.frombuffer(self.data[offset + 8:offset + 24].tobytes(), dtype="<u8")
        raw = self.data[int(start):int(start + size)].tobytes()
        return _decode(raw, tensor_type.dataType, _shape(tensor_type))


def _decode(raw: bytes, dtype: int, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape)) if shape else 1
    if dtype in SUB_BYTE:
        bits, signed = SUB_BYTE[dtype]
        return unpack_bits(raw, bits, signed, count).reshape(shape)
    return np.frombuffer(raw, dtype=DTYPES[dtype])[:count].reshape(shape).copy()


def decode_value(value, weights: WeightFile) -> Any:
    """A MIL Value (immediate or blob) -> numpy array, Python str/list, or scalar."""
    kind = value.WhichOneof("value")
    tensor_type = value.type.tensorType
    if kind == "blobFileValue":
        return weights.read(value.blobFileValue.offset, tensor_type)
    immediate = value.immediateValue
    which = immediate.WhichOneof("value")
    if which == "list":
        return [decode_value(v, weights) for v in immediate.list.values]
    if which == "tuple":
        return tuple(decode_value(v, weights) for v in immediate.tuple.values)
    tensor = immediate.tensor
    field = tensor.WhichOneof("value")
    shape = _shape(tensor_type)
    if tensor_type.dataType == 2:  # STRING
        strings = list(tensor.strings.values)
        return strings[0] if not shape else np.array(strings, dtype=object).reshape(shape)
    if field == "bytes":
        array = _decode(tensor.bytes.values, tensor_type.dataType, shape)
    else:
        values = list(getattr(tensor, field).values) if field else []
        array = np.array(values, dtype=DTYPES.get(tensor_type.dataType, np.float32)).reshape(shape)
    return array if shape else array.reshape(())


class Program:
    """A loaded ML program: `run({"image": array})` -> {output name: value}."""

    def __init__(self, package: Path | str):
        package = Path(package)
        data_dir = spec_file(package).parent  # the weights lie beside the spec
        spec = load_spec(package)
        function = spec.mlProgram.functions["main"]
        self.opset = function.opset
        self.block = function.block_specializations[self.opset]
        inputs = [value for value in function.inputs if not value.type.HasField("stateType")]
        self.input_names = [value.name for value in inputs]
        self.input_dtypes = {value.name: DTYPES.get(value.type.tensorType.dataType, np.float32) for value in inputs}
        self.state_types = {value.name: value.type.stateType.wrappedType.tensorType
                            for value in function.inputs if value.type.HasField("stateType")}
        self.output_names = list(self.block.outputs)
        self.weights = WeightFile(data_dir / "weights" / "weight.bin")
        self.description = spec.description
        # the classifier's probability vector, by position: the label dict merges duplicate label names
        classify = [op for op in self.block.operations if op.type == "classify"]
        self.probabilities_name = classify[0].inputs["probabilities"].arguments[0].name if classify else None
        self.constants: dict[str, Any] = {}
        for op in self.block.operations:  # consts and decompression once, at load
            if op.type == "const":
                self.constants[op.outputs[0].name] = decode_value(op.attributes["val"], self.weights)
            elif op.type.startswith("constexpr_"):
                self.constants.update(self._execute(op, self.constants))
        for value in self.constants.values():
            register_constant(value)

    def _bound(self, argument, env: dict[str, Any]) -> list[Any]:
        """The values an op argument binds: names looked up in `env`, inline values decoded."""
        return [env[b.name] if b.WhichOneof("binding") == "name" else decode_value(b.value, self.weights)
                for b in argument.arguments]

    def _arguments(self, op, env: dict[str, Any]) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for key, argument in op.inputs.items():
            values = self._bound(argument, env)
            args[key] = values if key == "values" or len(values) > 1 else values[0]  # concat, stack, einsum
        for key, attribute in op.attributes.items():  # e.g. iOS16 constexpr ops keep their parameters here
            if key != "name":
                args.setdefault(key, decode_value(attribute, self.weights))
        return args

    def _execute(self, op, env: dict[str, Any]) -> dict[str, Any]:
        location = op.outputs[0].name if op.outputs else "?"
        if op.type in ("cond", "while_loop"):
            results = self._control_flow(op, env)  # one value per output
        else:
            implementation = implementation_of(op.type, self.opset)
            if implementation is None:
                raise UnsupportedOp(f"Core ML interpreter: op `{op.type}` (producing `{location}`, opset {self.opset}) "
                                    "is not supported yet")
            try:
                result = implementation(**self._arguments(op, env))
            except UnsupportedOp as exc:
                raise UnsupportedOp(f"Core ML interpreter: op `{op.type}` (producing `{location}`, opset "
                                    f"{self.opset}): {exc} is not supported yet") from exc
            results = result if isinstance(result, tuple) and len(op.outputs) > 1 else (result,)
        produced = {}
        for output, value in zip(op.outputs, results):
            declared = output.type.tensorType.dataType
            if isinstance(value, np.ndarray) and declared in DTYPES and value.dtype != DTYPES[declared]:
                value = value.astype(DTYPES[declared])  # fp16 programs hold fp16 tensors between ops
            produced[output.name] = value
        return produced

    def _run_block(self, block, env: dict[str, Any]) -> list[Any]:
        """Runs a block's ops in `env` (which it extends) and returns its outputs."""
        for op in block.operations:
            if op.outputs and op.outputs[0].name in self.constants:  # the top level's const and constexpr ops ran at load
                continue
            if op.type == "const":  # a nested block's constant
                env[op.outputs[0].name] = decode_value(op.attributes["val"], self.weights)
            else:
                env.update(self._execute(op, env))
        return [env[name] for name in block.outputs]

    def _control_flow(self, op, env: dict[str, Any]) -> list[Any]:
        """cond and while_loop: their blocks see the enclosing scope, plus their own inputs (loop variables)."""
        if op.type == "cond":
            pred = bool(np.asarray(self._arguments(op, env)["pred"]).ravel()[0])
            return self._run_block(op.blocks[0] if pred else op.blocks[1], dict(env))
        values = self._bound(op.inputs["loop_vars"], env)
        condition, body = op.blocks

        def scope(block) -> dict[str, Any]:
            return {**env, **{name.name: value for name, value in zip(block.inputs, values)}}

        while bool(np.asarray(self._run_block(condition, scope(condition))[0]).ravel()[0]):
            values = self._run_block(body, scope(body))
        return values

    def make_state(self) -> dict[str, StateTensor]:
        """Fresh state buffers (zeros) for a stateful program; pass them to every `run` of one sequence."""
        return {name: StateTensor(_shape(tensor_type), DTYPES.get(tensor_type.dataType, np.float32))
                for name, tensor_type in self.state_types.items()}

    def run(self, feeds: dict[str, np.ndarray], keep: tuple[str, ...] = (),
            state: dict[str, StateTensor] | None = None) -> dict[str, Any]:
        """Outputs by name, plus any intermediate values named in `keep`. A stateful program reads and updates
        `state` (from `make_state()`)."""
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise MvkitError(f"Core ML program needs inputs {missing}")
        if self.state_types and state is None:
            raise MvkitError(f"Core ML program has state {sorted(self.state_types)}: pass state=program.make_state()")
        env = dict(self.constants)
        env.update(state or {})
        env.update({name: np.asarray(feeds[name], dtype=self.input_dtypes[name]) for name in self.input_names})
        self._run_block(self.block, env)
        return {name: env[name] for name in (*self.output_names, *keep)}

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for NCHW RGB pixels in 0..255 (a classifier package), one photo at a time."""
        input_name = self.input_names[0]
        rows = [self.run({input_name: image[None]}, keep=(self.probabilities_name,))[self.probabilities_name]
                for image in pixels]
        return np.concatenate([np.asarray(r, dtype=np.float32).reshape(1, -1) for r in rows])
