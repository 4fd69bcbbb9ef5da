"""Results in the caller's array type: the one layer between xent's public functions
and its NumPy core (SPEC, "Conventions": results come back in the caller's array type).

`follow_caller_namespace` wraps a public function.  A call whose arguments are
NumPy arrays and plain data (Python scalars, lists, tuples, strings, None) goes
straight to the core: the wrapper only looks at the type of each argument.
Anything else takes `_call`, which sorts the arguments by value (never by name,
so new keyword arguments need nothing here):

- arrays of another array-API namespace on the CPU (PyTorch, JAX,
  ``array_api_strict``, anything with ``__dlpack__``) are read without a copy
  through DLPack, and every array result is returned in that namespace (0-d
  arrays for results with no dimensions); an ``out=``/``grad_out=`` of that
  namespace is written in place and returned as the caller's own object;
- Dask arrays go to the function of the same name in `xent.dask` (lazy results);
- the errors: two namespaces in one call (NumPy arrays included, as SciPy's
  ``array_namespace`` refuses them) -> TypeError; a tensor that requires grad ->
  TypeError pointing to `xent.torch`; an array on a device other than the CPU ->
  ValueError; a bfloat16 tensor without ``ml_dtypes`` -> TypeError.
- dtype objects of another namespace (``torch.float64`` as ``dtype=``) become
  NumPy dtypes.

Every check runs before the core is called, so a call that raises has written
nothing.  Namespace detection is array-api-compat's (the library SciPy and
scikit-learn use); it is needed only when such an array is passed.
"""

import functools
import inspect
import sys

import numpy as np

# Types that never need this layer: the fast path tests `type(value) in _PLAIN`.
# Lists and tuples are plain data (np.asarray reads them, as before); they are
# not searched for arrays.  NumPy scalars, dtypes and scalar types (``dtype=np.float32``)
# are plain too.
_PLAIN = frozenset(
    {np.ndarray, int, float, bool, str, type(None), tuple, list, slice, type}
    | {np.dtype(code).type for code in np.typecodes["All"]}
    | {type(np.dtype(code)) for code in np.typecodes["All"]}
)

# DLPack's device codes (dlpack.h, DLDeviceType), for the error message.
_DLPACK_CPU = 1
_DLPACK_DEVICES = {
    2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi",
    10: "rocm", 11: "rocm_host", 13: "cuda_managed", 14: "oneapi", 15: "webgpu",
    16: "hexagon", 17: "maia",
}


def follow_caller_namespace(func, *, method=False):
    """`func` returning its results in the namespace of its array arguments.

    `method`: `func` is a method; its first argument (the instance) is not looked at.
    The wrapper keeps `func`'s name, docstring and signature (``functools.wraps``).

    The commonest call, the required arguments alone and by position
    (``cross_entropy(logits, target)``), is tested by a wrapper generated with those
    parameters (about 0.1 µs); any other call goes through the ``*args, **kwargs``
    wrapper (about 0.35 µs: packing and unpacking the arguments is what costs).

    A function may name a compiled path for that commonest call in its attribute
    ``defaults_fast_path``: ``(compiled, extra)``, called as
    ``compiled(*required, *extra)``; it returns the result, or None for anything it
    does not take (then the call goes on as above).  It must return None unless its
    array arguments are exact NumPy arrays (so its result is NumPy's by the rule
    here).  The wrapper then costs nothing over the function itself: the compiled
    call replaces the function's own frame (``cross_entropy`` 256x10: BENCHMARKS.md).
    """
    signature = inspect.signature(func)
    generic = _generic_wrapper(func, signature, method)
    required = []
    for p in signature.parameters.values():
        if p.kind is not p.POSITIONAL_OR_KEYWORD or p.default is not p.empty:
            break
        required.append(p.name)
    if not required:
        return generic
    looked_at = required[1:] if method else required
    test = " and ".join(f"type({n}) in _plain" for n in looked_at) or "True"
    names = ", ".join(required)
    scope = {"_func": func, "_generic": generic, "_plain": _PLAIN}
    fast = ""
    compiled, extra = getattr(func, "defaults_fast_path", (None, ()))
    if compiled is not None:
        # the extra arguments as names of the scope: no tuple built per call
        scope.update({f"_extra{i}": value for i, value in enumerate(extra)})
        scope["_compiled"] = compiled
        passed = ", ".join([names] + [f"_extra{i}" for i in range(len(extra))])
        fast = (
            f"        result = _compiled({passed})\n"
            f"        if result is not None:\n"
            f"            return result\n"
        )
    source = (
        f"def wrapper({names}, *args, **kwargs):\n"
        f"    if not args and not kwargs:\n"
        f"{fast}"
        f"        if {test}:\n"
        f"            return _func({names})\n"
        f"    return _generic({names}, *args, **kwargs)\n"
    )
    exec(source, scope)  # noqa: S102 (built from func's own parameter names)
    return functools.wraps(func)(scope["wrapper"])


