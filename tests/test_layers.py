"""The layering: a module imports only from its own layer or below, never to dodge a circle inside a
function, and ``import lightning_genrec`` loads neither RecBole nor its patches."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: bottom to top; a module's layer is its longest matching prefix
LAYERS = {
    "lightning_genrec.errors": 0,
    "lightning_genrec.hparams": 1,
    "lightning_genrec.annealing": 1, "lightning_genrec.metrics": 1, "lightning_genrec.item_ranking": 1,
    "lightning_genrec.comet": 1,
    "lightning_genrec.data": 2, "lightning_genrec.sequences": 2, "lightning_genrec.content": 2,
    "lightning_genrec.models": 3,
    "lightning_genrec": 4,            # the package's own __init__: re-exports everything above
    "recbole_ext": 5,
}
OURS = ("lightning_genrec", "recbole_ext")


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"{module} has no layer: add it to LAYERS")


def modules():
    for package in OURS:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    yield rel[: -len(".__init__")] if rel.endswith(".__init__") else rel, path


def imports(path):
    """(imported module, line, inside a function?) for every import of our packages in ``path``."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    nested = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in OURS:
                yield name, node.lineno, id(node) in nested


MODULES = sorted(modules())


def test_every_module_has_a_layer():
    assert len(MODULES) > 20
    for module, _ in MODULES:
        layer(module)


@pytest.mark.parametrize("module, path", MODULES, ids=[m for m, _ in MODULES])
def test_imports_go_only_downward_and_at_the_top(module, path):
    for name, line, in_function in imports(path):
        assert layer(name) <= layer(module), f"{module} (layer {layer(module)}) imports {name} " \
                                             f"(layer {layer(name)}) at line {line}"
        assert not in_function, f"{module} imports {name} inside a function (line {line}): import it at the top"


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ndef f():\n    from recbole_ext.config import make_config\n")
    (name, line, in_function), = imports(str(bad))
    assert (name, line, in_function) == ("recbole_ext.config", 4, True)
    assert layer(name) > layer("lightning_genrec.models.mvae")


def test_importing_lightning_genrec_loads_no_recbole():
    code = ("import sys, lightning_genrec; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('recbole', 'recbole_ext', 'ray')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
