"""Tensors of the Open Inference Protocol: read from JSON data or raw bytes, written back as either.

A tensor has a name, a datatype, a shape and its elements in row-major order.
In JSON its ``data`` is a list, flat or nested (only the order of the elements
counts); as raw bytes (the binary tensor extension over HTTP,
``raw_input_contents`` over gRPC) its elements are little-endian, a BOOL one
byte, and each BYTES element a 4-byte little-endian length and that many bytes.

Reading checks what the tensor says of itself: a known datatype, a shape of
non-negative sizes, as many elements as the shape holds, elements of the
datatype. What the model makes of the values is for its rule set
(``service.v2.dataplane``). Nothing here knows HTTP or gRPC.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import InvalidTensor

# Datatype -> the numpy type of its elements (little-endian, as on the wire).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
NUMERIC = frozenset(name for name, dtype in DATATYPES.items() if dtype.kind in "iuf")
INTEGERS = frozenset(name for name, dtype in DATATYPES.items() if dtype.kind in "iu")
# How the protocol's JSON spells each datatype's elements.
_JSON_KINDS = {"BOOL": "true or false", "BYTES": "strings"}
_LENGTH = struct.Struct("<I")
MAX_ELEMENTS = 2**48


@dataclass(frozen=True)
class Tensor:
    """One input tensor, read: ``values`` has ``shape``; BYTES elements are ``str`` (UTF-8 decoded),
    or None where JSON data holds null (a missing value)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: np.ndarray

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1


def _header(name: str, datatype: str, shape: Sequence[int]) -> tuple[np.dtype, tuple[int, ...], int]:
    """The element type, the shape and the element count, once the three are known to make sense."""
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidTensor(
            f"Input {name!r} has datatype {datatype!r}; the protocol's datatypes are {', '.join(DATATYPES)}."
        )
    if any(type(size) is not int or size < 0 for size in shape):
        raise InvalidTensor(f"Input {name!r} has shape {list(shape)}: sizes are whole numbers, 0 or more.")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:  # more than any body holds (and too long a number to write in a message)
        raise InvalidTensor(f"Input {name!r} has a shape of more than {MAX_ELEMENTS} elements.")
    return dtype, tuple(shape), count


def _wrong_count(
    name: str, shape: tuple[int, ...], count: int, found: int, unit: str = "elements"
) -> InvalidTensor:
    return InvalidTensor(
        f"Input {name!r} has shape {list(shape)}, which holds {count} elements, "
        f"but its data has {found} {unit}."
    )


def from_json(name: str, datatype: str, shape: Sequence[int], data: Any) -> Tensor:
    """A tensor from the protocol's JSON: ``data`` a list of elements, flat or nested, in row-major order."""
    dtype, shape, count = _header(name, datatype, shape)
    if not isinstance(data, list):
        raise InvalidTensor(f"Input {name!r}: 'data' must be a list of its elements in row-major order.")
    flat = _flattened(data)
    if len(flat) != count:
        raise _wrong_count(name, shape, count, len(flat))
    expected = _expected(datatype)
    kinds = set(map(type, flat))
    if not kinds <= expected:
        spelled = _JSON_KINDS.get(datatype, "integers" if datatype in INTEGERS else "numbers")
        found = next(value for value in flat if type(value) not in expected)
        raise InvalidTensor(f"Input {name!r} is {datatype}: its elements are {spelled}, not {found!r}.")
    try:
        if datatype == "BYTES":
            values = np.empty(count, dtype=object)
            values[:] = flat
        else:
            if type(None) in kinds:
                flat = [math.nan if value is None else value for value in flat]
            # A float past the datatype's range (70000 in FP16) would become infinity.
            with np.errstate(over="raise"):
                values = np.array(flat, dtype=dtype)
    except (OverflowError, FloatingPointError):
        raise InvalidTensor(f"Input {name!r}: an element does not fit in {datatype}.") from None
    return Tensor(name, datatype, shape, values.reshape(shape))


