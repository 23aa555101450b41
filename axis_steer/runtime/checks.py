"""The checks on the arguments every part of axis_steer shares: one validator
per kind of argument, used by the NumPy and torch paths of
:mod:`~axis_steer.runtime.ops`, the hooks, the file loaders, the pipeline's
entry points and the command line, so that they accept and refuse the same
things and say so in the same words.

Each validator takes the value and ``what``, the name the message starts
with (``"lo"``, ``"steps[0].a"``, ``"thresholds at layer 3"``, ``"--layers"``),
and returns the value in its one accepted form. Wrong types (and dtypes) are
``TypeError``, wrong values (shapes, ranges, NaN) ``ValueError``; each
message names the argument, the value it got and what was expected.

=========================  ==================================================================
kind                       validator
=========================  ==================================================================
an integer (a count, ...)  :func:`as_int`, :func:`as_positive_int`
a layer index, layers      :func:`as_layer`, :func:`as_layers`
a float setting            :func:`as_float`
per-row numbers            :func:`as_real` (scalar or array; NaN and range rules)
capping bounds             :func:`as_bound`, :func:`check_bounds`
a direction, vectors       :func:`as_direction`, :func:`as_float_array`, :func:`unit_vector`
a row mask, row flags      :func:`as_mask`
a flag                     :func:`as_flag`
one of a set of words      :func:`as_choice`
a thread count             :func:`as_threads`
a file to read             :func:`regular_file`, :func:`as_folder`
=========================  ==================================================================

Numbers: ``bool`` is never a number here (``True`` is not a layer, a bound or
a count), strings are never parsed (``'0'`` is not a bound), complex values
are refused (their imaginary part would be dropped), and a finite value that
float32 cannot hold (``1e39``) is refused rather than rounded to infinity.
NumPy scalars and 0-d arrays count as the numbers they hold.

Values in a tensor on a device other than the CPU are checked for their
dtype and shape only: reading them would synchronise the device (and would
break CUDA graphs); the kernels' own rules apply to them. (Masks are the
exception: their 0 / 1 check is one small read.) Meta tensors hold no values;
the ops refuse them beside tensors that do.

Works on Python numbers, NumPy arrays and torch tensors (torch is imported
only when a tensor is given).
"""

from __future__ import annotations

import errno
import math
import numbers
import operator
import os
import stat
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "FLOAT32_MAX",
    "as_bound",
    "as_choice",
    "as_direction",
    "as_flag",
    "as_float",
    "as_float_array",
    "as_int",
    "as_layer",
    "as_layers",
    "as_mask",
    "as_positive_int",
    "as_real",
    "as_threads",
    "check_bounds",
    "as_folder",
    "regular_file",
    "show",
    "unit_vector",
]

INF = math.inf
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def show(v: Any, limit: int = 60) -> str:
    """``v`` for a message: its repr, shortened; arrays and tensors by dtype and shape."""
    if _is_tensor(v):
        return f"a tensor of dtype {str(v.dtype).replace('torch.', '')} and shape {tuple(v.shape)} on {v.device}"
    if isinstance(v, np.ndarray) and v.ndim > 0:
        return f"an array of dtype {v.dtype} and shape {v.shape}"
    if isinstance(v, (np.generic, np.ndarray)):
        v = v.item() if v.dtype.kind in "biufc" else v
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is(v: Any) -> str:
    """``= 'x' is a str`` for a message (``is None`` for None)."""
    if v is None:
        return "is None"
    name = type(v).__name__
    return f"= {show(v)} is {'an' if name[:1] in 'aeiou' else 'a'} {name}"


# ---- integers --------------------------------------------------------------------------------------


