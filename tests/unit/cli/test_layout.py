"""The CLI package stays easy to read: no module over 500 lines and no function over 60 (counted from the
`def` line to the last line of the body, decorators not included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pyswarm.cli

CLI = Path(pyswarm.cli.__file__).parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def test_no_cli_module_is_over_500_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in sorted(CLI.glob("*.py"))}
    assert "service_cmds.py" in sizes
    assert {name: size for name, size in sizes.items() if size > MAX_MODULE_LINES} == {}


def test_no_cli_function_is_over_60_lines() -> None:
    long = {}
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long[f"{path.name}:{node.name}"] = size
    assert long == {}
