"""Values and meta as JSON (schema backtrace.trace/1), read back strictly: anything a trace file
holds is checked for its type, its size and its sense before a renderer sees it, and a file that
is wrong says where in one line (TraceFormatError), whatever it contains."""
from __future__ import annotations

import math
from typing import Any

from .errors import TraceFormatError
from .values import TensorStats, is_tensor

_SPECIAL = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
TAGS = ("float", "complex", "stats", "tensor", "dict", "list", "text")
# Tensor dtypes a file may name: what torch.<name> is, for values written as {"tensor": ...}.
DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32",
          "float64", "complex64", "complex128", "complex32")
MAX_INT = 2 ** 63  # integers a trace holds (slots, shapes, counts, values) stay below this
MAX_ELEMENTS = 50_000_000  # elements one tensor in a file may have
MAX_DEPTH = 64  # nesting of values inside values


def encode(v: Any) -> Any:
    """A value as JSON data: floats stay numbers (non-finite ones become tagged strings)."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"float": repr(v)}
    if isinstance(v, complex):
        return {"complex": [encode(v.real), encode(v.imag)]}
    if isinstance(v, TensorStats):
        return {"stats": {"shape": list(v.shape), "dtype": v.dtype,
                          **{k: encode(x) for k, x in zip(v.NUMBERS, v.numbers())}}}
    if isinstance(v, dict):
        return {"dict": {str(k): encode(x) for k, x in v.items()}}
    if isinstance(v, list) and _nested_numbers(v):  # a formula's tensor: nested JSON arrays
        return [encode(x) for x in v]
    if isinstance(v, (list, tuple)):
        return {"list": [encode(x) for x in v]}
    if is_tensor(v):
        return {"tensor": _tensor(v)}
    return {"text": str(v)}


def _nested_numbers(v: list) -> bool:
    """True for nested lists of numbers: how the formula engines hold a tensor."""
    stack = [v]
    while stack:
        level = stack.pop()
        if not level:
            return False
        for x in level:
            if isinstance(x, list):
                stack.append(x)
            elif isinstance(x, bool) or not isinstance(x, (int, float)):
                return False
    return True


def _tensor(v: Any) -> dict:
    """A tensor's dtype, shape and elements (row-major, as float64; complex: real and imag)."""
    dense = v.detach().cpu()
    if str(dense.layout) != "torch.strided":  # sparse gradients (nn.Embedding(sparse=True))
        dense = dense.to_dense()
    body = {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)}
    if dense.is_complex():  # keep the imaginary part: .double() would drop it
        flat = dense.flatten()
        body["data"] = [encode(x) for x in flat.real.double().tolist()]
        body["imag"] = [encode(x) for x in flat.imag.double().tolist()]
    else:
        body["data"] = [encode(x) for x in dense.double().flatten().tolist()]
    return body


def encode_meta(meta: dict) -> dict:
    """Meta as plain JSON: objects, arrays, strings and numbers as themselves; other values (a
    non-finite float, statistics, a tensor) tagged as everywhere else. A dict that could be read
    as a tag ({"text": ...}) is wrapped in {"dict": ...}."""
    return _plain(meta, 0)