def as_int(
    value: Any, what: str, *, min: int | None = None, max: int | None = None, expected: str = ""
) -> int:
    """``value`` as a Python int: an ``int``, a NumPy integer or a 0-d integer
    array or tensor. Refuses bools, floats (``2.0`` and ``2.5`` alike: say
    ``int(x)`` if you mean it), strings and None (TypeError), and values
    outside ``[min, max]`` (ValueError). ``expected`` replaces the default
    description of what was expected."""
    exp = expected or _int_range_text(min, max)
    if isinstance(value, (bool, np.bool_)) or (
        (_is_tensor(value) or isinstance(value, np.ndarray)) and _dtype_kind(value) == "b"
    ):
        raise TypeError(f"{what} = {show(value)} is a bool (expected {exp})")
    if (_is_tensor(value) or isinstance(value, np.ndarray)) and (
        tuple(value.shape) != () or _dtype_kind(value) not in "iu"
    ):
        raise TypeError(f"{what} = {show(value)} (expected {exp})")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} {_is(value)} (expected {exp})") from None
    if (min is not None and v < min) or (max is not None and v > max):
        raise ValueError(f"{what} = {v} is out of range (expected {exp})")
    return int(v)


def _int_range_text(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"an integer {lo}..{hi}"
    if lo == 1:
        return "a positive integer"
    if lo == 0:
        return "an integer >= 0"
    if lo is not None:
        return f"an integer >= {lo}"
    if hi is not None:
        return f"an integer <= {hi}"
    return "an integer"


def as_positive_int(value: Any, what: str) -> int:
    """A count that must be at least 1 (a batch size, a capacity, a number of tokens)."""
    return as_int(value, what, min=1)


def as_layer(value: Any, what: str, n_layers: int) -> int:
    """A layer index ``0 <= layer < n_layers`` (layer ``i`` is block ``i``'s output)."""
    return as_int(
        value,
        what,
        min=0,
        max=n_layers - 1,
        expected=f"a layer index 0..{n_layers - 1}: the model has {n_layers} layers",
    )


def as_layers(
    values: Any, what: str, n_layers: int, *, unique: bool = True, allow_empty: bool = False
) -> list[int]:
    """Layer indices from an int, a range, or a list/tuple/array/tensor of ints,
    in the order given; each checked by :func:`as_layer`. A string, a set (no
    order) or None is a TypeError; an empty list or (with ``unique``) a
    repeated layer is a ValueError."""
    if values is None or isinstance(values, (str, bytes, set, frozenset, dict)):
        raise TypeError(
            f"{what} = {show(values)} (expected a layer index, a range or a list of layer indices)"
        )
    if _is_tensor(values) or isinstance(values, np.ndarray):
        if values.ndim == 0:
            return [as_layer(values, f"{what}", n_layers)]
        if values.ndim != 1:
            raise ValueError(f"{what}: shape {tuple(values.shape)} (expected a 1-D list of layer indices)")
        values = list(values)
    elif isinstance(values, (numbers.Integral, np.integer, bool, np.bool_, float, np.floating)):
        return [as_layer(values, what, n_layers)]
    try:
        items = list(values)
    except TypeError:
        raise TypeError(
            f"{what} {_is(values)} "
            "(expected a layer index, a range or a list of layer indices)"
        ) from None
    out = [as_layer(x, f"{what}[{j}]", n_layers) for j, x in enumerate(items)]
    if not out and not allow_empty:
        raise ValueError(f"{what} is empty (expected at least one layer index 0..{n_layers - 1})")
    if unique and len(set(out)) != len(out):
        raise ValueError(f"{what} = {out} repeat a layer (expected each layer once)")
    return out


# ---- floats ------------------------------------------------------------------------------------------


def as_float(
    value: Any,
    what: str,
    *,
    finite: bool = True,
    min: float | None = None,
    max: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    expected: str = "",
) -> float:
    """A real-number setting as a Python float (a temperature, a percentile, a
    norm): an int or float (NumPy scalars and 0-d arrays included), not a bool,
    a string or a complex. NaN is always refused; infinities unless
    ``finite=False``; values outside ``[min, max]`` (the end open with
    ``min_open`` / ``max_open``) too."""
    exp = expected or _float_range_text(finite, min, max, min_open, max_open)
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} = {value!r} is a bool (expected {exp})")
    if (_is_tensor(value) or isinstance(value, np.ndarray)) and tuple(value.shape) == ():
        if _dtype_kind(value) not in "iuf":
            raise TypeError(f"{what} = {show(value)} (expected {exp})")
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{what} {_is(value)} (expected {exp})")
    v = float(value)
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ValueError(f"{what} = {v!r} (expected {exp})")
    if (min is not None and (v < min or (min_open and v == min))) or (
        max is not None and (v > max or (max_open and v == max))
    ):
        lo = "-inf" if min is None else f"{min:g}"
        hi = "inf" if max is None else f"{max:g}"
        interval = f"{'(' if min_open or min is None else '['}{lo}, {hi}{')' if max_open or max is None else ']'}"
        raise ValueError(f"{what} = {v!r} is outside {interval} (expected {exp})")
    return v


