"""No code path of geosdm unpickles, evaluates or imports what a user supplies (issue 18, security).

A static check of the library's source: calls that execute or deserialise arbitrary objects (``eval``, ``exec``,
``pickle``/``marshal``/``dill`` loads, ``torch.load``, ``numpy.load(allow_pickle=True)``, ``pandas.read_pickle``,
``yaml.load``/``unsafe_load``) and dynamic imports (``importlib.import_module``, ``__import__``) are refused
except where listed below with the reason. Models are safetensors + JSON, configs ``yaml.safe_load``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import geosdm

PACKAGE = Path(geosdm.__file__).parent
#: Calls refused anywhere in geosdm.
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "pickle.load", "pickle.loads", "marshal.load",
                   "marshal.loads", "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads",
                   "torch.load", "pd.read_pickle", "pandas.read_pickle", "yaml.load", "yaml.unsafe_load",
                   "yaml.full_load", "importlib.import_module", "import_module", "jsonpickle.decode"}
FORBIDDEN_MODULES = {"pickle", "marshal", "dill", "cloudpickle", "shelve", "jsonpickle"}
#: (file, call) allowed, with the reason.
ALLOWED = {
    ("geosdm/stac/__init__.py", "importlib.import_module"): "imports only a registered signer (geosdm.stac.SIGNERS or a "
                                                   "'geosdm.signers' entry point), checked just before",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE.parent) else path.name
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in FORBIDDEN_CALLS and (str(where), name) not in ALLOWED:
                found.append(f"{where}:{node.lineno} calls {name}")
            if name.endswith(".load") and name.split(".")[0] in {"np", "numpy"}:
                if any(k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                       for k in node.keywords):
                    found.append(f"{where}:{node.lineno} numpy.load with allow_pickle")
        elif isinstance(node, ast.Import):
            found += [f"{where}:{node.lineno} imports {a.name}" for a in node.names
                      if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{where}:{node.lineno} imports from {node.module}")
    return found


def test_no_code_path_deserialises_or_evaluates_user_input() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the whole package was scanned
    findings = [f for path in files for f in _findings(path)]
    assert not findings, "\n".join(findings)


def test_the_check_catches_what_it_refuses(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    bad.write_text("import pickle\nimport numpy as np\nimport yaml\n"
                   "x = eval('1')\ny = np.load('a', allow_pickle=True)\nz = yaml.load('a')\n"
                   "import importlib\nm = importlib.import_module('os')\n")
    found = _findings(bad)
    assert len(found) == 5, found
