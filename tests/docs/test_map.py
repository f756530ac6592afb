"""ARCHITECTURE.md's map of where each rule lives names real code: every ``module:name`` in
its table resolves (a rename or a move that forgets the map fails here), every module of
``pipeline/`` is named somewhere in the document, and README's layout lists every module."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
_PLACE = re.compile(r"`([a-z_]+(?:/[a-z_]+)*\.py):([A-Za-z_][\w.]*)`")
RULES = ARCHITECTURE.partition("## Where each rule lives")[2].partition("\n## ")[0]


def modules() -> list[Path]:
    return sorted(
        p.relative_to(ROOT / "pipeline")
        for p in (ROOT / "pipeline").rglob("*.py")
        if "__pycache__" not in p.parts and p.name not in {"__init__.py", "__main__.py"}
    )


def test_the_map_has_the_rules_a_newcomer_looks_for() -> None:
    for rule in (
        "daily quota",
        "in-flight limit",
        "already exists",
        "exit code",
        "token refresh",
        "checkpoint",
        "results column",
        "lost server",
    ):
        assert rule in RULES, rule
    assert len(_PLACE.findall(RULES)) >= 15


def test_every_place_in_the_map_resolves() -> None:
    missing = []
    for path, name in _PLACE.findall(RULES):
        module = importlib.import_module("pipeline." + path.removesuffix(".py").replace("/", "."))
        target: object = module
        for part in name.split("."):
            target = getattr(target, part, None)
            if target is None:
                missing.append(f"{path}:{name}")
                break
    assert missing == []


def test_every_module_is_on_the_map_and_in_the_readme_layout() -> None:
    layout = README.partition("## Layout")[2].partition("\n## ")[0]
    for module in modules():
        assert str(module) in ARCHITECTURE or f"`{module}`" in ARCHITECTURE, module
        assert f"`{module.name}`" in layout or module.parent.name == "sandbox", module
