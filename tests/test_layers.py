"""The one-way layering of docs/architecture.md: every import in src/ points to the same floor or below, the front
ends (front door, job layer, CLI) import nothing from the node classes, and no two modules import each other,
directly or around a loop (lazy imports inside functions count), except the one documented lazy alias."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "twosamplers"

# floor of each module (a package's modules share its floor); see docs/architecture.md
FLOORS = {
    "_checks": 0, "_files": 0, "_paths": 0, "schedules": 0, "noise": 0, "noise_mask": 0, "masks": 0, "latent": 0,
    "conditioning": 0, "mask_ops": 0, "http_guard": 0, "resample": 0, "tiling": 0, "_origin": 0,
    "samplers": 1, "models": 1, "imageio": 1,
    "ksampler": 2, "regional_cond": 2,
    "passes": 3,
    "regional": 4, "two_pass": 4, "joint": 4,
    "nodes": 5, "front": 5,
    "job": 6,
    "cli": 7, "cli_regions": 7, "__main__": 7, "workflow": 7, "batch": 7, "ui": 7, "server": 7, "__init__": 7,
}
# the one upward import: ksampler.common_ksampler, a lazy alias of passes.common_ksampler kept for the path the
# README and the parity checker use
ALLOWED_UP = {("ksampler", "passes")}
NO_NODES = ("front", "job", "cli", "passes", "regional", "two_pass", "joint", "ksampler", "regional_cond")


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def imports(path: Path):
    pkg = path.relative_to(SRC).parent.parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("twosamplers."):
                    yield node.module.split(".")[1]
                continue
            base = list(pkg)[: len(pkg) - (node.level - 1)] if node.level > 1 else list(pkg)
            target = [*base, *(node.module.split(".") if node.module else [])]
            if target:
                yield target[0]
            else:  # "from . import x" at the package root
                yield from (a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("twosamplers."):
                    yield a.name.split(".")[1]


FILES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path):
    me = module_of(path)
    if me == "__init__" and path.parent == SRC:
        return  # the package facade re-exports every floor
    for target in imports(path):
        if target == "__version__" or target not in FLOORS or target == me or (me, target) in ALLOWED_UP:
            continue
        assert FLOORS[target] <= FLOORS[me], f"{path.relative_to(SRC)} imports {target} (floor {FLOORS[target]})"
        assert not (me in NO_NODES and target == "nodes"), f"{path.relative_to(SRC)} imports from nodes/"


def test_every_module_has_a_floor():
    assert {module_of(p) for p in FILES} <= set(FLOORS)


def test_functions_stay_short_outside_the_samplers():
    """docs/architecture.md: no function over 60 lines outside samplers/ (the k-diffusion-style loops)."""
    long = []
    for path in FILES:
        if path.parent.name == "samplers":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(SRC)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


# ---------------------------------------------------------------------------------------------- module cycles
# the one cycle between modules: ksampler.common_ksampler, a lazy alias of passes.common_ksampler
ALLOWED_CYCLES = [{"twosamplers.ksampler", "twosamplers.passes"}]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in FILES}


def module_imports(name: str) -> set[str]:
    """The modules of the package that module `name` imports, anywhere in it (a name imported from a package is
    its submodule when there is one, else the package's __init__)."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("twosamplers"):
                    continue
                base = node.module.split(".")
            else:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            for alias in node.names:
                full = ".".join([*base, alias.name])
                out.add(full if full in MODULES else ".".join(base))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in MODULES)
    return {m for m in out if m in MODULES and m != name}


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively: the groups of modules that reach each other."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    group.add(m)
                    if m == node:
                        break
                groups.append(group)
    return groups


def test_no_import_cycles_between_modules():
    graph = {name: module_imports(name) for name in MODULES}
    cycles = [g for g in strongly_connected(graph) if len(g) > 1]
    assert sorted(map(sorted, cycles)) == sorted(map(sorted, ALLOWED_CYCLES)), cycles


def test_the_cycle_check_sees_a_cycle():
    """The check itself: a two-module loop and a three-module loop are found, a chain is not."""
    groups = strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}})
    assert sorted(map(sorted, (g for g in groups if len(g) > 1))) == [["a", "b"], ["c", "d", "e"]]
    assert module_imports("twosamplers.batch.driver") >= {"twosamplers.batch.plan", "twosamplers.batch.scheduler"}
