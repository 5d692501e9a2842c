"""The one-way layering of docs/architecture.md: one folder per layer, every import in src/ points to the same floor
or below, the front ends (front door, job layer, CLI) import nothing from the node classes, and no two modules
import each other, directly or around a loop (lazy imports inside functions count), except the one documented lazy
alias. The old module paths users import (twosamplers/_old_paths.py) are served, documented, and used by nothing
inside the package."""

# relayout: keep-file (the layer table and the old paths' checks are kept by hand; /work/wt/relayout.py skips this)

import ast
import importlib
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "twosamplers"
DOCS = Path(__file__).resolve().parents[1] / "docs"

# floor of each module: a folder's modules share its floor, except the engine's, which have their own; see
# docs/architecture.md
FLOORS = {
    "_checks": 0, "_files": 0, "_paths": 0, "_origin": 0, "_old_paths": 0, "engine": 0,
    "engine.schedules": 0, "engine.noise": 0, "engine.noise_mask": 0, "engine.latent": 0, "engine.conditioning": 0,
    "engine.mask_ops": 0, "engine.resample": 0, "engine.tiling": 0,
    "samplers": 1, "models": 1,
    "engine.ksampler": 2, "engine.regional_cond": 2,
    "engine.passes": 3,
    "engine.regional": 4, "engine.two_pass": 4, "engine.joint": 4,
    "engine.front": 5, "nodes": 5,
    "job": 6,
    "cli": 7, "__main__": 7, "workflow": 7, "batch": 7, "ui": 7, "server": 7, "web": 7, "__init__": 7,
}
# what may stand loose in src/twosamplers/ (every other module belongs to a layer's folder)
ROOT_FILES = {"__init__", "__main__", "_checks", "_files", "_paths", "_origin", "_old_paths"}
# the one upward import: engine.ksampler.common_ksampler, a lazy alias of engine.passes.common_ksampler kept for the
# old path `twosamplers.ksampler.common_ksampler` that the README and the parity checker use
ALLOWED_UP = {("engine.ksampler", "engine.passes")}
ENGINE = {name for name in FLOORS if name.startswith("engine.")}
NO_NODES = ("job", "cli", *ENGINE)


def layer_key(parts: list[str]) -> str:
    """The FLOORS key of a dotted path inside the package: its folder, or engine.MODULE."""
    if parts[0] == "engine" and len(parts) > 1:
        return f"engine.{parts[1]}"
    return parts[0]


