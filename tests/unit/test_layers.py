"""The layer order of ARCHITECTURE.md: a module imports only its own layer and those below.

Every `import` of every module under granary/ counts, wherever it is: at the
top, inside a function (a lazy import is still a dependency), and under
`if TYPE_CHECKING:`. Type-only imports count too: a lower layer that names an
upper layer's types depends on that layer's shape, even if only the type
checker sees it; it should declare the small Protocol it needs instead.

Bottom up, as in ARCHITECTURE.md, with the modules it does not place:

- `granary` itself (granary/__init__.py: the version) sits at the bottom, with util.
- `granary/api/http` (our HTTP/1.1 layer) sits just above telemetry, below db:
  it is a transport that knows nothing of storage, shared by every API server;
  today it imports nothing of Granary at all, and it should stay so.
- The API packages follow the table's order, s3 < web < console < admin: the
  web server reuses the object serving of s3, and the admin API reuses s3's
  names and errors.
- `granary/config.py` sits above the APIs, below cli: it turns the TOML file
  into settings that only the composition root (server.py) and the CLI read;
  every component gets its settings as arguments, so no layer below reaches
  into the config.
- `granary/processes` (a node's S3 worker processes: what each process builds,
  the control channel, the supervisor and the worker's entry point) is part of
  the composition root, with server.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

GRANARY = Path(__file__).resolve().parents[2] / "granary"

LAYERS = [
    ("granary", "granary.util"),
    ("granary.telemetry",),
    ("granary.api.http",),
    ("granary.db",),
    ("granary.net",),
    ("granary.layout",),
    ("granary.table",),
    ("granary.block",),
    ("granary.model",),
    ("granary.api.s3",),
    ("granary.api.web",),
    ("granary.api.console",),
    ("granary.api.admin",),
    ("granary.config",),
    ("granary.cli",),
    ("granary.server", "granary.processes"),
]
"""Bottom up; the modules in one entry form one layer."""

ALLOWED = {
    ("granary.cli.main", "granary.server"): (
        "the `granary server` command starts the composition root (a lazy import); "
        "ARCHITECTURE.md puts the CLI below server.py"
    ),
    ("granary.cli.main", "granary.processes.spawn"): (
        "the same command forks the node's S3 workers before the node starts, so that "
        "they share its pages (a lazy import)"
    ),
}
"""Known upward imports, each with the reason it stays for now."""


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix naming `module`'s package."""
    best, best_length = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    if best < 0:
        raise LookupError(f"{module} belongs to no layer: place it in LAYERS")
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(GRANARY.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(GRANARY.rglob("*.py"))}


def imports_of(
    source: str, module: str, is_package: bool, known: set[str]
) -> list[tuple[int, str]]:
    """(line, imported granary module) for every import in `source`, at any depth."""
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((node.lineno, submodule if submodule in known else base))
    return [(line, name) for line, name in found if name.split(".")[0] == "granary"]


def upward_imports(modules: dict[str, Path], sources: dict[str, str]) -> list[str]:
    known = set(modules)
    violations = []
    for module, path in modules.items():
        for line, imported in imports_of(
            sources[module], module, path.name == "__init__.py", known
        ):
            if layer_of(imported) > layer_of(module) and (module, imported) not in ALLOWED:
                violations.append(f"{path.relative_to(GRANARY.parent)}:{line} imports {imported}")
    return violations


def test_every_module_imports_only_its_layer_and_those_below():
    modules = all_modules()
    sources = {module: path.read_text() for module, path in modules.items()}
    assert upward_imports(modules, sources) == []


def test_an_import_up_the_order_is_caught_even_inside_a_function_or_type_checking():
    modules = all_modules()
    sources = {module: path.read_text() for module, path in modules.items()}
    modules["granary.table.upward"] = GRANARY / "table" / "upward.py"
    sources["granary.table.upward"] = (
        "from typing import TYPE_CHECKING\n"
        "import granary.model\n"
        "if TYPE_CHECKING:\n"
        "    from granary.block.manager import BlockManager\n"
        "def f():\n"
        "    from .. import server\n"
        "from granary.table import quorum\n"
    )
    caught = [v for v in upward_imports(modules, sources) if v.startswith("granary/table/up")]
    assert caught == [
        "granary/table/upward.py:2 imports granary.model",
        "granary/table/upward.py:4 imports granary.block.manager",
        "granary/table/upward.py:6 imports granary.server",
    ]


def test_every_module_has_a_layer_and_every_allowance_is_still_needed():
    modules = all_modules()
    for module in modules:
        layer_of(module)
    known = set(modules)
    for importer, imported in ALLOWED:
        path = modules[importer]
        found = imports_of(path.read_text(), importer, path.name == "__init__.py", known)
        assert imported in {name for _, name in found}, f"{importer} no longer imports {imported}"
