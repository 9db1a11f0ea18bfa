"""docs/errors.md: every row names a test, and every named test exists (collected by name, parametrized or not)."""
import ast
import re

from pipeline.config import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "errors.md"


def _tests_in(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.name.startswith("test_")}


def test_every_row_names_an_existing_test():
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith(("| input", "|---"))]
    assert len(rows) >= 30
    missing = []
    for row in rows:
        refs = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", row)
        assert refs, f"row without a test: {row}"
        for path, name in refs:
            file = PROJECT_ROOT / path
            if not file.is_file() or name not in _tests_in(file):
                missing.append(f"{path}::{name}")
    assert not missing, missing
