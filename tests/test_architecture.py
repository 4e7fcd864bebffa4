"""The shape of the package: imports point from later stages to earlier ones, and modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "bertfit"

# The stages a text goes through, earliest first. A module may import from its own stage and earlier ones.
STAGES = ["ground", "runtime", "registry", "data", "model", "infer", "training", "curate", "evaluate", "deploy", "cli"]
# The shared ground: no torch, no other stage.
GROUND = {"__init__", "errors", "config_values", "config_distill", "config_rules", "config", "atomic", "metrics"}
MODEL = {"model", "meta", "artifacts", "hf_folder", "modeling_bertfit"}  # the classifier, the run-directory contract
# Beyond the order: serving and evaluating a run never need the training code.
FORBIDDEN = {("deploy", "training"), ("evaluate", "training")}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 310, 60


def stage_of(module: str) -> str:
    """'bertfit.data.read' -> 'data'; top-level modules belong to the ground or the model stage."""
    parts = module.split(".")
    if len(parts) == 1:
        return "ground"
    if parts[1] == "__main__":  # `python -m bertfit` is the command line
        return "cli"
    if len(parts) > 2 or parts[1] in STAGES:
        return parts[1]
    return "model" if parts[1] in MODEL else "ground"


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT.parent).with_suffix("")
    return ".".join(relative.parts).removesuffix(".__init__")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every bertfit import in the file, lazy ones inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [(node.lineno, name) for name in names if name.startswith("bertfit.")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("bertfit.")]
        assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}: use absolute imports"
    return found


def existing(name: str) -> bool:
    """Whether `name` is a module or package of bertfit (an imported function name is not)."""
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


SOURCES = sorted(ROOT.rglob("*.py"))


def test_every_import_points_to_an_earlier_stage():
    violations = []
    for path in SOURCES:
        here = stage_of(module_name(path))
        for line, name in imports(path):
            if not existing(name) or name == "bertfit":
                continue
            there = stage_of(name)
            if STAGES.index(there) > STAGES.index(here) or (here, there) in FORBIDDEN:
                violations.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {name} ({there})")
    assert not violations, "imports against the stage order:\n" + "\n".join(violations)


def test_no_import_cycles_between_modules():
    graph = {module_name(p): {n for _, n in imports(p) if existing(n) and n != "bertfit"} for p in SOURCES}
    visiting, done = set(), set()

    def visit(node: str, path: list[str]) -> None:
        if node in done:
            return
        assert node not in visiting, "import cycle: " + " -> ".join(path + [node])
        visiting.add(node)
        for child in graph.get(node, ()):
            visit(child, path + [node])
        visiting.discard(node)
        done.add(node)

    for node in graph:
        visit(node, [])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{len(lines)} lines; split the module by concern"
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{node.name} has {length} lines"


def test_the_stage_test_sees_a_violation(tmp_path):
    """The walker itself: an inference module importing training code is reported."""
    assert stage_of("bertfit.infer.engine") == "infer" and stage_of("bertfit.artifacts") == "model"
    assert stage_of("bertfit.config") == "ground" and stage_of("bertfit.training.loop") == "training"
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from bertfit.training.loop import Trainer\n")
    assert imports(bad) == [(2, "bertfit.training.loop"), (2, "bertfit.training.loop.Trainer")]
    assert STAGES.index(stage_of("bertfit.training.loop")) > STAGES.index("infer")


# The rules that choose a run's unset settings, and the planner modules that alone may call them.
SETTING_RULES = {"fill_defaults", "choose_windows", "every_row_trains", "choose_method", "weights_kept", "contrastive_steps",
                 "contrastive_lr", "learning_rate", "warmup_ratio", "epochs", "batch_size", "holds_out_nothing"}
PLANNER = {"bertfit.training.plan", "bertfit.training.setup", "bertfit.training.defaults",
           "bertfit.training.encoders"}  # model.name auto: the planner's choice of the encoder, before the rest


def calls_to_setting_rules(path: Path) -> list[str]:
    """`defaults.rule(...)` calls, and calls of rules imported by name from training.defaults, in the file."""
    tree, where = ast.parse(path.read_text(encoding="utf-8")), path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    imported = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "bertfit.training.defaults" for a in node.names if a.name in SETTING_RULES}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) \
                and function.value.id == "defaults" and function.attr in SETTING_RULES:
            found.append(f"{where}:{node.lineno} defaults.{function.attr}")
        elif isinstance(function, ast.Name) and function.id in imported:
            found.append(f"{where}:{node.lineno} {function.id}")
    return found


def test_only_the_planner_decides_a_runs_settings():
    """A run's unset settings are chosen in one place (training.plan, through the rules in training.defaults) before
    its first step; everything after the plan carries it out."""
    outside = [call for path in SOURCES if module_name(path) not in PLANNER for call in calls_to_setting_rules(path)]
    assert not outside, "settings chosen outside the planner:\n" + "\n".join(outside)


def test_the_planner_test_sees_a_rule_called_elsewhere(tmp_path):
    bad = tmp_path / "elsewhere.py"
    bad.write_text("from bertfit.training import defaults\nfrom bertfit.training.defaults import epochs\n\n"
                   "def f(c, f):\n    return defaults.fill_defaults(c, f, None), epochs(1, 2, 3)\n")
    assert calls_to_setting_rules(bad) == ["elsewhere.py:5 defaults.fill_defaults", "elsewhere.py:5 epochs"]


# Where a gradient step may be taken: the one training step, and the two places that fit something else by
# gradients (the planner's timing probe takes no step; calibration fits one temperature with L-BFGS).
STEPPERS = {"bertfit.training.steps", "bertfit.training.plan", "bertfit.evaluate.calibration"}


def gradient_calls(path: Path) -> list[str]:
    """`x.backward(...)`, `x.step(...)` calls on an optimizer or a scaler in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            if node.func.attr == "backward" or (node.func.attr == "step" and ("optimizer" in owner or "scaler" in owner)):
                found.append(f"{path.name}:{node.lineno} {owner}.{node.func.attr}")
    return found


def test_one_loop_trains_every_stage():
    """Every stage (fine-tuning, the head, the contrastive encoder stage) trains through training.steps.train_step,
    driven by training.loop.Trainer: no other module steps an optimizer or back-propagates."""
    outside = [call for path in SOURCES if module_name(path) not in STEPPERS for call in gradient_calls(path)]
    assert not outside, "gradient steps outside the one loop:\n" + "\n".join(outside)
    assert gradient_calls(ROOT / "training" / "steps.py"), "the walker finds the loop's own step"
