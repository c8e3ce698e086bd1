"""No import cycle inside hlsinf, and the shared ONNX IR below its users.

The graph is built from the source with ``ast``, not by importing: every ``import`` and
``from ... import`` counts, at module level or inside a function (a lazy import hides a
cycle, it does not remove it). ``import a.b`` and ``from a import b`` (b a module) are an
edge to ``a.b``; ``from a import name`` an edge to ``a``. Importing a submodule also runs
its parent packages' ``__init__``, but that is Python's package mechanism, not an edge.
"""

import ast
from pathlib import Path

import hlsinf


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every module under the package ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _known(name: str, known) -> str | None:
    """``name`` or its longest prefix that is a module of the tree (None if outside it)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in known:
            return ".".join(parts[:k])
    return None


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports (anywhere in its source)."""
    known = modules(root)
    edges = {}
    for name, (path, package) in known.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_known(a.name, known) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:   # relative: from the package that holds this module
                    base = name.split(".") if package else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                for a in node.names:
                    sub = f"{source}.{a.name}"
                    targets.add(sub if sub in known else _known(source, known))
        edges[name] = targets - {None, name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None if the graph is acyclic."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == "open":
                return stack[stack.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


ROOT = Path(hlsinf.__file__).parent


def test_no_import_cycle_inside_hlsinf():
    edges = import_graph(ROOT)
    assert len(edges) > 40 and "hlsinf.host.cpu" in edges["hlsinf.host.quantize"]  # a function-level import
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_ir_imports_nothing_of_its_users():
    """hlsinf.ir knows neither the host (its CPU operator table) nor compress: they import it, not the reverse."""
    edges = import_graph(ROOT)
    ir = {m: sorted(t for t in ts if not t.startswith("hlsinf.ir")) for m, ts in edges.items() if m.startswith("hlsinf.ir")}
    assert ir and not any(ir.values()), ir
    users = {m for m, ts in edges.items() if any(t.startswith("hlsinf.ir") for t in ts)}
    assert {"hlsinf.host.cpu", "hlsinf.host.plan", "hlsinf.compress.remove"} <= users


def test_a_cycle_through_a_lazy_or_relative_import_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .b import f\n")
    (pkg / "a.py").write_text("import numpy\nfrom pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n    return a\n")
    edges = import_graph(pkg)
    assert edges == {"pkg": set(), "pkg.sub": {"pkg.sub.b"}, "pkg.a": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.a"}}
    assert find_cycle(edges) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    (pkg / "sub" / "b.py").write_text("def f():\n    return 1\n")
    assert find_cycle(import_graph(pkg)) is None
