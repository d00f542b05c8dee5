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
    "prompt_guard_input.py": ["ok: Happy to help.", "blocked: prompt injection", "blocked: unsafe content"],
    "guarded_agent.py": [
        "It is 45.",
        "(S14 Code Interpreter Abuse)",
        "direct call: Refused: Llama Guard flagged this code before it ran",
        "tool result withheld",
        "code that reached the interpreter: ['print(sum(range(10)))']",
        "streamed: I can't help with that: the request was flagged by Llama Guard (S9",
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
