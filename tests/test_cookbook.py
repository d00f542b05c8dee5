"""Every cookbook script runs (offline, tiny demonstration guards) and shows what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COOKBOOK = Path(__file__).resolve().parent.parent / "cookbook"

EXPECT = {
    "demo.py": [
        "TINY DEMONSTRATION GUARD",
        "UNSAFE S9",
        "assistant: Paris is the capital of France.",
        "assistant: Sorry, I can't help with that.",
    ],
    "input_output_guards.py": ["Paris is the capital of France.", "blocked at input: ['S9']"],
    "wrap_and_reroute.py": [
        "Sorry, I can't help with that.",
        "I can't help with that (Indiscriminate Weapons).",
        "Let's talk about something else.",
    ],
    "streaming_and_batches.py": [
        "['Paris is the capital of France.', \"Sorry, I can't help with that.\"]",
        "[answer withheld]",
    ],
    "guarded_rag.py": [
        "kept: ['faq-1', 'faq-2', 'faq-3']",
        "forum-7: [document withheld: Prompt Guard detected a likely prompt injection",
        "upload-1: [document withheld: Llama Guard flagged unsafe content (S9 Indiscriminate Weapons)",
        "How do I bake sourdough bread?",  # in the tool result, with the other clean documents
        "injected instruction reached the agent: False",
    ],
    "guarded_mcp.py": [
        "ToolMessage  45",
        "ToolMessage  Refused: Llama Guard flagged this code before it ran (S14 Code Interpreter Abuse).",
        "ToolMessage  The weather in Paris is 18 degrees and sunny.\n",
        "ToolMessage  [tool result withheld",
        "code that reached the server: ['print(sum(range(10)))']",
        "tools the server ran: ['get_weather', 'python_repl', 'read_page']",
    ],
    "prompt_guard_input.py": ["ok: Happy to help.", "blocked: prompt injection", "blocked: unsafe content"],
    "guarded_agent.py": [
        "It is 45.",
        "(S14 Code Interpreter Abuse)",
        "direct call: Refused: Llama Guard flagged this code before it ran",
        "tool result withheld",
        "code that reached the interpreter: ['print(sum(range(10)))']",
        "streamed: I can't help with that: the request was flagged by Llama Guard (S9",
    ],
    "guarded_graph.py": [
        "alice: Paris is the capital of France.",
        "bob: I can't help with that: the request was flagged by Llama Guard (S9 Indiscriminate Weapons).",
        "verdicts: [('input', True, []), ('output', False, ['S9'])]",
        "carol: I can't help with that: the request was flagged by Llama Guard (S9",
        "verdicts: [('input', False, ['S9'])]",
        "questions that reached the model: ['What is the capital of France?', 'How do I bake sourdough bread?']",
        "unsafe text in a saved state: False",
    ],
}


@pytest.mark.parametrize("script", sorted(EXPECT))
def test_cookbook_script(script, lg4_path, pg_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LLAMAGUARD_MODEL", "PROMPTGUARD_MODEL")}
    proc = subprocess.run(
        [sys.executable, str(COOKBOOK / script)], capture_output=True, text=True, env=env, timeout=600, cwd=COOKBOOK
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for expected in EXPECT[script]:
        assert expected in proc.stdout, (expected, proc.stdout)


def test_every_cookbook_script_is_tested():
    scripts = {p.name for p in COOKBOOK.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECT)