def signature_defaults(func, *names):
    """The defaults of `func`'s parameters `names`, in that order (for the extra
    arguments of a ``defaults_fast_path``, so they follow the signature)."""
    parameters = inspect.signature(func).parameters
    return tuple(parameters[name].default for name in names)


def _generic_wrapper(func, signature, method):
    """The wrapper for any call: each argument's type tested in a loop."""
    plain = _PLAIN  # (locals of the closure: faster than globals on the fast path)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        for value in args[1 if method else 0 :]:
            if type(value) not in plain:
                return _call(func, signature, args, kwargs)
        if kwargs:
            for value in kwargs.values():
                if type(value) not in plain:
                    return _call(func, signature, args, kwargs)
        return func(*args, **kwargs)

    return wrapper


def _public_name(func):
    return "xent." + func.__qualname__


# ---- sorting the arguments ------------------------------------------------------


def _is_dask_array(value):
    # array-api-compat's test, without importing dask (or array-api-compat) for it
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(value, da.Array)


def _is_foreign_array(value):
    """An array of another namespace: what DLPack or the array API can read.
    NumPy scalars (which have ``__dlpack__``) are plain data, as Python's; classes
    (``np.float32`` has an unbound ``__array_namespace__``) are not arrays."""
    return not isinstance(value, (np.ndarray, np.generic, type)) and (
        hasattr(value, "__dlpack__") or hasattr(value, "__array_namespace__")
    )


def _is_foreign_dtype(value):
    """A dtype object of another namespace (``torch.float64``, ``array_api_strict.float32``)."""
    if isinstance(value, (np.dtype, type)):
        return False
    return type(value).__name__ in ("dtype", "DType") and not type(value).__module__.startswith(
        "numpy"
    )


class _Arguments:
    """A call's arguments by name, sorted into NumPy arrays, arrays of other
    namespaces, Dask arrays and foreign dtype objects."""

    def __init__(self, func, signature, args, kwargs):
        self.func = func
        self.bound = signature.bind(*args, **kwargs)
        self.numpy, self.foreign, self.dask, self.dtypes = [], [], [], []
        for name, value in self.bound.arguments.items():
            if _is_dask_array(value):
                self.dask.append(name)
            elif isinstance(value, np.ndarray):
                self.numpy.append(name)
            elif _is_foreign_dtype(value):
                self.dtypes.append(name)
            elif _is_foreign_array(value):
                self.foreign.append(name)

    def __getitem__(self, name):
        return self.bound.arguments[name]

    def replace(self, converted):
        """(args, kwargs) with the arguments named in `converted` replaced."""
        self.bound.arguments.update(converted)
        return self.bound.args, self.bound.kwargs


def _call(func, signature, args, kwargs):
    try:
        arguments = _Arguments(func, signature, args, kwargs)
    except TypeError:
        return func(*args, **kwargs)  # Python's own message for a bad call
    converted = {name: _numpy_dtype(arguments[name], name, func) for name in arguments.dtypes}
    if arguments.dask:
        return _to_dask(arguments, converted)
    if not arguments.foreign:  # NumPy subclasses, NumPy scalars, mapped dtypes
        return _run(func, arguments, converted)
    xp = _common_namespace(arguments)
    views = {}  # id(caller's array) -> its NumPy view: the same array read once
    originals = {}  # id(NumPy view) -> the caller's array (out= comes back as itself)
    for name in arguments.foreign:
        value = arguments[name]
        view = views.get(id(value))
        if view is None:
            view = views[id(value)] = _numpy_view(value, name, func)
            originals[id(view)] = value
        converted[name] = view
    dtype = _namespace_promotion(arguments, xp, func)
    if dtype is not None:
        converted["dtype"] = dtype
    result = _run(func, arguments, converted)
    return _to_namespace(result, xp, originals)


