"""The type stub of the compiled kernels (src/voxtral/_kernels.pyi) says what
the extension really exports: the same public functions, with the same
parameter names, order, kinds and defaults (read from the compiled module),
and the same Python types where the .pyx declares a C type for a parameter
(``str``, ``bint``, ``int64_t``/``int``, ``float``). mypy checks the callers
against the stub, so a stale stub would hide type errors instead of finding them."""

from __future__ import annotations

import ast
import inspect
import re
import types
from pathlib import Path

import pytest

from voxtral import _kernels

SRC = Path(__file__).resolve().parents[1] / "src" / "voxtral"
# C parameter types in the .pyx and the annotation the stub must give them
C_TO_PY = {"str": "str", "bint": "bool", "int": "int", "int64_t": "int", "float": "float", "double": "float"}


def _stub_functions() -> dict[str, ast.FunctionDef]:
    tree = ast.parse((SRC / "_kernels.pyi").read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _module_functions() -> dict[str, object]:
    return {
        name: obj
        for name, obj in vars(_kernels).items()
        if not name.startswith("_") and callable(obj) and not isinstance(obj, (types.ModuleType, type))
    }


def _pyx_c_types() -> dict[str, dict[str, str]]:
    """Parameter name -> declared C type, per public def of the .pyx."""
    text = (SRC / "_kernels.pyx").read_text()
    out: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"^def ([a-z]\w*)\((.*?)\):", text, re.M | re.S):
        params: dict[str, str] = {}
        for part in m.group(2).split(","):
            words = part.split("=")[0].split()
            if len(words) == 2:
                params[words[1]] = words[0]
        out[m.group(1)] = params
    return out


def test_stub_and_module_export_the_same_functions():
    stub, module = set(_stub_functions()), set(_module_functions())
    assert module - stub == set(), "in the compiled module but not in _kernels.pyi"
    assert stub - module == set(), "in _kernels.pyi but not in the compiled module"


@pytest.mark.parametrize("name", sorted(_stub_functions()))
def test_stub_signature_matches_the_compiled_function(name):
    node = _stub_functions()[name]
    sig = inspect.signature(getattr(_kernels, name))
    args = node.args
    assert not args.posonlyargs and not args.kwonlyargs and args.vararg is None and args.kwarg is None
    assert [a.arg for a in args.args] == list(sig.parameters), "parameter names/order"
    stub_defaults = [None] * (len(args.args) - len(args.defaults)) + list(args.defaults)
    for (pname, param), default in zip(sig.parameters.items(), stub_defaults, strict=True):
        assert param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, pname
        if param.default is inspect.Parameter.empty:
            assert default is None, f"{name}({pname}): the stub gives a default the function lacks"
        else:
            assert default is not None, f"{name}({pname}): the stub lacks the default {param.default!r}"
            assert ast.literal_eval(default) == param.default, f"{name}({pname}) default"


@pytest.mark.parametrize("name", sorted(_stub_functions()))
def test_stub_annotations_match_the_declared_c_types(name):
    annotations = {a.arg: ast.unparse(a.annotation) for a in _stub_functions()[name].args.args if a.annotation}
    for pname, ctype in _pyx_c_types()[name].items():
        assert ctype in C_TO_PY, f"{name}({pname}): unknown C type {ctype} (add it to C_TO_PY)"
        assert annotations.get(pname) == C_TO_PY[ctype], f"{name}({pname}): .pyx declares {ctype}"


def test_public_names_resolve_and_are_exported():
    """``voxtral.__all__`` (spelled out for type checkers) names every lazily
    imported class and function, and each resolves."""
    import voxtral

    assert set(voxtral._LAZY) <= set(voxtral.__all__)
    for name in voxtral.__all__:
        assert getattr(voxtral, name) is not None, name