def _expected(datatype: str) -> set[type]:
    """The JSON elements of a datatype: null is a missing value, in a float or a string."""
    if datatype == "BYTES":
        return {str, type(None)}
    if datatype == "BOOL":
        return {bool}
    return {int} if datatype in INTEGERS else {int, float, type(None)}


def _flattened(data: list[Any]) -> list[Any]:
    """The elements of nested lists, in order; a body's depth is bounded before it is parsed."""
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def from_bytes(name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview) -> Tensor:
    """A tensor from its raw bytes: little-endian elements; BYTES elements length-prefixed."""
    dtype, shape, count = _header(name, datatype, shape)
    if datatype == "BYTES":
        return Tensor(name, datatype, shape, _strings(name, shape, count, raw).reshape(shape))
    if len(raw) != count * dtype.itemsize:
        raise InvalidTensor(
            f"Input {name!r} has shape {list(shape)} of {datatype} ({dtype.itemsize} bytes each), "
            f"which is {count * dtype.itemsize} bytes, but {len(raw)} bytes were sent."
        )
    return Tensor(name, datatype, shape, np.frombuffer(raw, dtype=dtype).reshape(shape))


def _strings(name: str, shape: tuple[int, ...], count: int, raw: bytes | memoryview) -> np.ndarray:
    view = memoryview(raw)
    if count * 4 > len(view):  # each element takes at least its 4-byte length
        raise _wrong_count(name, shape, count, len(view) // 4, "elements at most in its bytes")
    values = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > len(view):
            raise _wrong_count(name, shape, count, index, "elements in its bytes")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidTensor(f"Input {name!r}: element {index} runs past the end of the bytes sent.")
        try:
            values[index] = str(view[offset : offset + length], "utf-8")
        except UnicodeDecodeError:
            raise InvalidTensor(f"Input {name!r}: element {index} is not UTF-8 text.") from None
        offset += length
    if offset != len(view):
        raise InvalidTensor(
            f"Input {name!r}: {len(view) - offset} bytes are left after its {count} elements."
        )
    return values


# --- Outputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """One output tensor: ``values`` are numbers, booleans or (BYTES) strings, in ``shape``."""

    name: str
    datatype: str
    values: np.ndarray

    @property
    def shape(self) -> list[int]:
        return list(self.values.shape)

    def json_data(self) -> Any:
        """The elements, flat, for JSON: a numeric array (written from its buffer) or a list."""
        flat = np.ascontiguousarray(self.values).reshape(-1)
        return flat if self.datatype != "BYTES" else flat.tolist()

    def raw(self) -> bytes:
        """The elements as the binary extension and gRPC's raw contents carry them."""
        flat = self.values.reshape(-1)
        if self.datatype != "BYTES":
            return flat.astype(DATATYPES[self.datatype], copy=False).tobytes()
        encoded = [value.encode("utf-8", "surrogatepass") for value in flat.tolist()]
        return b"".join(_LENGTH.pack(len(value)) + value for value in encoded)


def output(name: str, values: np.ndarray) -> Output:
    """An output of a prediction's array: integers as INT64, floats as FP64, labels of any other
    kind (strings, mixed) as BYTES text, so that a datatype is the same whatever the rows."""
    values = np.asarray(values)
    datatype = datatype_of(values)
    if datatype == "BYTES":
        values = np.vectorize(_text, otypes=[object])(values) if values.size else values.astype(object)
    else:
        values = values.astype(DATATYPES[datatype], copy=False)
    return Output(name, datatype, values)


def datatype_of(values: np.ndarray) -> str:
    """The output datatype of an array of a model's answers (see ``output``)."""
    kind = values.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "UINT64" if values.dtype == np.uint64 else "INT64"
    if kind == "f":
        return "FP64"
    if kind == "O" and values.size:
        kinds = set(map(type, values.reshape(-1).tolist()))
        if kinds == {bool}:
            return "BOOL"
        if kinds == {int}:
            return "INT64"
        if kinds <= {int, float}:
            return "FP64"
    return "BYTES"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)