def _namespace_promotion(arguments, xp, func):
    """The NumPy dtype that makes integer and bool arrays of namespace `xp` promote
    as `xp` promotes them (torch: an int tensor computes in the default float dtype,
    an int `b` with float32 `x` stays float32), or None: NumPy's rule (integers become
    float64) is kept for NumPy arrays only, and floating arrays need nothing.

    Only for a function with a ``dtype=`` argument that names, in its attribute
    ``dtype_from``, the arguments whose values set its computation dtype (the
    normalizers: ``("x", "b")``), when the caller left ``dtype=None``."""
    value_arguments = getattr(func, "dtype_from", ())
    if not value_arguments or arguments.bound.arguments.get("dtype") is not None:
        return None
    values = [arguments[n] for n in value_arguments if n in arguments.foreign]
    if not values or all(xp.isdtype(v.dtype, "real floating") for v in values):
        return None
    if not all(xp.isdtype(v.dtype, ("real floating", "integral", "bool")) for v in values):
        return None  # complex and others: the core's TypeError
    promoted = xp.result_type(*values)
    if not xp.isdtype(promoted, "real floating"):
        promoted = xp.__array_namespace_info__().default_dtypes()["real floating"]
    return _numpy_dtype(promoted, "dtype", func) if type(promoted).__module__ != "numpy" else (
        np.dtype(promoted)
    )


def _run(func, arguments, converted):
    args, kwargs = arguments.replace(converted)
    return func(*args, **kwargs)


# ---- errors ---------------------------------------------------------------------


def _namespace_of(value, name, func):
    try:
        import array_api_compat
    except ImportError:
        raise TypeError(
            f"{_public_name(func)}: {name} is a {type(value).__module__}.{type(value).__name__}; "
            "xent returns results in the caller's array namespace through the "
            "array-api-compat package: pip install 'xent[array-api]' (or pass a NumPy array)"
        ) from None
    try:
        return array_api_compat.array_namespace(value)
    except TypeError as e:
        raise TypeError(
            f"{_public_name(func)}: {name} ({type(value).__name__}) is not an array of a "
            f"namespace xent can read ({e})"
        ) from None


def _namespace_name(xp):
    return xp.__name__.removeprefix("array_api_compat.")


def _common_namespace(arguments):
    """The one namespace of the foreign arrays; TypeError if NumPy arrays or a second
    namespace come with them (SciPy's rule: no mixing, Python scalars and lists apart)."""
    func = arguments.func
    first = arguments.foreign[0]
    for name in arguments.foreign:
        _check_readable(arguments[name], name, func)
    xp = _namespace_of(arguments[first], first, func)
    for name in arguments.foreign[1:]:
        other = _namespace_of(arguments[name], name, func)
        if other is not xp:
            raise _mixed(func, first, _namespace_name(xp), name, _namespace_name(other))
    if arguments.numpy:
        raise _mixed(func, first, _namespace_name(xp), arguments.numpy[0], "numpy")
    return xp


def _mixed(func, name, namespace, other_name, other_namespace):
    return TypeError(
        f"{_public_name(func)}: mixed array namespaces in one call: {name} ({namespace}) "
        f"and {other_name} ({other_namespace}); pass arrays of one namespace "
        "(Python scalars, lists and tuples may come with any)"
    )


def _check_readable(value, name, func):
    """ValueError for an array not on the CPU; TypeError for a tensor requiring grad."""
    if getattr(value, "requires_grad", False) is True:
        raise TypeError(
            f"{_public_name(func)}: {name} requires grad; xent's NumPy core builds no autograd "
            f"graph: use {_autograd_counterpart(func)} for gradients through autograd, or "
            f"pass {name}.detach()"
        )
    device = _device_not_cpu(value)
    if device is not None:
        raise ValueError(
            f"{_public_name(func)}: {name} is on device {device}; xent computes on CPU "
            "arrays only (move it to the CPU first, e.g. .cpu() for a torch tensor)"
        )


def _autograd_counterpart(func):
    """Where the caller finds `func` as an autograd function: xent.torch.NAME, or
    xent.torch's list when it has no such function."""
    try:
        import xent.torch as xt
    except ImportError:  # (a tensor without torch importable: name the module)
        return "xent.torch"
    fn = func.__qualname__
    if fn in xt.__all__:
        return f"xent.torch.{fn}"
    return f"xent.torch (which offers {', '.join(xt.__all__)})"


def _device_not_cpu(value):
    """A description of `value`'s device when it is not the CPU, else None."""
    dlpack_device = getattr(value, "__dlpack_device__", None)
    if dlpack_device is None:
        return None
    try:
        code, index = dlpack_device()
    except Exception:  # e.g. torch's "meta" device, which DLPack cannot name
        return str(getattr(value, "device", "unknown to DLPack"))
    if int(code) == _DLPACK_CPU:
        return None
    device = getattr(value, "device", None)
    if device is not None and not callable(device):
        return str(device)
    return f"{_DLPACK_DEVICES.get(int(code), 'type ' + str(int(code)))}:{index}"


# ---- conversions ----------------------------------------------------------------


