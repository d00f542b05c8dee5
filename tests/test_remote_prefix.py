"""A growing conversation on a served guard: each check sends what the previous check of the same role sent, up to
the end of its conversation, as its first token ids, so vLLM's automatic prefix caching reuses that KV.

What is sent is read off the guard's own HTTP client (an httpx request hook on its real connection to the session's
real vLLM server), and the reuse off the server's ``/metrics`` counters (``vllm:prefix_cache_hits`` counts prompt
tokens served from the cache, in whole blocks). Other test workers may share the server: their requests can only
add hits, so the counters are checked against a lower bound.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from conftest import answering_chat_model
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from langchain_llamaguard import LlamaGuard
from langchain_llamaguard.tiny import data


class Recorded:
    """The token-id prompts ``guard`` sends to ``/completions`` from now on: its real client's request bodies, read
    by a wrapper around each connection it opens (the guard must not have sent a check yet)."""

    def __init__(self, guard) -> None:
        self.prompts: list[list[int]] = []
        prompts, client = self.prompts, guard.backend.client
        make = client._new_transport

        class Recording(httpx.BaseTransport):
            def __init__(self) -> None:
                self.inner = make()

            def handle_request(self, request: httpx.Request) -> httpx.Response:
                if request.url.path.endswith("/completions"):
                    prompt = json.loads(request.content)["prompt"]
                    prompts.extend(prompt if prompt and isinstance(prompt[0], list) else [prompt])
                return self.inner.handle_request(request)

            def close(self) -> None:
                self.inner.close()

        client._new_transport = Recording

    def prompt_of(self, check) -> list[int]:
        """The prompt one ``check()`` sends. A check whose model does not answer as the format expects (a tiny guard
        on text unlike its training may not) asks again with the prompt plus the forced tokens: any such further
        request starts with the prompt, whole."""
        start = len(self.prompts)
        check()
        assert len(self.prompts) > start, "the check sent no /completions request"
        first, *again = self.prompts[start:]
        for more in again:
            assert more[: len(first)] == first, "a check's second request does not extend its prompt"
        return first


class Metrics:
    """The server's prefix-cache counters and cache settings, from its Prometheus ``/metrics``."""

    def __init__(self, server) -> None:
        self.url = server.url.removesuffix("/v1") + "/metrics"
        info = re.search(r"^vllm:cache_config_info\{([^}]*)\}", httpx.get(self.url).text, re.M)
        assert info, "the server exposes no vllm:cache_config_info"
        self.config = dict(re.findall(r'(\w+)="([^"]*)"', info.group(1)))
        self.block = int(self.config["block_size"])

    def hits(self) -> float:
        text = httpx.get(self.url).text
        return sum(float(v) for v in re.findall(r"^vllm:prefix_cache_hits_total\{[^}]*\} (\S+)$", text, re.M))

    def wait_for(self, before: float, at_least: int, within: float = 5.0) -> float:
        """The hits since ``before`` once they reach ``at_least`` (or whatever they are after ``within`` s)."""
        deadline = time.monotonic() + within
        while (got := self.hits() - before) < at_least and time.monotonic() < deadline:
            time.sleep(0.05)
        return got