def module_of(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return layer_key(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imports(path: Path, root: Path = SRC):
    """The FLOORS key of everything `path` (a file below `root`, the package's folder) imports from the package."""
    pkg = list(path.relative_to(root).parent.parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("twosamplers."):
                    yield layer_key(node.module.split(".")[1:])
                elif node.module == "twosamplers":
                    yield from (layer_key([a.name]) for a in node.names)
                continue
            base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
            target = [*base, *(node.module.split(".") if node.module else [])]
            if target == ["engine"]:  # "from . import x" inside the engine, "from ..engine import x" elsewhere
                yield from (layer_key(["engine", a.name]) for a in node.names)
            elif target:
                yield layer_key(target)
            else:  # "from . import x" at the package root
                yield from (layer_key([a.name]) for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("twosamplers."):
                    yield layer_key(a.name.split(".")[1:])


FILES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path):
    me = module_of(path)
    if me == "__init__" and path.parent == SRC:
        return  # the package facade re-exports every floor
    assert me in FLOORS, f"{path.relative_to(SRC)} has no floor: give it a layer folder and a line in FLOORS"
    for target in imports(path):
        if target == "__version__" or target == me or (me, target) in ALLOWED_UP:
            continue
        assert target in FLOORS, f"{path.relative_to(SRC)} imports {target}, which is no module of a layer"
        assert FLOORS[target] <= FLOORS[me], f"{path.relative_to(SRC)} imports {target} (floor {FLOORS[target]})"
        assert not (me in NO_NODES and target == "nodes"), f"{path.relative_to(SRC)} imports from nodes/"


def test_every_module_has_a_floor():
    assert {module_of(p) for p in FILES} <= set(FLOORS)


def test_one_folder_per_layer():
    """Nothing loose at the package root but the package's own files and the shared private helpers: a new module
    goes into its layer's folder (docs/architecture.md, "Where a new ... goes")."""
    loose = {p.stem for p in SRC.glob("*.py")} - ROOT_FILES
    assert not loose, f"modules outside a layer folder: {sorted(loose)}"
    assert (SRC / "engine" / "__init__.py").read_text().count("import") == 0  # the engine package loads nothing


def test_the_layer_check_sees_a_wrong_import(tmp_path):
    """The check itself: an engine module importing the job layer, or the CLI importing a node class, is caught."""
    assert list(imports(SRC / "engine" / "front.py"))  # it reads the engine's imports at all
    engine = tmp_path / "twosamplers" / "engine"
    engine.mkdir(parents=True)
    bad = engine / "bad.py"
    bad.write_text("from ..job import Job\nfrom . import passes\nimport twosamplers.nodes.core\n")
    assert list(imports(bad, tmp_path / "twosamplers")) == ["job", "engine.passes", "nodes"]
    assert FLOORS["job"] > FLOORS["engine.front"] and FLOORS["engine.passes"] < FLOORS["engine.front"]


def test_the_public_names_still_import_from_the_package():
    """`from twosamplers import X` for every name of `__all__`, wherever its module now lives."""
    import twosamplers

    for name in twosamplers.__all__:
        assert getattr(twosamplers, name) is not None, name
    front = importlib.import_module("twosamplers.engine.front")
    assert twosamplers.two_samplers_for_mask is front.two_samplers_for_mask


# ---------------------------------------------------------------------------------------------- old module paths
def old_paths() -> dict[str, str]:
    from twosamplers._old_paths import OLD_PATHS

    return OLD_PATHS


def test_old_paths_are_the_modules_themselves():
    """`import twosamplers.ksampler` gives the engine's module itself, with the names users call (README and the
    parity checker at /work/shared/parity)."""
    for old, new in old_paths().items():
        assert importlib.import_module(old) is importlib.import_module(new), old
    ksampler = importlib.import_module("twosamplers" + ".ksampler")
    assert ksampler.common_ksampler is importlib.import_module("twosamplers.engine.passes").common_ksampler
    for old, name in [(".schedules", "calculate_sigmas"), (".noise", "prepare_noise"), (".masks", "prepare_mask"),
                      (".latent", "empty_latent"), (".imageio", "load_image"), (".front", "regional_sample"),
                      (".passes", "run_pass"), (".ksampler", "compute_sigmas")]:
        assert callable(getattr(importlib.import_module("twosamplers" + old), name)), (old, name)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("twosamplers" + ".two_pass")  # not kept: no user imports it
    import twosamplers as ts  # `ts.schedules.X` as before, without importing the old path first

    assert ts.schedules is importlib.import_module("twosamplers.engine.schedules")
    with pytest.raises(AttributeError):
        _ = ts.two_pass


def used_paths(path: Path):
    """Every dotted path of the package that `path` imports (`from X import n` gives X and X.n) or names in a
    string (importlib, mock.patch)."""
    pkg = ["twosamplers", *path.relative_to(SRC).parent.parts]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = (node.module or "") if node.level == 0 else ".".join(
                [*pkg[: len(pkg) - (node.level - 1)], *([node.module] if node.module else [])])
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("twosamplers."):
            yield node.value


def test_old_paths_are_listed_in_the_docs_and_used_by_nothing_inside():
    listed = set(re.findall(r"^- `(twosamplers\.\w+)` -> `", (DOCS / "architecture.md").read_text(), re.M))
    assert listed == set(old_paths())
    old = tuple(old_paths())
    for path in FILES:
        if path.name == "_old_paths.py":
            continue  # their table
        for used in used_paths(path):
            assert not any(used == o or used.startswith(o + ".") for o in old), f"{path.relative_to(SRC)}: {used}"
    assert "twosamplers.engine.ksampler" in set(used_paths(SRC / "engine" / "passes.py")) | set(
        used_paths(SRC / "engine" / "two_pass.py"))  # the check reads relative imports


# ---------------------------------------------------------------------------------------------- module cycles
# the one cycle between modules: engine.ksampler.common_ksampler, a lazy alias of engine.passes.common_ksampler
ALLOWED_CYCLES = [{"twosamplers.engine.ksampler", "twosamplers.engine.passes"}]


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
