"""The one-way layering of docs/architecture.md: every import in src/ points to the same floor or below, and
the front ends (front door, job layer, CLI) import nothing from the node classes."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "twosamplers"

# floor of each module (a package's modules share its floor); see docs/architecture.md
FLOORS = {
    "_checks": 0, "_files": 0, "_paths": 0, "schedules": 0, "noise": 0, "noise_mask": 0, "masks": 0, "latent": 0,
    "conditioning": 0, "mask_ops": 0, "http_guard": 0, "_origin": 0,
    "samplers": 1, "models": 1, "imageio": 1,
    "ksampler": 2, "regional_cond": 2,
    "passes": 3,
    "regional": 4, "two_pass": 4, "joint": 4,
    "nodes": 5, "front": 5,
    "job": 6,
    "cli": 7, "__main__": 7, "workflow": 7, "batch": 7, "ui": 7, "__init__": 7,
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
