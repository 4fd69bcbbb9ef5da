"""src/xent/__init__.pyi says what the runtime does: the same public names, and for
each function and method the same parameters (names, kinds, defaults).

The stub is read with ``ast`` (not imported), so a type checker's view is what is
compared.  Overloads may narrow a default away (``return_grad: Literal[True]`` has
none, so that the caller must pass it); every default they do give must be the
runtime's, and their parameter names and kinds must be the runtime's.
"""

import ast
import inspect
import pathlib

import pytest

import xent

STUB = pathlib.Path(xent.__file__).with_name("__init__.pyi")
_MISSING = object()


def _stub_module():
    return ast.parse(STUB.read_text(), filename=str(STUB))


def _is_overload(node):
    return any(
        (isinstance(d, ast.Name) and d.id == "overload")
        or (isinstance(d, ast.Attribute) and d.attr == "overload")
        for d in node.decorator_list
    )


def _is_property(node):
    return any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)


def _public_stub_names(body):
    """Names a stub body defines for its users: functions, classes, annotated
    variables; the private aliases (``_Loss``) and imports are not public."""
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_") or n.startswith("__")}


def _stub_defs(body):
    """{name: [FunctionDef, ...]} of a stub body (several for an overloaded name)."""
    defs = {}
    for node in body:
        if isinstance(node, ast.FunctionDef):
            defs.setdefault(node.name, []).append(node)
    return defs


def _stub_params(node):
    """[(name, kind, default or _MISSING)] of a stub function, in order."""
    a = node.args
    positional = a.posonlyargs + a.args
    defaults = [_MISSING] * (len(positional) - len(a.defaults)) + [
        ast.literal_eval(d) for d in a.defaults
    ]
    params = []
    for i, (arg, default) in enumerate(zip(positional, defaults)):
        kind = (
            inspect.Parameter.POSITIONAL_ONLY
            if i < len(a.posonlyargs)
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        params.append((arg.arg, kind, default))
    if a.vararg is not None:
        params.append((a.vararg.arg, inspect.Parameter.VAR_POSITIONAL, _MISSING))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        value = _MISSING if default is None else ast.literal_eval(default)
        params.append((arg.arg, inspect.Parameter.KEYWORD_ONLY, value))
    if a.kwarg is not None:
        params.append((a.kwarg.arg, inspect.Parameter.VAR_KEYWORD, _MISSING))
    return params


def _runtime_params(func):
    params = []
    for p in inspect.signature(func).parameters.values():
        default = _MISSING if p.default is inspect.Parameter.empty else p.default
        params.append((p.name, p.kind, default))
    return params


def _assert_same_signature(stub_nodes, runtime, where):
    expected = _runtime_params(runtime)
    if len(stub_nodes) == 1 and not _is_overload(stub_nodes[0]):
        assert _stub_params(stub_nodes[0]) == expected, where
        return
    assert all(_is_overload(n) for n in stub_nodes), f"{where}: overloads without @overload"
    for i, node in enumerate(stub_nodes):
        params = _stub_params(node)
        assert [p[:2] for p in params] == [p[:2] for p in expected], f"{where}, overload {i}"
        for (name, _, default), (_, _, runtime_default) in zip(params, expected):
            if default is not _MISSING:
                assert default == runtime_default, f"{where}, overload {i}: default of {name}"


def _stub_classes():
    return {n.name: n for n in _stub_module().body if isinstance(n, ast.ClassDef)}


def test_stub_names_are_the_public_names():
    assert _public_stub_names(_stub_module().body) == set(xent.__all__)


FUNCTIONS = sorted(_stub_defs(_stub_module().body))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_signature(name):
    _assert_same_signature(_stub_defs(_stub_module().body)[name], getattr(xent, name), name)


def _method_cases():
    cases = []
    for cls_name, node in sorted(_stub_classes().items()):
        for name, defs in sorted(_stub_defs(node.body).items()):
            cases.append((cls_name, name))
    return cases


@pytest.mark.parametrize("cls_name, name", _method_cases())
def test_method_signature(cls_name, name):
    defs = _stub_defs(_stub_classes()[cls_name].body)[name]
    runtime = inspect.getattr_static(getattr(xent, cls_name), name)
    if all(_is_property(d) for d in defs):
        assert isinstance(runtime, property), f"{cls_name}.{name} is not a property"
        runtime = runtime.fget
    _assert_same_signature(defs, runtime, f"{cls_name}.{name}")


@pytest.mark.parametrize("cls_name", sorted(_stub_classes()))
def test_class_members(cls_name):
    """The stub lists every public method, property and field of the class, and no more."""
    cls = getattr(xent, cls_name)
    runtime = {
        name
        for name, value in vars(cls).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }
    runtime |= set(getattr(cls, "__dataclass_fields__", ()))
    runtime |= set(getattr(cls, "_fields", ()))  # a named tuple's fields
    body = _stub_classes()[cls_name].body
    stub = {n for n in _public_stub_names(body) if not n.startswith("__")}
    assert stub == runtime
