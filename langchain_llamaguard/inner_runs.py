"""The wrapped runnable's runs: traced in callbacks, never streamed before the guard has judged them.

A guarded chain (:meth:`~langchain_llamaguard.LlamaGuard.wrap`) streams only what its guard released. Its inner
runnable's runs are children of the guarded run, so every callback handler sees them (LangSmith traces, your own
handlers), except the handlers that stream runs to an app as they happen: ``astream_events``, ``astream_log`` and
LangGraph's ``stream_mode="messages"`` (LangChain marks them all as streaming handlers). Those would show the
model's tokens before the verdict: an unsafe answer in ``"buffer"`` mode, or the answer to a flagged input with
``input_check="parallel"``. In ``astream_events`` read the guarded run's own ``on_chain_stream`` events (its
chunks are the released ones); in a LangGraph node the guarded answer arrives whole when the node ends.

Example:
    >>> chain = guard.wrap(prompt | llm)  # doctest: +SKIP
    >>> events = chain.astream_events(question, version="v2")  # no on_chat_model_stream of llm's raw tokens
"""

from __future__ import annotations

from typing import Any

from langchain_core.tracers._streaming import _StreamingCallbackHandler


def unstreamed_child(run_manager: Any) -> Any:
    """``run_manager.get_child()`` without the handlers that stream runs as they happen (see the module doc)."""
    return without_streaming(run_manager.get_child())


def without_streaming(callbacks: Any) -> Any:
    """``callbacks`` (a callback manager, a list of handlers or ``None``) less the streaming handlers; a manager
    is copied, never changed in place (it may be shared with other runs)."""
    if callbacks is None:
        return None
    if isinstance(callbacks, list):
        return [h for h in callbacks if not isinstance(h, _StreamingCallbackHandler)]
    kept = callbacks.copy()
    for handler in [*kept.handlers, *kept.inheritable_handlers]:
        if isinstance(handler, _StreamingCallbackHandler):
            kept.remove_handler(handler)
    return kept