def _torch_bfloat16_view(value, name, func):
    """A bfloat16 tensor's memory as an ml_dtypes.bfloat16 array (NumPy's DLPack
    reader has no bfloat16): the same bytes read through an int16 view."""
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError(
            f"{_public_name(func)}: {name} is bfloat16, which NumPy reads through the "
            "ml_dtypes package: pip install ml_dtypes, or convert it with .float()"
        ) from None
    import torch

    return np.from_dlpack(value.view(torch.int16)).view(ml_dtypes.bfloat16)


def _numpy_view(value, name, func):
    """The caller's CPU array as a NumPy array sharing its memory (DLPack)."""
    if type(value).__module__ == "torch" and hasattr(value, "is_neg"):
        # DLPack drops torch's lazy negation/conjugation bits: materialise them.
        if value.is_neg():
            value = value.resolve_neg()
        if value.is_conj():
            value = value.resolve_conj()
        if str(value.dtype) == "torch.bfloat16":
            return _torch_bfloat16_view(value, name, func)
    if not hasattr(value, "__dlpack__"):
        return np.asarray(value)
    try:
        return np.from_dlpack(value)
    except (BufferError, RuntimeError, TypeError, ValueError) as e:
        if "bfloat16" in str(getattr(value, "dtype", "")):
            try:  # JAX and others hand out ml_dtypes.bfloat16 through __array__
                return np.asarray(value)
            except Exception:
                pass
        raise TypeError(
            f"{_public_name(func)}: {name} ({type(value).__name__} of dtype "
            f"{getattr(value, 'dtype', '?')}) cannot be read through DLPack: {e}"
        ) from None


def _numpy_dtype(value, name, func):
    """A dtype object of another namespace as the NumPy dtype with its name."""
    if type(value).__module__ == "torch":
        text = str(value).removeprefix("torch.")
        if text == "bfloat16":
            try:
                import ml_dtypes
            except ImportError:
                raise TypeError(
                    f"{_public_name(func)}: {name}=torch.bfloat16 needs the ml_dtypes package"
                ) from None
            return np.dtype(ml_dtypes.bfloat16)
        try:
            return np.dtype(text)
        except TypeError:
            raise TypeError(f"{_public_name(func)}: {name}={value} has no NumPy dtype") from None
    # Another namespace's dtype: the dtype NumPy sees in an empty array of it.
    xp = sys.modules.get(type(value).__module__.split(".")[0])
    try:
        return np.from_dlpack(xp.empty((0,), dtype=value)).dtype
    except Exception:
        raise TypeError(f"{_public_name(func)}: {name}={value!r} has no NumPy dtype") from None


def _to_namespace(result, xp, originals):
    """`result` (an array, a NumPy scalar, or a tuple of them) in namespace `xp`."""
    if isinstance(result, tuple):
        converted = [_to_namespace(r, xp, originals) for r in result]
        return type(result)(*converted) if hasattr(result, "_fields") else tuple(converted)
    if isinstance(result, np.ndarray):
        caller = originals.get(id(result))
        return caller if caller is not None else _from_numpy(result, xp)
    if isinstance(result, np.generic):
        return _from_numpy(np.asarray(result), xp)
    return result  # None, Python numbers, Evaluation


def _from_numpy(a, xp):
    if a.dtype.name == "bfloat16" and xp.__name__.endswith("torch"):  # (not in DLPack's reach)
        import torch

        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    try:
        return xp.from_dlpack(a)  # no copy
    except (BufferError, RuntimeError, TypeError, ValueError):
        return xp.asarray(a)


# ---- Dask -----------------------------------------------------------------------


def _to_dask(arguments, converted):
    """The call run by the function of the same name in xent.dask (lazy)."""
    func = arguments.func
    name = arguments.dask[0]
    if arguments.foreign:
        other = arguments.foreign[0]
        raise _mixed(func, name, "dask", other, type(arguments[other]).__module__.split(".")[0])
    import xent.dask

    fn = func.__qualname__
    counterpart = getattr(xent.dask, fn, None) if fn in xent.dask.__all__ else None
    if counterpart is None:
        raise TypeError(
            f"{_public_name(func)}: {name} is a Dask array, and xent.{fn} has no Dask "
            f"counterpart (xent.dask offers {', '.join(sorted(xent.dask.__all__))}); "
            "compute it first, or map it over the blocks"
        )
    args, kwargs = arguments.replace(converted)
    try:
        inspect.signature(counterpart).bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(
            f"{_public_name(func)}: {name} is a Dask array, which goes to xent.dask.{fn}: {e}"
        ) from None
    return counterpart(*args, **kwargs)
