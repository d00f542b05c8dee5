"""The declared lower bounds are the versions `make test-lowest` installs, and the pins are the newest releases."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins(name: str) -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    return dict(line.split("==") for line in lines if line.strip() and not line.startswith("#"))


def test_every_lower_bound_is_a_version_test_lowest_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    bounds = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)>=([^,;\s]+)", spec).groups() for spec in specs)
    assert bounds == _pins("constraints-lowest.txt")


def test_make_test_installs_the_newest_langchain():
    pins = _pins("constraints.txt")
    assert (pins["langchain"], pins["langchain-core"], pins["langgraph"]) == ("1.5.2", "1.8.3", "1.2.24")


def test_layers_point_one_way():
    """Formats, verdicts, the engines and their backends never import the LangChain adapters above them."""
    import ast

    package = ROOT / "langchain_llamaguard"
    adapters = {
        "runnables",
        "moderators",
        "guards",
        "middleware",
        "tools",
        "cli",
        "evaluation",
        "retry",
        "documents",
        "graph",
        "replacements",
        "parallel",
        "inner_runs",
    }
    lower = [
        "taxonomy.py",
        "options.py",
        "conversation.py",
        "content_blocks.py",
        "provider_blocks.py",
        "prompt_format.py",
        "encoding.py",
        "verdict.py",
        "errors.py",
        "cancellation.py",
        "forking.py",
        "lifecycle.py",
        "hidden_text.py",
        "images.py",
        "batching.py",
        "budget.py",
        "pickling.py",
        "llama_guard.py",
        "prompt_guard.py",
        *[f"backends/{p.name}" for p in (package / "backends").glob("*.py")],
    ]
    for name in lower:
        tree = ast.parse((package / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = (node.module or "").split(".")[0] if node.level == 1 or name.startswith("backends/") else ""
                names = {target} | {a.name for a in node.names if not node.module}
                assert not names & adapters, f"{name} imports {node.module or names} from the adapter layer"


def test_errors_are_the_bottom_layer():
    """errors.py imports nothing of the package (not even verdict types for type checking): no circle."""
    import ast

    tree = ast.parse((ROOT / "langchain_llamaguard" / "errors.py").read_text())
    relative = [
        n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.level or "llamaguard" in (n.module or ""))
    ]
    assert relative == [], [ast.unparse(n) for n in relative]