def _float_range_text(finite: bool, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool = False) -> str:
    parts = ["a finite number" if finite else "a number (not NaN)"]
    if lo is not None and hi is not None:
        parts.append(f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")
    elif lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    elif hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " ".join(parts)


def _dtype_kind(x: Any) -> str:
    """NumPy's dtype kind letter of an array or tensor: 'b', 'i', 'u', 'f', 'c', or
    another letter for strings, objects and the like; user dtypes that cast
    safely to float32 (ml_dtypes.bfloat16) count as 'f'."""
    if _is_tensor(x):
        import torch

        if x.dtype == torch.bool:
            return "b"
        if x.dtype.is_complex:
            return "c"
        if x.dtype.is_floating_point:
            return "f"
        return "u" if x.dtype == torch.uint8 else "i"
    dt = x.dtype
    if dt.kind == "V" and np.can_cast(dt, np.float32, "safe"):
        return "f"
    return dt.kind


def _array_of(value: Any, what: str, kinds: str, expected: str) -> Any:
    """``value`` as a tensor (as it is) or a NumPy array, whose dtype kind
    (:func:`_dtype_kind`) is one of ``kinds``; a TypeError naming ``what`` otherwise."""
    if _is_tensor(value):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{what} = {show(value)} cannot be read as an array ({exc}; expected {expected})") from None
    if _dtype_kind(arr) not in kinds:
        raise TypeError(f"{what}: dtype {str(arr.dtype).replace('torch.', '')} (expected {expected})")
    return arr


def _host(x: Any) -> np.ndarray | None:
    """The values of an array or tensor as a NumPy array, or None for a tensor on
    a device (its values are left to the kernels) ."""
    if _is_tensor(x):
        if x.device.type != "cpu":
            return None
        import torch

        t = x.detach().resolve_conj().resolve_neg()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.numpy()
    return x


def _first(mask: np.ndarray) -> str:
    """``[i, j]`` of the first True element of ``mask`` ("" for a 0-d array)."""
    if mask.ndim == 0:
        return ""
    idx = np.unravel_index(int(np.flatnonzero(mask)[0]), mask.shape)
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def as_real(value: Any, what: str, *, finite: bool = False, nan_hint: str = "") -> Any:
    """Per-row numbers (a bound, a target, a coefficient): a Python float for a
    number (int, float, NumPy scalar or 0-d array); a float32 NumPy array for
    a list or an array; a float32 tensor on its own device for a tensor.

    Refused: None, bools, strings, complex values and any array whose dtype is
    not a float or integer dtype (TypeError); NaN (ValueError; ``nan_hint``
    says what to write instead); with ``finite``, infinities; and finite
    values beyond the float32 range, which would become infinities (the rule
    of the C core for Python numbers, applied to every form here). Values of
    a tensor on another device than the CPU are not read."""
    exp = "a finite number" if finite else "a number"
    if value is None or isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(
            f"{what} {_is(value)} (expected {exp}, or an array of numbers)"
        )
    if isinstance(value, numbers.Real):
        v = float(value)
        _check_real_values(np.asarray(v), what, finite, nan_hint, value)
        return v
    if isinstance(value, numbers.Complex):
        raise TypeError(f"{what} = {show(value)} is complex (expected {exp}; take .real deliberately)")
    arr = _array_of(value, what, "iuf", f"{exp}, or an array of floats or integers")
    if _is_tensor(arr):
        import torch

        host = _host(arr)
        if host is not None:
            _check_real_values(host, what, finite, nan_hint, value)
        return arr.detach().to(torch.float32)
    _check_real_values(arr, what, finite, nan_hint, value)
    if arr.ndim == 0:
        return float(arr)
    return np.asarray(arr, dtype=np.float32)


def _check_real_values(arr: np.ndarray, what: str, finite: bool, nan_hint: str, shown: Any) -> None:
    if arr.dtype.kind not in "f" and arr.dtype.kind != "V":
        return  # integers: always finite, and no int64 is beyond the float32 range
    a = np.asarray(arr, dtype=np.float64)
    nan = np.isnan(a)
    if nan.any():
        hint = f"; {nan_hint}" if nan_hint else ""
        raise ValueError(f"{what}{_first(nan)} is NaN (expected {'a finite number' if finite else 'a number'}{hint})")
    if finite:
        inf = np.isinf(a)
        if inf.any():
            raise ValueError(f"{what}{_first(inf)} = {a[inf].flat[0]} (expected a finite number)")
    if arr.dtype.itemsize > 4:
        with np.errstate(over="ignore"):
            over = np.isfinite(a) & ~np.isfinite(a.astype(np.float32))
        if over.any():
            raise ValueError(
                f"{what}{_first(over)} = {a[over].flat[0]:g} is beyond the float32 range "
                f"(expected a magnitude <= 3.4e38, or an infinity)"
            )


def as_bound(value: Any, what: str, side: str) -> Any:
    """One side of a cap (``side`` ``"lo"`` or ``"hi"``): :func:`as_real`, where
    NaN is refused (write ``-inf`` / ``+inf`` for "no bound on that side") and so
    is the infinity that is not a bound (``lo = +inf``, ``hi = -inf``)."""
    ok = -INF if side == "lo" else INF
    bad = -ok
    v = as_real(value, what, nan_hint=f"a finite bound, or {ok} for no bound on that side; NaN is not a bound")
    host = v if isinstance(v, float) else _host(v)
    if host is not None and (np.asarray(host) == bad).any():
        raise ValueError(
            f"{what} = {bad} is not a bound (expected a finite bound, or {ok} for no bound on that side)"
        )
    return v


def check_bounds(lo: Any, hi: Any, where: str) -> tuple[Any, Any]:
    """Capping bounds ``lo <= <h, u> <= hi``, each a number or per-row values:
    both checked by :func:`as_bound` and then ``lo <= hi`` where both can be
    read. Returns them as :func:`as_real` does. ``where`` starts each message
    ("clamp_", "thresholds at layer 3", "steps[0]")."""
    lo = as_bound(lo, f"{where}: lo", "lo")
    hi = as_bound(hi, f"{where}: hi", "hi")
    a = lo if isinstance(lo, float) else _host(lo)
    b = hi if isinstance(hi, float) else _host(hi)
    if a is not None and b is not None:
        try:
            over = np.asarray(a) > np.asarray(b)
        except ValueError:
            return lo, hi  # shapes that do not broadcast: the op names them
        if over.any():
            if over.ndim == 0:
                raise ValueError(f"{where}: lo = {float(a)!r} > hi = {float(b)!r} (expected lo <= hi)")
            raise ValueError(f"{where}: lo{_first(over)} > hi{_first(over)} (expected lo <= hi on every row)")
    return lo, hi


# ---- directions, masks, flags ----------------------------------------------------------------------


def as_float_array(value: Any, what: str, shape: tuple, *, narrow: bool = False, expected: str = "") -> Any:
    """An array of real floats of ``shape`` (``None`` for a size left free):
    float32 or float64 (and with ``narrow`` float16 and bfloat16 too), returned
    as float32 — a NumPy array for a list or an array, a tensor on its own
    device for a tensor. Complex, integer, bool and string dtypes are a
    TypeError (a complex array would lose its imaginary part; an integer one
    is usually a mistake: write floats); another shape is a ValueError.
    Values are not read."""
    want = "(" + ", ".join("d" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
    exp = expected or f"shape {want}"
    if value is None or isinstance(value, (str, bytes, numbers.Number)):
        raise TypeError(f"{what} {_is(value)} (expected an array of floats, {exp})")
    if _is_tensor(value):
        import torch

        allowed = (torch.float32, torch.float64) + ((torch.float16, torch.bfloat16) if narrow else ())
        dtype, got = value.dtype, tuple(value.shape)
    else:
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{what} cannot be read as an array of floats ({exc})") from None
        allowed = (np.dtype(np.float32), np.dtype(np.float64)) + ((np.dtype(np.float16),) if narrow else ())
        dtype, got = value.dtype, value.shape
        if narrow and dtype.kind == "V" and np.can_cast(dtype, np.float32, "safe"):
            allowed = allowed + (dtype,)
    if dtype not in allowed:
        names = "float32, float64, float16 or bfloat16" if narrow else "float32 or float64"
        why = {
            "c": "complex values would lose their imaginary part",
            "i": "integer values are usually a mistake; write floats",
            "u": "integer values are usually a mistake; write floats",
            "b": "a bool array is a mask, not values",
            "f": "float16 and bfloat16 lose precision; convert with .astype(np.float32) deliberately",
        }.get(_dtype_kind(value), "not numbers")
        raise TypeError(f"{what}: dtype {str(dtype).replace('torch.', '')} (expected {names}; {why})")
    if len(got) != len(shape) or any(n is not None and g != n for g, n in zip(got, shape)):
        raise ValueError(f"{what}: shape {got} (expected {exp})")
    if _is_tensor(value):
        import torch

        return value.detach().to(torch.float32)
    return np.asarray(value, dtype=np.float32)


def as_direction(value: Any, what: str, d: int | None = None, *, narrow: bool = False) -> Any:
    """A direction ``(d,)``: :func:`as_float_array` of one vector (float32 or
    float64; with ``narrow`` float16 and bfloat16 too, which the attachment
    converts once). Values are not checked here (the unit-norm check of the
    op, or :func:`unit_vector`, reads them)."""
    return as_float_array(
        value,
        what,
        (d,),
        narrow=narrow,
        expected=f"shape ({d if d is not None else 'd'},): one vector as long as the hidden size",
    )


def as_mask(value: Any, what: str = "mask") -> Any:
    """Row flags (a mask: False/0 = leave the row alone; or per-row on/off
    switches): None, a bool, or a bool or integer array/tensor whose values are
    all 0 or 1. Returned as a bool (for a scalar), a bool NumPy array or a bool
    tensor on its own device. A float mask (``0.5`` is neither) and anything
    else is a TypeError; an integer other than 0 and 1 a ValueError."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    exp = "bool values, or integers 0 / 1 (0 = leave the row alone)"
    if isinstance(value, (str, bytes, float, complex, np.floating, np.complexfloating)):
        raise TypeError(f"{what} {_is(value)} (expected {exp})")
    arr = _array_of(value, what, "biu", f"{exp}; use mask > 0.5 or mask.astype(bool)")
    if _dtype_kind(arr) == "b":
        return arr
    if _is_tensor(arr):
        if arr.device.type == "meta":
            return arr != 0  # no values to check; the op refuses it beside real data
        bad = (arr != 0) & (arr != 1)
        if bool(bad.any()):
            where = _first(bad.cpu().numpy())
            raise ValueError(f"{what}{where} = {int(arr[bad].reshape(-1)[0])} (expected {exp})")
        return arr != 0
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        raise ValueError(f"{what}{_first(bad)} = {arr[bad].flat[0]} (expected {exp})")
    return arr != 0 if arr.ndim else bool(arr)


def as_flag(value: Any, what: str) -> bool:
    """A yes/no option: True or False (NumPy bools too), not 1, 'yes' or None."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{what} {_is(value)} (expected True or False)")


def as_choice(value: Any, what: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (strings, compared exactly)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} {_is(value)} (expected one of {list(choices)})")
    if value not in choices:
        raise ValueError(f"{what} = {value!r} (expected one of {list(choices)})")
    return value


def as_threads(value: Any, what: str = "threads") -> int:
    """A thread count for the NumPy path: 0 (or None) for the default, or a positive number."""
    if value is None:
        return 0
    return as_int(value, what, min=0, expected="0 for the default, or a positive number of threads")


def unit_vector(v: Any, what: str, hint: str = "") -> Any:
    """``v / ||v||`` as float32, the norm taken in float64: a torch tensor for
    a tensor (on its device), a NumPy array otherwise. ``v`` must be a real
    float vector (:func:`as_direction`, any float width); a zero or non-finite
    vector is a ValueError naming ``what`` (and adding ``hint``)."""
    if _is_tensor(v):
        import torch

        if v.dim() != 1:
            raise ValueError(f"{what}: shape {tuple(v.shape)} (expected (d,): one vector)")
        as_direction(v, what, narrow=True)
        v64 = v.detach().to(torch.float64)
        norm = float(torch.linalg.vector_norm(v64))
    else:
        as_direction(v, what, narrow=True)
        v64 = np.asarray(v, dtype=np.float64)
        norm = float(np.linalg.norm(v64))
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError(f"{what} has norm {norm} (expected a finite, non-zero vector to normalise{hint})")
    out = v64 / norm
    return out.to(torch.float32) if _is_tensor(v) else out.astype(np.float32)


# ---- files ---------------------------------------------------------------------------------------------


def _as_path(path: Any, what: str) -> Path:
    if isinstance(path, (bytes, bytearray)):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} {_is(path)} (expected a path: str or os.PathLike)")
    p = Path(path)
    if str(p) == "" or str(path) == "":
        raise ValueError(f"{what} is an empty path (expected a file name)")
    return p


