"""Optional dependencies of the evaluation tools (the ``eval`` extra), imported only when used."""

from __future__ import annotations

import importlib
from typing import Any

_PIP = {"sklearn": "scikit-learn", "matplotlib": "matplotlib", "tqdm": "tqdm"}


def need(module: str) -> Any:
    """Import ``module`` or raise an ``ImportError`` that names the ``eval`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise ImportError(
            f"langchain_llamaguard.evaluation needs {_PIP.get(top, top)}: pip install 'langchain-llamaguard[eval]'"
        ) from None
