"""LangChain's standard tool suites (langchain-tests) on guarded tools around real ``@tool`` functions."""

from __future__ import annotations

import pytest
from conftest import WEATHER
from langchain_core.tools import BaseTool, tool
from langchain_tests.integration_tests import ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from langchain_llamaguard.tools import guard_code_tool, guard_tool


@tool
def web_search(query: str) -> str:
    """Search the web."""
    return WEATHER


@tool
def python_repl(code: str) -> str:
    """Run Python code in a sandbox and return what it prints."""
    return "45"


EXAMPLES = {"guard_tool": {"query": "weather in Paris"}, "guard_code_tool": {"code": "print(sum(range(10)))"}}


class _Suite:
    """Both guarded tools (``guard_tool`` on a search, ``guard_code_tool`` on a REPL) over the tiny Llama Guard 4."""

    @pytest.fixture(params=list(EXAMPLES), autouse=True)
    def _which(self, request, lg4):
        self.which = request.param
        self._tool = guard_tool(web_search, lg4) if self.which == "guard_tool" else guard_code_tool(python_repl, lg4)

    @property
    def tool_constructor(self) -> BaseTool:
        return self._tool

    @property
    def tool_invoke_params_example(self) -> dict:
        return EXAMPLES[self.which]


class TestGuardedToolsUnit(_Suite, ToolsUnitTests):
    pass


class TestGuardedToolsIntegration(_Suite, ToolsIntegrationTests):
    pass
