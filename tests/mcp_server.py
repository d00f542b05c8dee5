"""A real MCP server (the ``mcp`` package's FastMCP) for tests/test_mcp.py: tools an agent gets over MCP.

``python tests/mcp_server.py http PORT`` serves streamable HTTP on 127.0.0.1:PORT (path ``/mcp``) and exits when
its stdin closes (the test holds a pipe to it, so the server dies with the test session, even when that is
killed); ``python tests/mcp_server.py stdio`` serves over stdio. Every call a tool receives is appended, as a
JSON line ``{"tool": ..., "args": {...}}``, to the file named by ``MCP_CALL_LOG``: the test reads it to prove
which calls reached the server. The tools answer with texts of the tiny guards' check set.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from mcp.server.fastmcp import FastMCP

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from langchain_llamaguard.tiny.data import BENIGN_ANSWER, INJECTION, UNSAFE_ANSWER, WEATHER  # noqa: E402

LOG = os.environ.get("MCP_CALL_LOG")


def _record(tool: str, **args: str) -> None:
    if LOG:
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "args": args}) + "\n")


def build(port: int = 8000) -> FastMCP:
    server = FastMCP("guard-test-tools", host="127.0.0.1", port=port, log_level="WARNING")

    @server.tool()
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        _record("get_weather", city=city)
        return WEATHER

    @server.tool()
    def read_page(url: str) -> str:
        """Fetch a web page and return its text."""
        _record("read_page", url=url)
        return f"{WEATHER} {INJECTION}"  # a page carrying an indirect prompt injection

    @server.tool()
    def python_repl(code: str) -> str:
        """Run Python code in a sandbox and return what it prints."""
        _record("python_repl", code=code)
        return "45"  # never executes anything: the log is what the tests look at

    @server.tool()
    def lookup(topic: str) -> str:
        """Look something up."""
        _record("lookup", topic=topic)
        return UNSAFE_ANSWER if topic == "chemistry" else BENIGN_ANSWER

    return server


def _exit_when_stdin_closes() -> None:
    sys.stdin.buffer.read()
    os._exit(0)


if __name__ == "__main__":
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if transport == "http":
        threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
        build(int(sys.argv[2])).run("streamable-http")
    elif transport == "stdio":
        build().run("stdio")
    else:
        sys.exit(f"unknown transport {transport!r}; accepted: http PORT, stdio")
