"""The HTTP side of a served guard: pooled connections per endpoint, bounded concurrency, bounded retries, and
errors that say what went wrong without ever showing the API key.

Sync POSTs (the checks) go through *slots*: at most ``max_concurrency`` one-connection httpx transports, each used
by one request at a time and handed back last-in first-out. A shared connection pool scans all of its
connections under one lock on every request and every answer; with many caller threads that scan costs more
client CPU than the rest of a check together (measured with 16 threads: 1.17 ms of client CPU per request
through one shared ``httpx.Client``, 0.76 ms through slots), and on a machine shared with the server that CPU
is taken from the server.

Async requests (GETs too) go through slots of their own, one set per event loop, and a slot whose request was
cancelled or failed is closed and replaced, never reused: httpcore can leave a pooled connection stuck as busy
when a request is cancelled at the wrong moment (encode/httpcore#1093), and an async web server's guard is
cancelled whenever a client disconnects. Through one shared ``httpx.AsyncClient``, 100 requests cancelled at
random moments left every connection of the pool stuck within a few rounds, and the next check never got one.

Which models a server serves, and their context, come from ``/v1/models`` through :class:`ServedModel`: read on
first use, not when a guard is built, and polled by start-up probes (:meth:`ServedModel.ready`).

Backends describe their requests as *plans*: a generator that yields a list of ``(path, body)`` requests, is
sent back their parsed JSON answers (in order), and finally returns its result. :meth:`EndpointClient.run` and
:meth:`EndpointClient.arun` drive a plan with threads or with ``asyncio``, so a backend writes its protocol once
for both.

Example:
    >>> client = EndpointClient("http://127.0.0.1:8000/v1")          # doctest: +SKIP
    >>> client.get("/models")["data"][0]["id"]                       # doctest: +SKIP
    'meta-llama/Llama-Guard-4-12B'
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import datetime
import email.utils
import json
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any, TypeVar

import httpx
import tenacity

from ..cancellation import raise_if_abandoned
from ..errors import GuardClosedError, GuardConfigurationError, GuardServerError
from ..forking import call_in_child

Request = tuple[str, dict[str, Any]]
Plan = Generator[list[Request], list[dict[str, Any]], Any]
T = TypeVar("T")

RETRY_STATUSES = (429, 503)
"""Statuses that mean "busy, try again": retried with backoff while the timeout allows."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, GuardServerError) and exc.status in RETRY_STATUSES


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a ``Retry-After`` header asks to wait (a number, or an HTTP date); ``None`` without one.

    Example:
        >>> retry_after(httpx.Response(429, headers={"Retry-After": "2"}))
        2.0
    """
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # not a delay we can read: the usual backoff
    now = datetime.datetime.now(when.tzinfo or datetime.UTC)
    return max((when - now).total_seconds(), 0.0)


_BACKOFF = tenacity.wait_exponential_jitter(initial=0.05, max=2.0)


def _wait(state: tenacity.RetryCallState) -> float:
    """Exponential backoff with jitter, or longer where the server said how long (``Retry-After``)."""
    exc = state.outcome.exception() if state.outcome is not None else None
    asked = getattr(exc, "retry_after", None)
    return max(_BACKOFF(state), asked or 0.0)


KEEPALIVE_S = 4.0
"""Idle connections are closed after this many seconds: under the 5 s after which vLLM's server (uvicorn's default
``timeout_keep_alive``) closes them, so a check is never sent on a connection the server is closing at that moment
(httpx's default, also 5 s, let a reused connection be reset mid-request)."""


class EndpointClient:
    """A connection-pooled client of one OpenAI-compatible base URL (ending in ``/v1``).

    Args:
        base_url: e.g. ``http://guard.internal:8000/v1``. Credentials in the URL are refused: pass ``api_key``.
        api_key: sent as ``Authorization: Bearer ...``; never part of an error message or a log line.
        timeout: seconds for one request, and the budget for its retries. ``None``: 60 s.
        max_concurrency: how many requests may be in flight at once (the connection pool's size, too): the sync
            calls' bound, and each event loop's (async connections belong to one loop, so an app that runs several
            loops has this many per loop).
        max_retries: how many times a 429 or 503 answer is retried (exponential backoff with jitter).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        max_concurrency: int = 16,
        max_retries: int = 3,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.strip():
            raise GuardConfigurationError(f"base_url must be a URL like 'http://host:8000/v1', got {base_url!r}")
        url = httpx.URL(base_url.strip().rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise GuardConfigurationError(
                f"base_url must be an http(s) URL like 'http://host:8000/v1', got {base_url!r}"
            )
        if url.userinfo:
            raise GuardConfigurationError("base_url must not carry credentials; pass api_key=... instead")
        if not url.path.endswith("/v1"):
            raise GuardConfigurationError(
                f"base_url must be the OpenAI-style base URL ending in '/v1' (e.g. 'http://host:8000/v1'), "
                f"got {str(url)!r}"
            )
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise GuardConfigurationError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise GuardConfigurationError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise GuardConfigurationError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.base_url = str(url)
        self.timeout = float(timeout) if timeout is not None else 60.0
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._secret = api_key or None
        self._limits = httpx.Limits(
            max_connections=max_concurrency, max_keepalive_connections=max_concurrency, keepalive_expiry=KEEPALIVE_S
        )
        self._post_headers = [(b"Content-Type", b"application/json")]
        self._post_headers += [(b"Authorization", f"Bearer {api_key}".encode())] if api_key else []
        self._urls: dict[str, httpx.URL] = {}
        self._closed = False
        self._connect()
        call_in_child(self, "_connect")  # a forked worker sharing the parent's sockets would get its answers

    def _connect(self) -> None:
        """Fresh connections, threads and locks (in a forked child too: the parent's are left to the parent, as
        closing them here would end its requests)."""
        # GETs (``/models``: probes and the served context, a few per guard) share one pooled client.
        self._client = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=self.timeout, limits=self._limits
        )
        # POSTs take a slot: a one-connection transport of their own (see the module docstring).
        self._slots: queue.LifoQueue[httpx.HTTPTransport] = queue.LifoQueue()
        self._slots_made = 0
        self._slots_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.max_concurrency, thread_name_prefix="guard-http"
        )
        # Async slots belong to one event loop; tests and apps may run several.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncSlots] = weakref.WeakKeyDictionary()
        self._async_lock = threading.Lock()

    def __repr__(self) -> str:  # no headers: the key stays out of reprs and logs
        return f"EndpointClient({self.base_url!r}, max_concurrency={self.max_concurrency})"

    # A copy or a pickle is a new client of the same endpoint with its own connections and threads. The API key
    # travels with it: a pickle of a client with a key is a secret.
    def __getstate__(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "api_key": self._secret,
            "timeout": self.timeout,
            "max_concurrency": self.max_concurrency,
            "max_retries": self.max_retries,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.pop("base_url"), **state)  # type: ignore[misc]

    # -- one request --------------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return self.base_url + path

    def _retrying(self, budget: float) -> dict[str, Any]:
        return {
            # stop_before_delay: no retry is started that the budget could not wait for
            "stop": tenacity.stop_after_attempt(self.max_retries + 1) | tenacity.stop_before_delay(budget),
            "wait": _wait,  # stop_before_delay: a Retry-After beyond the budget is not waited for
            "retry": tenacity.retry_if_exception(_retryable),
            "reraise": True,
        }

    def _redact(self, text: str) -> str:
        """A server may echo what it was sent; the key never reaches an error message."""
        return text.replace(self._secret, "***") if self._secret else text

    def _answer(self, response: httpx.Response, path: str) -> dict[str, Any]:
        url = self._url(path)
        if response.status_code >= 400:
            detail = response.text.strip()
            try:
                body = response.json()
                err = body.get("error", body) if isinstance(body, dict) else body
                detail = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            except ValueError:
                pass
            raise GuardServerError(
                self._redact(f"{url} answered HTTP {response.status_code}: {detail[:300]}"),
                url=url,
                status=response.status_code,
                retry_after=retry_after(response) if response.status_code in RETRY_STATUSES else None,
            )
        try:
            data = response.json()
        except ValueError:
            raise GuardServerError(
                self._redact(
                    f"{url} answered HTTP {response.status_code} with a body that is not JSON: {response.text[:200]!r}"
                ),
                url=url,
                status=response.status_code,
            ) from None
        if not isinstance(data, dict):
            raise GuardServerError(
                self._redact(f"{url} answered with JSON that is not an object: {str(data)[:200]}"), url=url
            )
        return data

    def _transport_error(self, exc: httpx.HTTPError, path: str, timeout: float) -> GuardServerError:
        url = self._url(path)
        if isinstance(exc, httpx.TimeoutException):
            return GuardServerError(f"{url} did not answer within {timeout:g} s (timeout)", url=url, unreachable=True)
        message = self._redact(f"cannot reach {url}: {type(exc).__name__}: {exc}")
        return GuardServerError(message, url=url, unreachable=True)

    def _send(
        self, method: str, path: str, body: dict[str, Any] | None, timeout: float | None = None
    ) -> dict[str, Any]:
        """One request (``timeout``: for it and its retries; default the client's). A connection that failed is
        not kept: the next request opens a new one, so a server that comes back is used at once."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout  # for the request, its answer's body and its retries together
        for attempt in tenacity.Retrying(**self._retrying(timeout)):
            with attempt:
                try:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise httpx.PoolTimeout("no time left")
                    if method == "POST":
                        response = self._post(path, body, left, deadline)
                    else:
                        with self._client.stream(method, path, json=body, timeout=left) as streamed:
                            response = _read_within(streamed, deadline, streamed.request)
                except httpx.HTTPError as exc:
                    raise self._transport_error(exc, path, timeout) from None
                return self._answer(response, path)
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> httpx.Request:
        """The request to send on a slot: ``body`` as JSON (none for a GET), ``timeout`` for each of its phases."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._url(path))
        timeouts = {"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}}
        if body is None:
            return httpx.Request(method, url, headers=self._headers, extensions=timeouts)
        content = json.dumps(body).encode()
        return httpx.Request(method, url, headers=self._post_headers, content=content, extensions=timeouts)

    def _post(self, path: str, body: dict[str, Any] | None, timeout: float, deadline: float) -> httpx.Response:
        """POST ``body`` as JSON on a slot of its own; the answer is read whole (by ``deadline``) before the slot
        is handed back."""
        request = self._request("POST", path, body, timeout)
        transport = self._take_slot(timeout)
        try:
            raise_if_abandoned()  # its caller stopped waiting while it waited for a connection: never sent
            streamed = transport.handle_request(request)
            try:
                response = _read_within(streamed, deadline, request)
            finally:
                streamed.close()
        finally:
            self._give_slot(transport)
        return response

    def _new_transport(self) -> httpx.HTTPTransport:
        return httpx.HTTPTransport(limits=_ONE_CONNECTION)

    def _take_slot(self, timeout: float) -> httpx.HTTPTransport:
        """A free slot (the one used last: its connection is the likeliest to be open), a new one while fewer than
        ``max_concurrency`` exist, or the first one handed back within ``timeout`` s. A request still waiting when
        the client is closed fails at once (:class:`GuardClosedError`): no slot will come back."""
        try:
            return self._open_slot(self._slots.get_nowait())
        except queue.Empty:
            pass
        with self._slots_lock:
            if self._slots_made < self.max_concurrency:
                self._slots_made += 1
                return self._open_slot(self._new_transport())
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self._open_slot(None)
            try:
                return self._open_slot(self._slots.get(timeout=min(left, CLOSED_POLL_S)))
            except queue.Empty:
                continue
        raise httpx.PoolTimeout(f"all {self.max_concurrency} connections stayed busy")

    def _open_slot(self, transport: httpx.HTTPTransport | None) -> httpx.HTTPTransport:
        """``transport``, or :class:`GuardClosedError` (the transport closed) if the client was closed."""
        if self._closed:
            if transport is not None:
                transport.close()
            raise GuardClosedError("this guard was closed while a check was running")
        return transport  # type: ignore[return-value]

    def _give_slot(self, transport: httpx.HTTPTransport) -> None:
        if self._closed:
            transport.close()
        else:
            self._slots.put(transport)

    async def _asend(
        self, method: str, path: str, body: dict[str, Any] | None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Async :meth:`_send`, on a slot of this event loop. Cancelling the awaiting task cancels the request:
        its slot is closed (connection and all) and a new one takes its place."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout  # for the request, its answer's body and its retries together
        slots = self._async_slots()
        async for attempt in tenacity.AsyncRetrying(**self._retrying(timeout)):
            with attempt:
                left = deadline - time.monotonic()
                request = self._request(method, path, body, max(left, 0.001))
                try:
                    async with asyncio.timeout(max(left, 0)):  # a slot that times out here is discarded
                        async with slots.slot() as transport:
                            response = await transport.handle_async_request(request)
                            try:
                                await response.aread()
                            finally:
                                await response.aclose()
                except TimeoutError:
                    raise self._transport_error(httpx.ReadTimeout("deadline"), path, timeout) from None
                except httpx.HTTPError as exc:
                    raise self._transport_error(exc, path, timeout) from None
                return self._answer(response, path)
        raise AssertionError("unreachable")  # pragma: no cover

    def _async_slots(self) -> _AsyncSlots:
        loop = asyncio.get_running_loop()
        with self._async_lock:
            # A loop's slots reference the loop (their semaphore and connections), so the weak keys alone never
            # let go of them: drop those of loops that are closed (asyncio.run() per call), sockets and all.
            for closed in [other for other in self._async if other.is_closed()]:
                del self._async[closed]
            slots = self._async.get(loop)
            if slots is None:
                slots = self._async[loop] = _AsyncSlots(
                    self.max_concurrency, lambda: httpx.AsyncHTTPTransport(limits=_ONE_CONNECTION)
                )
        return slots

    def get(self, path: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._send("GET", path, None, timeout)

    async def aget(self, path: str, *, timeout: float | None = None) -> dict[str, Any]:
        return await self._asend("GET", path, None, timeout)

    # -- many requests, and plans ---------------------------------------------------------------------------
    def post_many(self, requests: Sequence[Request]) -> list[dict[str, Any]]:
        """POST each request, at most ``max_concurrency`` at a time; answers in order (the first error raises)."""
        if len(requests) == 1:
            return [self._send("POST", *requests[0])]
        # each in a copy of the caller's context: a request whose caller stopped waiting is not sent
        futures = [
            self._pool.submit(contextvars.copy_context().run, self._send, "POST", path, body) for path, body in requests
        ]
        return [f.result() for f in futures]

    async def apost_many(self, requests: Sequence[Request]) -> list[dict[str, Any]]:
        """Async :meth:`post_many`; when one request fails or the caller is cancelled, the others are cancelled
        too (no request outlives the check that sent it)."""
        if len(requests) == 1:
            return [await self._asend("POST", *requests[0])]
        tasks = [asyncio.ensure_future(self._asend("POST", path, body)) for path, body in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    def run(self, plan: Plan) -> Any:
        """Drive a plan with threads: send each yielded list of requests, feed back the answers."""
        try:
            requests = next(plan)
            while True:
                requests = plan.send(self.post_many(requests))
        except StopIteration as done:
            return done.value

    async def arun(self, plan: Plan) -> Any:
        """Drive a plan on the running event loop (no threads)."""
        try:
            requests = next(plan)
            while True:
                requests = plan.send(await self.apost_many(requests))
        except StopIteration as done:
            return done.value

    def close(self) -> None:
        """Close the connections: the sync client and slots, its threads, and the async client of the running
        event loop (those of other loops are dropped; :meth:`aclose` closes them on their own loop)."""
        self._closed = True
        self._client.close()
        while True:
            try:
                self._slots.get_nowait().close()
            except queue.Empty:
                break
        self._pool.shutdown(wait=False)
        with self._async_lock:
            every = list(self._async.items())
            self._async.clear()
        for loop, slots in every:
            slots.closed = True  # a request that gets a slot from now on fails (GuardClosedError), none is kept
            if loop.is_closed():
                continue
            if loop.is_running():  # another thread's loop: its free connections are closed on it
                loop.call_soon_threadsafe(lambda s=slots: s.close_soon())
            else:
                loop.run_until_complete(slots.aclose())

    async def aclose(self) -> None:
        """:meth:`close` from a coroutine: every async connection of this event loop is closed on it."""
        loop = asyncio.get_running_loop()
        with self._async_lock:
            mine = self._async.pop(loop, None)
        if mine is not None:
            await mine.aclose()
        self.close()


def _read_within(response: httpx.Response, deadline: float, request: httpx.Request) -> httpx.Response:
    """``response`` with its body read whole, or :class:`httpx.ReadTimeout` once ``deadline`` passes: httpx's
    read timeout bounds each read, so a server that trickles its answer would otherwise never time out."""
    chunks = []
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the answer did not arrive whole within the timeout")
    dropped = ("content-encoding", "content-length")  # the body is decoded, and its length is what was read
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in dropped]
    return httpx.Response(response.status_code, headers=headers, content=b"".join(chunks), request=request)


CLOSED_POLL_S = 0.05
"""How often a request waiting for a busy slot looks whether the client was closed meanwhile."""

_ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEPALIVE_S)
"""A slot's transport: one connection, closed after :data:`KEEPALIVE_S` idle seconds."""


class _AsyncSlots:
    """The async slots of one event loop: at most ``size`` one-connection transports, each used by one request at
    a time (the one used last first: its connection is the likeliest to be open). A transport whose request was
    cancelled or failed is closed and never used again; a new one takes its place."""

    def __init__(self, size: int, make: Callable[[], httpx.AsyncHTTPTransport]) -> None:
        self._free: list[httpx.AsyncHTTPTransport] = []
        self._semaphore = asyncio.Semaphore(size)
        self._make = make
        self._closing: set[asyncio.Future[None]] = set()
        self.closed = False

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[httpx.AsyncHTTPTransport]:
        async with self._semaphore:
            if self.closed:  # the client was closed while this request waited
                raise GuardClosedError("this guard was closed while a check was running")
            transport = self._free.pop() if self._free else self._make()
            try:
                yield transport
            except BaseException:
                self._discard(transport)
                raise
            if self.closed:
                self._discard(transport)
            else:
                self._free.append(transport)

    def _discard(self, transport: httpx.AsyncHTTPTransport) -> None:
        """Close ``transport`` in a task of its own (the caller may be being cancelled)."""
        closing = asyncio.ensure_future(transport.aclose())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def close_soon(self) -> None:
        """Close the free connections in tasks of this loop (called on it)."""
        self.closed = True
        while self._free:
            self._discard(self._free.pop())

    async def aclose(self) -> None:
        self.close_soon()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class ServedModel:
    """One model of an endpoint as ``/v1/models`` lists it: whether it is served, and its ``max_model_len``.

    Nothing is asked when it is made. :meth:`entry` asks on first use and keeps the answer (one request, however
    many threads ask at once); a failure is not kept, so the next use asks again. :meth:`ready` and
    :meth:`aready` are start-up probes: they poll until the model is served or ``timeout`` runs out.

    Example:
        >>> served = ServedModel(EndpointClient("http://127.0.0.1:8000/v1"), "llama-guard")  # doctest: +SKIP
        >>> served.ready(timeout=60), served.max_model_len()                                # doctest: +SKIP
        (True, 4096)
    """

    POLL_S = 0.1
    """Seconds between two probes while the server does not answer."""

    def __init__(self, client: EndpointClient, model: str) -> None:
        self.client = client
        self.model = model
        self._entry: dict[str, Any] | None = None
        self._forget_pending()
        call_in_child(self, "_forget_pending")  # a request the parent was asking at the fork never answers here

    def _forget_pending(self) -> None:
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[dict[str, Any]] | None = None  # the request being asked

    def __getstate__(self) -> dict[str, Any]:  # a copy asks the server again
        return {"client": self.client, "model": self.model}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["client"], state["model"])  # type: ignore[misc]

    def _find(self, answer: dict[str, Any]) -> dict[str, Any] | None:
        listed = answer.get("data")
        for m in listed if isinstance(listed, list) else []:
            if isinstance(m, dict) and m.get("id") == self.model:
                return m
        return None

    def _not_served(self, answer: dict[str, Any]) -> GuardServerError:
        listed = answer.get("data")
        names = [str(m.get("id")) for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
        url = self.client.base_url + "/models"
        return GuardServerError(
            f"{self.client.base_url} does not serve {self.model!r}; it serves: {', '.join(names) or 'nothing'} "
            "(pass model= one of those names)",
            url=url,
        )

    def entry(self) -> dict[str, Any]:
        """The model's ``/v1/models`` entry, asked once; raises :class:`GuardServerError` if the server cannot be
        reached or does not serve the model (asked again on the next call). Callers that arrive while it is being
        asked share that one request and its outcome, so none waits longer than one ``timeout``."""
        if self._entry is not None:
            return self._entry
        with self._lock:
            if self._entry is not None:
                return self._entry
            pending, asking = self._pending, self._pending is None
            if asking:
                pending = self._pending = concurrent.futures.Future()
        assert pending is not None
        if not asking:
            return pending.result()
        try:
            answer = self.client.get("/models")
            found = self._find(answer)
            if found is None:
                raise self._not_served(answer)
            self._entry = found
            pending.set_result(found)
            return found
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._pending = None

    async def aentry(self) -> dict[str, Any]:
        """Async :meth:`entry`: the event loop's own request (no thread waits on the server), kept for both."""
        if self._entry is not None:
            return self._entry
        answer = await self.client.aget("/models")
        found = self._find(answer)
        if found is None:
            raise self._not_served(answer)
        self._entry = found
        return found

    def forget(self) -> None:
        """Drop the kept entry: the next use asks ``/v1/models`` again (after the server refused a request as too
        long, it may have been restarted with another ``--max-model-len``)."""
        with self._lock:
            self._entry = None

    def max_model_len(self) -> int | None:
        """The context the server gives the model (``None`` where it does not say)."""
        got = self.entry().get("max_model_len")
        return got if isinstance(got, int) and not isinstance(got, bool) else None

    @staticmethod
    def _deadline(timeout: float) -> float:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise GuardConfigurationError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        return time.monotonic() + timeout

    def ready(self, timeout: float = 10.0) -> bool:
        """Poll ``/v1/models`` until it lists the model (``True``), or ``False`` after ``timeout`` seconds."""
        deadline = self._deadline(timeout)
        while True:
            left = deadline - time.monotonic()
            try:
                found = self._find(self.client.get("/models", timeout=max(left, 0.05)))
            except GuardServerError:
                found = None
            if found is not None:
                self._entry = found
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.POLL_S, left))

    async def aready(self, timeout: float = 10.0) -> bool:
        """Async :meth:`ready` (the event loop stays free while it waits)."""
        deadline = self._deadline(timeout)
        while True:
            left = deadline - time.monotonic()
            try:
                found = self._find(await self.client.aget("/models", timeout=max(left, 0.05)))
            except GuardServerError:
                found = None
            if found is not None:
                self._entry = found
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(self.POLL_S, left))
