"""langchain-llamaguard: Meta's Llama Guard 4 / 3 and Llama Prompt Guard 2 as LangChain guard steps.

Example:
    >>> from langchain_llamaguard import LlamaGuard, format_prompt
    >>> "S14: Code Interpreter Abuse." in format_prompt("hello")
    True
"""

from langchain_llamaguard.documents import DocumentFilter, GuardedRetriever, guard_retriever
from langchain_llamaguard.errors import (
    GuardBatchError,
    GuardClosedError,
    GuardConfigurationError,
    GuardContextOverflowError,
    GuardInputError,
    GuardKeyError,
    GuardLoadError,
    GuardOutputError,
    GuardServerError,
    GuardTimeoutError,
    GuardTypeError,
    ImageLoadError,
    LlamaGuardError,
    UnsafeContentError,
    UnsafeDocumentError,
)
from langchain_llamaguard.graph import GuardNode
from langchain_llamaguard.guards import LlamaGuard, PromptGuard
from langchain_llamaguard.prompt_format import format_prompt
from langchain_llamaguard.prompt_guard import PromptGuardVerdict
from langchain_llamaguard.runnables import GuardedRunnable, GuardStep
from langchain_llamaguard.taxonomy import CATEGORIES, Category, default_categories
from langchain_llamaguard.verdict import Verdict

__all__ = [
    "CATEGORIES",
    "Category",
    "DocumentFilter",
    "GuardBatchError",
    "GuardClosedError",
    "GuardConfigurationError",
    "GuardContextOverflowError",
    "GuardInputError",
    "GuardKeyError",
    "GuardLoadError",
    "GuardNode",
    "GuardOutputError",
    "GuardServerError",
    "GuardTimeoutError",
    "GuardTypeError",
    "GuardStep",
    "GuardedRetriever",
    "GuardedRunnable",
    "ImageLoadError",
    "LlamaGuard",
    "LlamaGuardError",
    "PromptGuard",
    "PromptGuardVerdict",
    "UnsafeContentError",
    "UnsafeDocumentError",
    "Verdict",
    "default_categories",
    "format_prompt",
    "guard_retriever",
]

try:  # decision models need langchain-core >= 1.8 (langchain_core.decisions); everything else works without
    from langchain_llamaguard.decisions import LlamaGuardDecisionModel, PromptGuardDecisionModel

    __all__ += ["LlamaGuardDecisionModel", "PromptGuardDecisionModel"]
except ImportError:  # pragma: no cover - older langchain-core
    pass
