"""The folders are the architecture: each package imports only the packages below it.

From the bottom: the foundation (the modules directly in `bus/`: settings,
secrets, logs, file modes, signing), then `bus/events`, `bus/store`,
`bus/transport`, `bus/delivery`, `bus/notify` and `bus/checks` (side by
side), `bus/jobs`, `bus/http`, `adapters/`, `subscribers/`, and at the top the
application (`hookbus/`: the configuration file, the assembly, the CLI).
Packages on one rank do not import each other. A hookbus import inside a
function is an arrow like any other, and is refused there too: such imports
existed only to dodge cycles. The one exception is for start-up time (LAZY).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RANKS: list[tuple[str, ...]] = [
    ("hookbus.bus",),
    ("hookbus.bus.events",),
    ("hookbus.bus.store",),
    ("hookbus.bus.transport",),
    ("hookbus.bus.delivery",),
    ("hookbus.bus.notify", "hookbus.bus.checks"),
    ("hookbus.bus.jobs",),
    ("hookbus.bus.http",),
    ("hookbus.adapters",),
    ("hookbus.subscribers",),
    ("hookbus",),
]
FOLDERS = {"bus": "hookbus.bus", "subscribers": "hookbus.subscribers", "adapters": "hookbus.adapters", "hookbus": "hookbus"}
# The command line imports the application and the adapters inside the commands that use
# them, for start-up time: `hookbus emit` from a hook starts in 0.3 s instead of 0.5.
# The PostgreSQL store loads psycopg (~100 ms): only a PostgreSQL store, check-config and migrate need it.
LAZY = {"hookbus/cli.py": {"hookbus.app", "hookbus.adapters", "hookbus.bus.store.migrate", "hookbus.bus.store.postgres"},
        "bus/store/opener.py": {"hookbus.bus.store.postgres"}}
# Files hookbus never imports: loaded by another program (ansible-playbook, netcfgbu) under its own rules.
DROP_INS = {"adapters/netcfgbu_plugin.py", "adapters/ansible_callbacks/hookbus_stats.py"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [FOLDERS[rel.parts[0]], *rel.with_suffix("").parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    """The layer a module belongs to: the longest package in RANKS that holds it."""
    best = ""
    for rank in RANKS:
        for pkg in rank:
            if (module == pkg or module.startswith(pkg + ".")) and len(pkg) > len(best):
                best = pkg
    return best


def rank_of(pkg: str) -> int:
    return next(i for i, rank in enumerate(RANKS) if pkg in rank)


def imports(path: Path, module: str) -> list[tuple[int, str, bool]]:
    """(line, imported module, inside a function) for every hookbus import of a file."""
    tree = ast.parse(path.read_text())
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, in_function) for a in child.names if a.name.startswith("hookbus"))
            elif isinstance(child, ast.ImportFrom):
                target = child.module or ""
                if child.level:
                    base = module.split(".")
                    base = base[: len(base) - child.level + (1 if path.name == "__init__.py" else 0)]
                    target = ".".join([*base, target] if target else base)
                if target.startswith("hookbus"):
                    for alias in child.names:
                        full = f"{target}.{alias.name}"
                        found.append((child.lineno, full if package_of(full) != package_of(target) else target, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def sources() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")
                  if str(p.relative_to(ROOT)) not in DROP_INS)


def test_every_module_has_a_layer() -> None:
    assert [str(p.relative_to(ROOT)) for p in sources() if not package_of(module_name(p))] == []


def test_imports_only_run_downward() -> None:
    wrong = []
    for path in sources():
        module = module_name(path)
        here = package_of(module)
        for line, target, _ in imports(path, module):
            there = package_of(target)
            if there == here or target == "hookbus":  # hookbus's own __version__
                continue
            if rank_of(there) >= rank_of(here):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {target}")
    assert wrong == []


def test_no_hookbus_import_inside_a_function() -> None:
    inside = [f"{path.relative_to(ROOT)}:{line}: {target}" for path in sources()
              for line, target, in_function in imports(path, module_name(path))
              if in_function and target not in LAZY.get(str(path.relative_to(ROOT)), ())]
    assert inside == []


def test_the_drop_ins_import_nothing_of_hookbus() -> None:
    """The netcfgbu plugin file and the Ansible callback run inside other programs,
    with only the standard library: an import of hookbus there would fail."""
    for rel in DROP_INS:
        path = ROOT / rel
        assert [t for _, t, _ in imports(path, "drop_in")] == [], rel
