"""Every stage's DVC deps name the clcae modules its script imports (at module level, transitively),
so editing one reruns the stage and moves its resume-point code signature. The params' schema and
its errors (``clcae/config.py``, ``schema.py``, ``errors.py``) and the stage entry point
(``clcae/pipeline/__init__.py``: reads params, prints errors) are the exceptions: they compute
nothing, and DVC follows the params themselves. And no stage module imports another."""
import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

PIPELINES = ("dvc.yaml", "seeds/dvc.yaml", "ffhq/dvc.yaml")
EXEMPT = {"clcae/__init__.py", "clcae/config.py", "clcae/schema.py", "clcae/errors.py", "clcae/pipeline/__init__.py"}


def module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def top_level_imports(path: Path) -> set[str]:
    """clcae modules a file imports when it is imported (function-level imports run on demand)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}   # a name may be a module
    return {n for n in names if n.split(".")[0] == "clcae"}


def import_closure(script: Path) -> set[str]:
    seen, todo = set(), [script]
    while todo:
        for name in top_level_imports(todo.pop()):
            path = module_file(name)
            if path is not None and path not in seen:
                seen.add(path)
                todo.append(path)
    return {p.relative_to(ROOT).as_posix() for p in seen}


def stages():
    for pipeline in PIPELINES:
        for name, stage in yaml.safe_load((ROOT / pipeline).read_text())["stages"].items():
            yield pytest.param(stage.get("do", stage), id=f"{pipeline}:{name}")


@pytest.mark.parametrize("stage", list(stages()))
def test_stage_deps_cover_the_modules_its_script_imports(stage):
    script = re.search(r"stages/\w+\.py", stage["cmd"]).group(0)
    deps = [d.split("${")[0].rstrip("/") for d in stage["deps"]]   # clcae/worlds/${shared.world}: any world

    def covered(path: str) -> bool:
        return any(d and (path == d or path.startswith(d + "/")) for d in deps)

    missing = sorted(p for p in import_closure(ROOT / script) - EXEMPT if not covered(p))
    assert script in deps and not missing, f"{script}: add to the stage's deps: {missing}"


@pytest.mark.parametrize("module", sorted((ROOT / "clcae" / "pipeline").glob("[!_]*.py")), ids=lambda p: p.stem)
def test_no_stage_module_imports_another(module):
    """A stage's module imports library modules only (at any level), so that changing one stage's
    code reruns that stage alone; what two stages share lives beside ``clcae/pipeline``."""
    imported = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    stages = {f"clcae.pipeline.{p.stem}" for p in module.parent.glob("[!_]*.py")} - {f"clcae.pipeline.{module.stem}"}
    assert not imported & stages, f"{module.name} imports stage modules {sorted(imported & stages)}"
