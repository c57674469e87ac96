"""The tree's imports point down: each part imports only the parts below it.

A newcomer reads the tree bottom-up in this order; a new module or package must be placed in a
layer here before it can be imported. Two parts on one layer know nothing of each other, so
either can change without the other. Imports under ``if TYPE_CHECKING:`` are for annotations
only and may point anywhere.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

LAYERS: list[set[str]] = [  # bottom to top
    {"errors", "atomicfiles", "provider_info"},
    {"names", "layout", "agent", "ui_links", "accounting", "prices"},  # agent: what runs on nodes, standard library only
    {"settings", "spec"},
    {"transport"},  # run and copy on one node: subprocess, SSH
    {"data"},  # job volumes: local folders, Azure Storage
    {"control"},  # records, leases and sealed secrets
    {"records"},
    {"launch", "slurm", "usage"},  # the plan builder beside the spec; Slurm's commands; usage and cost from records
    {"pools"},  # where nodes come from
    {"scheduling", "reading"},  # who places jobs on nodes; the read side (views, outputs, the poller)
    {"secretfields", "workspaces", "lineage"},
    {"service"},
    {"logtail", "overview", "controller", "fieldchecks"},
    {"config", "taskjobs"},  # the composition root (picks the pool and the scheduler); a task's job, for the shells
    {"restapi", "hooks"},
    {"cli", "triggers"},
    {"operators", "sensors"},
    {"ui"},
]
SHELLS = ("hooks", "operators", "sensors", "triggers", "ui")  # the Airflow side, outside provider/
AGENT_SURFACE = {"protocol", "storageclient"}  # all the control plane may import from the agent package


def _units() -> Iterator[tuple[str, Path, tuple[str, ...]]]:
    """(unit, file, the file's package path inside airflow_batchai) for every module of the package."""
    provider = REPO / "provider"
    for path in sorted(provider.rglob("*.py")):
        parts = path.relative_to(provider).parts
        if parts != ("__init__.py",):
            yield (parts[0].removesuffix(".py"), path, parts[:-1])
    for shell in SHELLS:
        for path in sorted((REPO / shell).rglob("*.py")):
            yield (shell, path, (shell, *path.relative_to(REPO / shell).parts[:-1]))


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(path: Path, package: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(line, what is imported as a path inside airflow_batchai) for each import of our own package;
    imports for annotations only are left out."""
    tree = ast.parse(path.read_text())
    typing_only = _type_checking_lines(tree)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in typing_only:
            continue
        if isinstance(node, ast.Import):
            modules = [alias.name.split(".")[1:] for alias in node.names if alias.name.startswith("airflow_batchai.")]
        elif node.level:
            base = list(package[: len(package) - (node.level - 1)]) + (node.module.split(".") if node.module else [])
            modules = [[*base, alias.name] for alias in node.names]
        elif (node.module or "").startswith("airflow_batchai."):
            modules = [[*(node.module or "").split(".")[1:], alias.name] for alias in node.names]
        else:
            continue
        for module in modules:
            yield node.lineno, module


def test_every_part_of_the_tree_has_a_layer() -> None:
    placed = set().union(*LAYERS)
    assert {unit for unit, _, _ in _units()} - placed == set()
    assert sum(len(layer) for layer in LAYERS) == len(placed), "a part is on two layers"


def test_imports_point_only_down() -> None:
    rank = {unit: index for index, layer in enumerate(LAYERS) for unit in layer}
    wrong = []
    for unit, path, package in _units():
        for line, target in _imports(path, package):
            if target and target[0] != unit and rank.get(target[0], len(LAYERS)) >= rank[unit]:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {unit} (layer {rank[unit]}) imports {'.'.join(target)}")
    assert wrong == []


def test_the_control_plane_reads_the_agents_package_only_through_its_protocol() -> None:
    wrong = []
    for unit, path, package in _units():
        if unit == "agent":
            continue
        for line, target in _imports(path, package):
            if target[:1] == ["agent"] and (len(target) < 2 or target[1] not in AGENT_SURFACE):
                wrong.append(f"{path.relative_to(REPO)}:{line}: imports {'.'.join(target)}")
    assert wrong == []


def test_the_airflow_shells_stay_outside_the_core() -> None:
    """provider/ never imports Airflow, so the core runs (and is tested) without it."""
    wrong = []
    for unit, path, _ in _units():
        if unit in SHELLS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            wrong += [f"{path.relative_to(REPO)}:{node.lineno}: {name}" for name in names if name.split(".")[0] == "airflow"]
    assert wrong == []
