"""The package layout's rules (docs/architecture.md, "Layout"): imports run one way, at the top of modules.

Every module of mrfnet/, netgen/ and data_prep/ is parsed (not imported). netgen and data_prep
import no other project package; inside mrfnet each package has a rank and imports only from lower
ranks or from itself, and no module imports itself back through others. Project imports sit at the
top of modules; inside a function only the heavy optional ones below, each with a comment.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mrfnet", "netgen", "data_prep")
# mrfnet's packages, lowest first: a module may import from its own package or from a lower rank.
RANKS = {"mrfnet.runtime": 1, "mrfnet.layers": 1, "mrfnet.infer": 2, "mrfnet.export": 3, "mrfnet.evaluate": 4,
         "mrfnet.train": 5, "mrfnet.analyze": 5, "mrfnet.reproduce": 6, "mrfnet.commands": 7, "mrfnet.cli": 8}
# Imported where used: matplotlib and pydot are heavy and only some commands draw; Caffe (caffe,
# caffe.proto) and the libraries `mrfnet doctor` probes may be missing, and a command that needs
# none of them must still start and say so clearly (mrfnet.runtime.caffe_env.import_caffe).
LAZY_ALLOWED = ("matplotlib", "pydot", "caffe", "lmdb", "cv2", "skimage", "scipy")


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


MODULES = {module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def project_imports(name: str) -> list[tuple[str, ast.stmt, bool]]:
    """(imported project module, node, at top level) for each import in module ``name``."""
    tree = ast.parse(MODULES[name].read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in PACKAGES:
                found.append((target, node, id(node) in top))
            elif id(node) not in top and target.split(".")[0] not in LAZY_ALLOWED:
                found.append((target, node, False))
    return found


def rank(name: str) -> int | None:
    for prefix, value in RANKS.items():
        if name == prefix or name.startswith(prefix + "."):
            return value
    return None


def package_of(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "mrfnet" and len(parts) > 1 else parts[0]


def test_every_mrfnet_module_has_a_rank():
    assert [name for name in MODULES if name.startswith("mrfnet.") and rank(name) is None] == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_one_way_and_sit_at_the_top(name):
    problems = []
    for target, node, at_top in project_imports(name):
        where = f"{name}:{node.lineno} imports {target}"
        if not at_top:
            problems.append(f"{where} inside a function")
            continue
        if name.split(".")[0] in ("netgen", "data_prep"):
            if target.split(".")[0] != name.split(".")[0]:
                problems.append(f"{where}: {name.split('.')[0]} imports no other project package")
        elif target.startswith("mrfnet") and target != "mrfnet" and package_of(target) != package_of(name):
            if rank(target) is None or rank(target) >= rank(name):
                problems.append(f"{where}: rank {rank(name)} may not import rank {rank(target)}")
    assert problems == []


def test_no_import_cycles():
    graph = {name: {target for target, _, _ in project_imports(name) if target in MODULES} for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return path + [name, target]
            if target not in state:
                cycle = visit(target, path + [name])
                if cycle:
                    return cycle
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            assert visit(name, []) is None