def shared(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def cached(common: int, prompt_len: int, block: int) -> int:
    """Prompt tokens a prefix cache of ``block`` -token blocks serves when ``common`` leading ids were computed
    before (whole blocks only, and never the last prompt token, which is computed to sample from)."""
    return min(common, prompt_len - 1) // block * block


@pytest.fixture
def guard(vllm_server, lg3_8b_path):
    return LlamaGuard.from_endpoint(
        vllm_server.url, model=vllm_server.name, tokenizer=str(lg3_8b_path), on_error="unsafe"
    )


def trajectory() -> list:
    """An agent's run: a question, a tool call, its result, an answer, and two more rounds (over 300 tokens)."""
    call = {"name": "web_search", "args": {"query": "weather in Paris"}, "id": "call-1"}
    return [
        HumanMessage(data.WEATHER_QUESTION),
        AIMessage("", tool_calls=[call]),
        ToolMessage(data.WEATHER, tool_call_id="call-1", name="web_search"),
        AIMessage(data.WEATHER + " " + " ".join(data.BENIGN_ANSWERS)),
        HumanMessage(" ".join(data.BENIGN[3:9])),
        AIMessage(" ".join(data.BENIGN_ANSWERS + data.BENIGN_TOOL_OUTPUTS)),
        HumanMessage(data.BENIGN[9] + " " + " ".join(data.FILLER)),
        AIMessage(" ".join(data.FILLER * 3)),
    ]


def test_the_test_server_caches_prefixes(vllm_server):
    metrics = Metrics(vllm_server)
    assert metrics.config["enable_prefix_caching"] == "True"
    assert metrics.block >= 1


def test_same_role_checks_of_a_growing_trajectory_send_the_previous_conversation_first(guard, vllm_server):
    """Checking each new turn with the conversation so far (what an agent middleware does): a check's ids start
    with the previous same-role check's ids up to that check's conversation end, and the server serves those
    from its prefix cache."""
    metrics = Metrics(vllm_server)
    recorder = Recorded(guard)
    turns = trajectory()
    last: dict[str, tuple[list[int], int]] = {}  # role -> (ids sent, conversation end)
    reused = 0
    for n in range(1, len(turns) + 1):
        before = metrics.hits()
        sent = recorder.prompt_of(lambda n=n: guard.check(turns[:n]))
        prompt = guard.encode(turns[:n])[0]
        assert sent == prompt.input_ids  # the ids on the wire are the local encoding, whole
        if prompt.role in last:
            ids, end = last[prompt.role]
            assert sent[:end] == ids[:end], f"check {n} ({prompt.role}) does not extend the previous one"
            want = cached(shared(ids, sent), len(sent), metrics.block)
            assert metrics.wait_for(before, want) >= want, f"check {n}: fewer than {want} prompt tokens cached"
            reused = max(reused, want)
        last[prompt.role] = (sent, prompt.body_end)
    assert reused >= 2 * metrics.block  # the conversation itself was reused, not only the fixed policy text


def test_a_streamed_answer_keeps_everything_before_its_last_word(guard, vllm_server):
    """An answer checked as it streams (the text so far every few chunks, as ``stream_mode="incremental"``
    does): only the last word of a check can change in the next one, so everything before it is sent again
    as the same ids."""
    metrics = Metrics(vllm_server)
    answer = " ".join([data.BENIGN_ANSWER, *data.BENIGN_ANSWERS[1:], *data.FILLER * 10])
    question = HumanMessage(data.BENIGN_QUESTION)
    chunks = list(answering_chat_model({data.BENIGN_QUESTION: answer}).stream([question]))
    assert len(chunks) > 150
    recorder = Recorded(guard)
    before = metrics.hits()
    partials, sent, acc = [], [], None
    for i, chunk in enumerate(chunks, 1):
        acc = chunk if acc is None else acc + chunk
        if i % 10 == 0 or i == len(chunks):
            sent.append(recorder.prompt_of(lambda acc=acc: guard.check([question, acc])))
            partials.append(acc.text)
    assert partials[-1] == answer
    turn_end = len(guard.encoder.text_ids(guard.format.turn_end))
    want = 0
    for n in range(1, len(sent)):
        prev = partials[n - 1]
        # The previous check's ids before its last word: its text less that word, less the turn's end.
        stable = guard.encode([question, AIMessage(prev.rsplit(" ", 1)[0])])[0].body_end - turn_end
        common = shared(sent[n - 1], sent[n])
        assert common >= stable, f"check {n + 1} diverges at {common}, before the previous check's last word"
        want += cached(common, len(sent[n]), metrics.block)
    assert len(sent[-1]) > 3 * metrics.block
    assert metrics.wait_for(before, want) >= want
