"""docs/SECURITY.md stays true: every test its limits table names exists, and every setting it
names is a real setting of some service."""

from __future__ import annotations

import ast
import re

from tests.support.paths import ROOT

DOC = ROOT / "docs" / "SECURITY.md"
TEST_CELL = re.compile(r"([\w/]+\.py)::(\w+)")
SETTING = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def _rows() -> list[list[str]]:
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and TEST_CELL.search(cells[3]):
            rows.append(cells)
    return rows


def _test_names(path: str) -> set[str]:
    tree = ast.parse((ROOT / "tests" / path).read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _settings_fields() -> set[str]:
    fields: set[str] = set()
    for path in [ROOT / "shared" / "core" / "settings.py", *ROOT.glob("services/*/settings.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                fields.add(node.target.id.upper())
    return fields


def test_the_limits_table_is_long_enough_to_mean_something() -> None:
    assert len(_rows()) >= 40


def test_every_test_the_limits_table_names_exists() -> None:
    missing = []
    for cells in _rows():
        for path, name in TEST_CELL.findall(cells[3]):
            if not (ROOT / "tests" / path).is_file() or name not in _test_names(path):
                missing.append(f"{path}::{name}")
    assert not missing, missing


def test_every_setting_the_limits_table_names_exists() -> None:
    fields = _settings_fields()
    named = {
        name
        for cells in _rows()
        for name in SETTING.findall(cells[2])
        if not name.endswith("_")  # a family such as MEDIA_MAX_*
    }
    assert named, "the table names no setting"
    assert named <= fields, sorted(named - fields)
