"""Agent middleware for ``langchain.agents.create_agent`` (needs the ``agents`` extra)."""

from langchain_llamaguard.middleware.llama_guard import LlamaGuardMiddleware
from langchain_llamaguard.middleware.prompt_guard import PromptGuardMiddleware

__all__ = ["LlamaGuardMiddleware", "PromptGuardMiddleware"]
