"""A served guard's life: built before its server is up, failing closed while it is down, working once it is back
(the same object), start-up probes, and cancelled async checks that cancel their requests.

The server is the session's real vLLM (``conftest.py``); "down" and "back" come from a real TCP forwarder on a
loopback port that this module starts and stops in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import statistics
import threading
import time
from typing import Any

import pytest
from conftest import BENIGN, BOMB, POISON
from test_remote_vllm import same

from langchain_llamaguard import GuardServerError, LlamaGuard
from langchain_llamaguard.backends.base import MAX_NEW_TOKENS
from langchain_llamaguard.retry import is_transient_error
from langchain_llamaguard.tiny import data
from langchain_llamaguard.tiny.serving import free_port


class Forwarder:
    """A loopback TCP port that forwards each connection to ``upstream`` (``host, port``), or, with ``upstream``
    ``None``, holds it open and never answers. :meth:`start` and :meth:`stop` at will, on the same port."""

    def __init__(self, port: int, upstream: tuple[str, int] | None) -> None:
        self.port, self.upstream = port, upstream
        self.url = f"http://127.0.0.1:{port}/v1"
        self.accepted = 0
        self._live: set[socket.socket] = set()  # client connections the client has not closed
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> Forwarder:
        self._stop.clear()
        server = socket.create_server(("127.0.0.1", self.port))
        server.settimeout(0.05)
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        time.sleep(0.1)  # the accept loop closes the port
        with self._lock:
            conns, self._live = list(self._live), set()
        for conn in conns:
            _close(conn)

    def live(self) -> int:
        with self._lock:
            return len(self._live)

    def _accept(self, server: socket.socket) -> None:
        with server:
            while not self._stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with self._lock:
                    self.accepted += 1
                    self._live.add(conn)
                if self.upstream is None:
                    threading.Thread(target=self._pump, args=(conn, None), daemon=True).start()
                    continue
                up = socket.create_connection(self.upstream)
                threading.Thread(target=self._pump, args=(conn, up), daemon=True).start()
                threading.Thread(target=self._pump, args=(up, conn), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None) -> None:
        try:
            while chunk := src.recv(65536):
                if dst is not None:
                    dst.sendall(chunk)
        except OSError:
            pass
        with self._lock:
            self._live.discard(src)
        _close(src)
        if dst is not None:
            _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


async def until(condition, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "not within the bound"
        await asyncio.sleep(0.02)


def _upstream(vllm_server) -> tuple[str, int]:
    host_port = vllm_server.url.removeprefix("http://").removesuffix("/v1")
    host, port = host_port.rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def forwarder(vllm_server):
    made: list[Forwarder] = []

    def make(upstream: bool = True) -> Forwarder:
        made.append(Forwarder(free_port(), _upstream(vllm_server) if upstream else None))
        return made[-1]

    yield make
    for f in made:
        f.stop()


def test_built_before_the_server_fails_closed_then_works_once_it_is_up(forwarder, vllm_server, lg3_8b):
    fwd = forwarder()  # not started: nothing listens on its port
    tok = lg3_8b.tokenizer
    local = {text: lg3_8b.check(text) for text in (BENIGN, BOMB, POISON)}
    lenient = LlamaGuard.from_endpoint(fwd.url, model=vllm_server.name, tokenizer=tok, on_error="unsafe")
    strict = LlamaGuard.from_endpoint(fwd.url, model=vllm_server.name, tokenizer=tok)

    down = lenient.check(BOMB)
    assert not down.safe and "cannot reach " + fwd.url in down.error
    with pytest.raises(GuardServerError, match="cannot reach"):
        strict.check(BENIGN)
    assert [v.safe for v in asyncio.run(lenient.abatch_check([BENIGN, POISON]))] == [False, False]
    start = time.monotonic()
    assert lenient.ready(timeout=0.5) is False
    assert 0.5 <= time.monotonic() - start < 3
    assert asyncio.run(lenient.aready(timeout=0.2)) is False

    fwd.start()
    accepted = fwd.accepted
    LlamaGuard.from_endpoint(fwd.url, model=vllm_server.name, tokenizer=tok)  # constructing sends nothing
    assert fwd.accepted == accepted
    assert strict.ready(timeout=60) and asyncio.run(lenient.aready(timeout=60))
    for text in (BOMB, BENIGN):  # the same objects, now with the real verdicts
        same(local[text], lenient.check(text))
        same(local[text], strict.check(text))
    same(local[POISON], asyncio.run(lenient.acheck(POISON)))
    assert lenient.context_length == 4096 - (1 + MAX_NEW_TOKENS)  # read from the server on first use

    async def down_and_back() -> None:  # one event loop: its async client recovers too
        same(local[BENIGN], await lenient.acheck(BENIGN))
        fwd.stop()  # after pooled connections were made: they are dropped, not reused
        assert "cannot reach" in (await lenient.acheck(BENIGN)).error
        assert "cannot reach" in lenient.check(BENIGN).error
        fwd.start()
        same(local[BOMB], await lenient.acheck(BOMB))
        same(local[BOMB], lenient.check(BOMB))

    asyncio.run(down_and_back())


def test_a_model_the_server_does_not_serve_is_found_at_first_use(vllm_server, lg3_8b):
    built = LlamaGuard.from_endpoint(vllm_server.url, model="nope", tokenizer=lg3_8b.tokenizer)
    with pytest.raises(GuardServerError, match="does not serve 'nope'; it serves: lg3-tiny") as caught:
        built.check(BENIGN)
    assert not is_transient_error(caught.value)  # a typo in model= is not retried as an outage is
    assert built.ready(timeout=0.2) is False
    lenient = LlamaGuard.from_endpoint(vllm_server.url, model="nope", tokenizer=lg3_8b.tokenizer, on_error="unsafe")
    assert "does not serve 'nope'" in lenient.check(BENIGN).error
    assert lg3_8b.ready(timeout=0) is True and asyncio.run(lg3_8b.aready(timeout=0)) is True  # in-process


def test_cancelled_checks_cancel_their_requests_and_free_their_slots(forwarder, vllm_server, lg3_8b):
    """50 ``acheck`` s cancelled at random moments (``asyncio.wait_for``) leave no request running and no
    concurrency slot taken: afterwards 20 checks complete promptly with the uncancelled verdicts."""
    texts = [c.conversation for c in data.llama_guard_checks("llama-guard-3-8b") if isinstance(c.conversation, str)]
    texts = texts[:6]
    want = {t: lg3_8b.check(t) for t in texts}
    guard = LlamaGuard.from_endpoint(
        vllm_server.url, model=vllm_server.name, tokenizer=lg3_8b.tokenizer, max_concurrency=4, timeout=20
    )
    black_hole = forwarder(upstream=False).start()  # accepts requests and never answers
    stuck = LlamaGuard.from_endpoint(
        black_hole.url, model=vllm_server.name, tokenizer=lg3_8b.tokenizer, context_length=4000, max_concurrency=2
    )

    async def scenario() -> tuple[int, list]:  # one event loop: one async client and its slots
        await guard.acheck(texts[0])  # a connection, warm
        times = []
        for text in texts[:3]:  # a check's time on a warm connection (a cold first one made every timeout long)
            start = time.monotonic()
            await guard.acheck(text)
            times.append(time.monotonic() - start)
        latency = statistics.median(times)
        rng = random.Random(21)
        cancelled = 0

        async def cancel_at(i: int) -> None:
            nonlocal cancelled
            try:
                await asyncio.wait_for(guard.acheck(texts[i % len(texts)]), rng.uniform(0, 1.5 * latency))
            except TimeoutError:
                cancelled += 1

        await asyncio.gather(*(cancel_at(i) for i in range(50)))
        # Requests that never get an answer: cancelled, their connections are closed by the client at once.
        for _ in range(6):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(stuck.acheck(BENIGN), 0.5)
        await until(lambda: black_hole.live() == 0)
        assert black_hole.accepted >= 6
        # Both slots of ``max_concurrency=2`` are free: two new requests reach the server at once.
        before = black_hole.accepted
        pending = [asyncio.create_task(stuck.acheck(BENIGN)) for _ in range(2)]
        await until(lambda: black_hole.accepted == before + 2)
        for task in pending:
            task.cancel()
        got = await asyncio.wait_for(asyncio.gather(*(guard.acheck(texts[i % len(texts)]) for i in range(20))), 60)
        return cancelled, got

    cancelled, got = asyncio.run(scenario())
    assert cancelled >= 10
    for i, verdict in enumerate(got):
        same(want[texts[i % len(texts)]], verdict)


def test_checks_cancelled_by_the_hundred_never_leave_the_client_without_a_connection(vllm_server, lg3_8b):
    """An async web server's guard is cancelled whenever a client disconnects. Through one shared httpx pool,
    requests cancelled at the wrong moment left its connections stuck as busy (encode/httpcore#1093) until none
    was left and every later check timed out against a healthy server. Here: rounds of 60 checks cancelled at
    random moments, each followed by 4 checks at once that must all be answered (2 connections)."""
    guard = LlamaGuard.from_endpoint(
        vllm_server.url, model=vllm_server.name, tokenizer=lg3_8b.tokenizer, max_concurrency=2, timeout=20
    )  # a stuck pool fails every later check whatever the timeout; 8 s timed out a first check on a busy machine
    want = lg3_8b.check(BENIGN)

    async def scenario() -> list:
        start = time.monotonic()
        await guard.acheck(BENIGN)
        latency = time.monotonic() - start
        rng = random.Random(7)

        async def cancelled_at_random() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(guard.acheck(BENIGN), rng.uniform(0, 2 * latency))

        got = []
        for _ in range(15):
            await asyncio.gather(*(cancelled_at_random() for _ in range(60)))
            got += await asyncio.wait_for(asyncio.gather(*(guard.acheck(BENIGN) for _ in range(4))), 30)
        await guard.aclose()
        return got

    got = asyncio.run(scenario())
    assert len(got) == 60
    for verdict in got:
        same(want, verdict)


def test_a_connection_idle_for_4_s_is_closed_before_the_server_closes_it(forwarder, vllm_server, lg3_8b):
    """vLLM's server (uvicorn) closes a connection after 5 s idle; a check sent on it at that moment was reset
    mid-request. The client closes idle connections after 4 s itself, so a check after a pause opens a fresh one,
    and checks in quick succession share one (sync and async)."""
    fwd = forwarder().start()
    guard = LlamaGuard.from_endpoint(fwd.url, model=vllm_server.name, tokenizer=lg3_8b.tokenizer, context_length=4000)
    guard.check(BENIGN)
    first = fwd.accepted
    assert guard.check(BENIGN).safe and fwd.accepted == first  # kept alive between checks
    time.sleep(4.5)
    assert guard.check(BENIGN).safe and fwd.accepted == first + 1

    async def paused() -> list[int]:
        await guard.acheck(BENIGN)
        seen = [fwd.accepted]
        await guard.acheck(BENIGN)
        seen.append(fwd.accepted)
        await asyncio.sleep(4.5)
        await guard.acheck(BENIGN)
        return [*seen, fwd.accepted]

    a, b, c = asyncio.run(paused())
    assert a == b and c == b + 1


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork")
def test_a_served_guard_used_before_a_fork_gets_its_own_connections_in_the_child(forwarder, vllm_server, lg3_8b):
    """gunicorn --preload: a guard that checked in the parent (its connections kept alive, its request threads
    started) is used by forked workers. Each child opens connections of its own: sharing the parent's sockets,
    workers read each other's answers (another conversation's verdict), and the parent's idle request threads do
    not exist in a child, so a batch waited for them for ever."""
    import warnings

    from test_production_hard import _in_forked_child

    fwd = forwarder().start()
    guard = LlamaGuard.from_endpoint(fwd.url, model=vllm_server.name, tokenizer=lg3_8b.tokenizer, timeout=20)
    rows = [BENIGN, BOMB, POISON]
    expected = [(v.safe, v.categories) for v in guard.batch_check(rows)]  # three requests, three threads
    before = fwd.accepted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        codes = [
            _in_forked_child(lambda: [(v.safe, v.categories) for v in guard.batch_check(rows)] == expected, 60)
            for _ in range(2)
        ]
    assert codes == [0, 0]
    assert fwd.accepted >= before + 2  # the children connected on their own
    assert [(v.safe, v.categories) for v in guard.batch_check(rows)] == expected  # the parent's still work


def test_async_checks_ask_a_silent_server_on_the_event_loop_not_in_threads(lg3_8b):
    """The first async check asks the server for the model's context. Against a server that accepts connections and
    never answers, that request used to block a thread of the loop's default executor per caller (for the whole
    timeout), so concurrent checks queued behind each other and cancelled callers starved every other
    ``asyncio.to_thread`` user of the application. It is now an async request: each caller fails closed within its
    own timeout, and a cancelled caller holds no thread."""
    silent = Forwarder(free_port(), None).start()
    try:
        guard = LlamaGuard.from_endpoint(silent.url, model="m", tokenizer=lg3_8b.tokenizer, timeout=1.0,
                                         on_error="unsafe")  # fmt: skip
        patient = LlamaGuard.from_endpoint(silent.url, model="m", tokenizer=lg3_8b.tokenizer, timeout=30.0)

        async def main() -> tuple[list[float], float]:
            start = time.monotonic()

            async def one() -> float:
                verdict = await guard.acheck(BENIGN)
                assert not verdict.safe and verdict.error  # fail closed: the server never answered
                return time.monotonic() - start

            took = await asyncio.gather(*[one() for _ in range(48)])
            tasks = [asyncio.create_task(asyncio.wait_for(patient.acheck(BENIGN), 0.2)) for _ in range(24)]
            await asyncio.gather(*tasks, return_exceptions=True)  # clients that went away
            t = time.monotonic()
            await asyncio.to_thread(lambda: None)
            return took, time.monotonic() - t

        took, waited = asyncio.run(main())
        assert max(took) < 4.0, sorted(took)  # each within its own 1 s timeout, not queued six at a time (8 s)
        assert waited < 1.0  # no thread of the default executor is held by a cancelled check
    finally:
        silent.stop()


def test_a_request_waiting_for_a_connection_fails_at_once_when_the_client_is_closed():
    """``close()`` under load: a check queued behind busy connections used to wait its whole timeout for a
    connection that was never handed back, then report a server timeout; it fails at once with GuardClosedError."""
    from langchain_llamaguard import GuardClosedError
    from langchain_llamaguard.backends.http import EndpointClient

    silent = Forwarder(free_port(), None).start()
    client = EndpointClient(silent.url, timeout=10.0, max_concurrency=1)
    outcome: dict[str, Any] = {}

    def post(name: str) -> None:
        start = time.monotonic()
        try:
            client.post_many([("/completions", {"prompt": [1, 2, 3]})])
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            outcome[name] = (type(exc), time.monotonic() - start)

    busy = threading.Thread(target=post, args=("busy",))
    busy.start()
    time.sleep(0.3)  # the one connection is taken, and never answered
    waiting = threading.Thread(target=post, args=("waiting",))
    waiting.start()
    time.sleep(0.3)
    closed_at = time.monotonic()
    client.close()
    waiting.join(5)
    try:
        assert "waiting" in outcome and outcome["waiting"][0] is GuardClosedError
        assert time.monotonic() - closed_at < 1.0
    finally:
        silent.stop()
        busy.join(15)


def test_an_async_request_waiting_for_a_connection_is_never_sent_after_close():
    """The async twin: a request waiting for the loop's one connection when the client is closed fails with
    GuardClosedError once the connection frees, without sending anything or keeping a connection open."""
    from langchain_llamaguard import GuardClosedError
    from langchain_llamaguard.backends.http import EndpointClient

    silent = Forwarder(free_port(), None).start()
    client = EndpointClient(silent.url, timeout=1.5, max_concurrency=1)

    async def main() -> list[Any]:
        body = ("/completions", {"prompt": [1, 2, 3]})
        busy = asyncio.ensure_future(client.apost_many([body]))
        await asyncio.sleep(0.3)
        waiting = asyncio.ensure_future(client.apost_many([body]))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(client.close)  # another thread closes the guard (a shutdown hook)
        return await asyncio.gather(busy, waiting, return_exceptions=True)

    try:
        busy, waiting = asyncio.run(main())
        assert isinstance(busy, GuardServerError) and isinstance(waiting, GuardClosedError)
        assert silent.accepted == 1  # the waiting request never opened a connection of its own
    finally:
        silent.stop()


def test_a_request_whose_caller_stopped_waiting_for_a_connection_is_never_sent():
    """A served guard with ``timeout=`` under load: a check that timed out while every connection was busy used to
    send its request once one came free, for nobody, and the next callers waited behind it. It is never sent."""
    from langchain_llamaguard.backends.http import EndpointClient
    from langchain_llamaguard.cancellation import abandon, in_thread

    silent = Forwarder(free_port(), None).start()
    client = EndpointClient(silent.url, timeout=1.0, max_concurrency=1)
    body = ("/completions", {"prompt": [1, 2, 3]})
    try:
        busy = in_thread(client.post_many, [body])  # takes the one connection; never answered, times out in 1 s
        time.sleep(0.3)
        waiting = in_thread(client.post_many, [body, body])  # a check of two prompts, waiting for the connection
        time.sleep(0.2)
        abandon(waiting)  # its caller's timeout
        with pytest.raises(GuardServerError):
            busy.result(10)
        with contextlib.suppress(BaseException):
            waiting.exception(10)
        assert silent.accepted == 1  # the abandoned requests never opened a connection
        later = in_thread(client.post_many, [body])  # and the next caller's request is sent at once
        time.sleep(0.3)
        assert silent.accepted == 2
        with pytest.raises(GuardServerError):
            later.result(10)
    finally:
        client.close()
        silent.stop()
