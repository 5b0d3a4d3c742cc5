"""Who may import whom (ARCHITECTURE.md), checked on the source: the rules hold for every import,
also those inside functions and behind ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("wire", "broker", "gateway", "client", "client_profiles", "pforte", "testbed",
            "benchmarks", "tests")

# package → the project's packages it may import
ALLOWED = {
    "wire": set(),
    "client_profiles": {"wire"},
    "broker": {"wire", "client_profiles"},
    "gateway": {"wire"},
    "client": {"wire"},
    "pforte": {"wire", "broker", "gateway", "client", "client_profiles", "testbed"},
    "testbed": {"wire", "broker", "gateway", "client", "client_profiles"},
}
SHIPPED = ("wire", "broker", "gateway", "client", "client_profiles", "pforte")


def modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported(name: str, path: Path) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out |= {f"{base}.{a.name}" for a in node.names}   # a module, or a name in one
    return out


def project_imports(name: str, path: Path) -> set[str]:
    return {m for m in imported(name, path) if m.split(".")[0] in PACKAGES}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_lies_below_it(package):
    wrong = []
    for name, path in modules(package).items():
        for target in project_imports(name, path):
            top = target.split(".")[0]
            if top != package and top not in ALLOWED[package]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_broker_and_gateway_share_only_the_wire_package():
    for a, b in (("broker", "gateway"), ("gateway", "broker")):
        for name, path in modules(a).items():
            assert not {t for t in project_imports(name, path) if t.split(".")[0] == b}, name


@pytest.mark.parametrize("package", SHIPPED)
def test_no_shipped_package_imports_test_or_demo_tooling(package):
    for name, path in modules(package).items():
        if package == "pforte":  # `pforte demo` finds the testbed of a checkout at run time
            continue
        tops = {t.split(".")[0] for t in project_imports(name, path)}
        assert not tops & {"testbed", "tests", "benchmarks"}, name


@pytest.mark.parametrize("package", ["wire", "broker", "gateway", "client", "client_profiles"])
def test_no_import_circles(package):
    mods = modules(package)
    def module_of(target: str) -> str | None:
        """The module an import names: itself, or (``from module import name``) its parent."""
        return target if target in mods else (target.rpartition(".")[0]
                                              if target.rpartition(".")[0] in mods else None)

    # a package's __init__ counts like any module: a circle through a package face is one
    graph = {name: {m for t in project_imports(name, path)
                    if (m := module_of(t)) is not None and m != name}
             for name, path in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2
    for node in sorted(graph):
        if node not in state:
            visit(node)


MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 260


@pytest.mark.parametrize("package", SHIPPED)
def test_no_shipped_module_or_class_grows_into_a_hub(package):
    """A module over 500 lines or a class over ~250 is a hub where every new feature walks in:
    a use case gets a room of its own instead."""
    big = []
    for name, path in modules(package).items():
        text = path.read_text()
        if (lines := text.count("\n")) > MAX_MODULE_LINES:
            big.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.ClassDef) and \
                    (size := node.end_lineno - node.lineno + 1) > MAX_CLASS_LINES:
                big.append(f"{name}.{node.name}: {size} lines")
    assert not big, "\n".join(big)
