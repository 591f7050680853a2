"""The layout's rules, read from the code's own imports (ast): no import circles in our packages,
and arrows that point one way: gateway -> metering, ratelimit -> config, and the two libraries
never import aiohttp. Imports under `if TYPE_CHECKING:` are for the type checker only and do not
count; imports inside functions do."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = ("gateway", "metering", "ratelimit", "config")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module `module` imports at run time (module level or in a function)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = module.split(".")
                    parent = parent if is_package else parent[:-1]
                    parent = parent[: len(parent) - (child.level - 1)]
                    base = ".".join([*parent, base] if base else parent)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in child.names)
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    files = {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = _imports(tree, module, path.name == "__init__.py")
        graph[module] = {name for name in imported if name in files and name != module}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_circles() -> None:
    assert _circles(_graph()) == []


def test_the_arrows_point_one_way() -> None:
    graph = _graph()
    allowed = {
        "config": {"config"},
        "ratelimit": {"ratelimit", "config"},
        "metering": {"metering", "config"},
        "gateway": set(PACKAGES),
    }
    wrong = [
        (module, other)
        for module, imported in graph.items()
        for other in imported
        if other.split(".")[0] not in allowed[module.split(".")[0]]
    ]
    assert wrong == []


def test_the_libraries_know_no_http_server() -> None:
    for package in ("metering", "ratelimit", "config"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = _imports(tree, _module_name(path), path.name == "__init__.py")
            assert not any(n == "aiohttp" or n.startswith("aiohttp.") for n in names), path


def test_a_circle_is_found() -> None:
    """The check itself: two modules that import each other, inside functions too."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from gateway import state\nif TYPE_CHECKING:\n    import x\n")
    assert _imports(tree, "gateway.errors", False) == {"gateway", "gateway.state"}


def test_every_data_file_is_packaged() -> None:
    """A file beside the code that is not Python (Lua scripts, the default limits, the Activity
    page) must match the package data of pyproject.toml, or an installed gateway (a wheel, the
    Docker image) would not have it: ratelimit's Lua prelude once was not."""
    import fnmatch
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    missing = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            inside = path.relative_to(ROOT / package).as_posix()
            if not any(fnmatch.fnmatch(inside, glob) for glob in declared.get(package, [])):
                missing.append(f"{package}/{inside}")
    assert missing == []