def _plain(v: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError("meta nested too deeply to write")
    if isinstance(v, dict):
        if len(v) == 1 and str(next(iter(v))) in TAGS:
            return encode(v)  # {"text": ...} would read as a tagged value: written as {"dict": ...}
        return {str(k): _plain(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x, depth + 1) for x in v]
    return encode(v)


def decode_meta(d: Any, where: str) -> dict:
    """Inverse of `encode_meta`; also reads the older {"dict": {...}} form."""
    if not isinstance(d, dict):
        raise TraceFormatError(f"{where}: expected an object, got {_kind(d)}")
    value = _meta_value(d, where, 0)
    if not isinstance(value, dict):
        raise TraceFormatError(f"{where}: expected an object, got {_kind(d)}")
    return value


def _meta_value(d: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise TraceFormatError(f"{where}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(d, list):
        return tuple(_meta_value(x, f"{where}[{k}]", depth + 1) for k, x in enumerate(d))
    if isinstance(d, dict):
        if len(d) == 1 and next(iter(d)) in TAGS:
            return decode(d, where, depth)
        return {k: _meta_value(x, f"{where}.{k}", depth + 1) for k, x in d.items()}
    return decode(d, where, depth)


def decode(d: Any, where: str = "value", depth: int = 0) -> Any:
    """Inverse of `encode`, checking every tag's body (where: the place, for the message)."""
    if depth > MAX_DEPTH:
        raise TraceFormatError(f"{where}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(d, str):
        return unicode_text(d, where)
    if isinstance(d, bool) or d is None:
        return d
    if isinstance(d, (int, float)):
        return number(d, where)
    if isinstance(d, list):  # a formula's tensor: arrays of numbers (non-finite ones tagged)
        out = [decode(x, f"{where}[{k}]", depth + 1) for k, x in enumerate(d)]
        if not out or not all(isinstance(x, list) or (isinstance(x, (int, float))
                                                      and not isinstance(x, bool)) for x in out):
            raise TraceFormatError(f"{where}: an array must hold numbers or arrays of numbers; "
                                   "other lists are written {\"list\": [...]}")
        return out
    if not isinstance(d, dict) or len(d) != 1:
        raise TraceFormatError(f"{where}: unknown value encoding {_short(d)}")
    (tag, body), = d.items()
    if tag == "float":
        if body not in _SPECIAL:
            raise TraceFormatError(f"{where}: float must be nan, inf or -inf, not {_short(body)}")
        return _SPECIAL[body]
    if tag == "complex":
        parts = body if isinstance(body, list) and len(body) == 2 else None
        if parts is None:
            raise TraceFormatError(f"{where}: complex must be [real, imag]")
        return complex(*(_real(decode(p, where, depth + 1), where) for p in parts))
    if tag == "stats":
        return _stats(body, where)
    if tag == "tensor":
        return _decode_tensor(body, where)
    if tag == "dict" and isinstance(body, dict):
        return {k: decode(x, f"{where}.{k}", depth + 1) for k, x in body.items()}
    if tag == "list" and isinstance(body, list):
        return tuple(decode(x, f"{where}[{k}]", depth + 1) for k, x in enumerate(body))
    if tag == "text" and isinstance(body, str):
        return unicode_text(body, where)
    raise TraceFormatError(f"{where}: unknown value encoding {_short(d)}")


def unicode_text(text: str, where: str) -> str:
    """`text` if it is valid Unicode: JSON's "\\ud800" reads as a lone surrogate no file can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise TraceFormatError(f"{where}: text {text[:30]!r} is not valid Unicode (a lone "
                               "surrogate)") from None
    return text


def number(v: Any, where: str) -> int | float:
    """A JSON number a trace may hold: an integer below 2**63, or a float."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TraceFormatError(f"{where}: expected a number, got {_kind(v)}")
    if isinstance(v, int) and abs(v) >= MAX_INT:
        raise TraceFormatError(f"{where}: integer too large ({len(str(abs(v)))} digits)")
    return v


def _real(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TraceFormatError(f"{where}: expected a number, got {_kind(v)}")
    return float(v)


def _shape(body: dict, where: str) -> tuple[int, ...]:
    shape = body.get("shape")
    if not isinstance(shape, list) or len(shape) > 64 or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < MAX_INT for s in shape):
        raise TraceFormatError(f"{where}: shape must be a list of sizes, not {_short(shape)}")
    return tuple(shape)


def _dtype(body: dict, where: str) -> str:
    dtype = body.get("dtype")
    if not isinstance(dtype, str) or len(dtype) > 40:
        raise TraceFormatError(f"{where}: dtype must be a name like float32, not {_short(dtype)}")
    return dtype


def _stats(body: Any, where: str) -> TensorStats:
    if not isinstance(body, dict):
        raise TraceFormatError(f"{where}: stats must be an object, not {_short(body)}")
    shape, dtype = _shape(body, where), _dtype(body, where)
    # a statistic with a default may be missing: files written before it existed
    missing = [k for k in TensorStats.NUMBERS if k not in body and k not in TensorStats.DEFAULTS]
    if missing:
        raise TraceFormatError(f"{where}: stats lack {', '.join(missing)}")
    return TensorStats.of(shape, dtype, [_real(decode(body[k], f"{where}.{k}", 1), f"{where}.{k}")
                                         if k in body else TensorStats.DEFAULTS[k]
                                         for k in TensorStats.NUMBERS])


def _decode_tensor(body: Any, where: str) -> Any:
    if not isinstance(body, dict):
        raise TraceFormatError(f"{where}: tensor must be an object, not {_short(body)}")
    shape, dtype = _shape(body, where), _dtype(body, where)
    if dtype not in DTYPES:
        raise TraceFormatError(f"{where}: unknown tensor dtype {dtype!r} (known: {', '.join(DTYPES)})")
    size = math.prod(shape)
    if size > MAX_ELEMENTS:
        raise TraceFormatError(f"{where}: a tensor of {size:,} elements is over the limit of "
                               f"{MAX_ELEMENTS:,}")
    parts = [body.get("data")] + ([body["imag"]] if "imag" in body else [])
    for part in parts:
        if not isinstance(part, list) or len(part) != size:
            raise TraceFormatError(f"{where}: tensor of shape {list(shape)} needs {size:,} numbers, "
                                   f"has {len(part) if isinstance(part, list) else _kind(part)}")
    values = [[_real(decode(x, where, 1), where) for x in part] for part in parts]
    import torch

    data = torch.tensor(values[0], dtype=torch.float64)
    if len(values) == 2:
        data = torch.complex(data, torch.tensor(values[1], dtype=torch.float64))
    return data.to(getattr(torch, dtype)).reshape(shape)


def _kind(v: Any) -> str:
    """What a JSON value is, for a message."""
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null", int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