def _stat(p: Path, what: str) -> os.stat_result | None:
    try:
        return p.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{what} {p}: a symbolic link loop (expected a file)") from None
        if exc.errno == errno.ENAMETOOLONG:
            raise ValueError(f"{what} {p}: the name is too long (expected a file)") from None
        if exc.errno == errno.ENOTDIR:
            return None
        raise


def regular_file(path: Any, what: str = "path") -> Path:
    """``path`` as a Path to an existing regular file (symbolic links followed),
    checked before anything opens it: a missing file is a FileNotFoundError; a
    directory, a FIFO (which would block a reader forever), a device, a socket
    or a symbolic link loop is a ValueError saying what it is."""
    p = _as_path(path, what)
    st = _stat(p, what)
    if st is None:
        raise FileNotFoundError(f"{what} {p}: no such file")
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return p
    kind = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO (named pipe); reading it would block"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    raise ValueError(f"{what} {p}: {kind} (expected a regular file)")


def as_folder(path: Any, what: str = "folder", *, must_exist: bool = True) -> Path:
    """``path`` as a Path to a directory: an existing file there (or a FIFO...)
    is a ValueError; a missing one a FileNotFoundError unless ``must_exist`` is
    False (a folder a step will create)."""
    p = _as_path(path, what)
    st = _stat(p, what)
    if st is None:
        if must_exist:
            raise FileNotFoundError(f"{what} {p}: no such folder")
        return p
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{what} {p}: not a folder (expected a directory)")
    return p

