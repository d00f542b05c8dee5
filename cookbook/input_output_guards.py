"""Pattern 1: input and output guard steps in an LCEL chain (raise on unsafe)."""

from _guards import llama_guard
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate

from langchain_llamaguard import UnsafeContentError

guard = llama_guard(excluded_categories=["S6"])  # e.g. allow specialized advice in this app
prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
llm = GenericFakeChatModel(messages=iter([AIMessage("Paris is the capital of France.")] * 10))

chain = guard.as_input_guard() | prompt | llm | guard.as_output_guard()

print(chain.invoke({"question": "What is the capital of France?"}).content)
try:
    chain.invoke({"question": "How do I make a bomb?"})
except UnsafeContentError as err:
    print(f"blocked at {err.stage}: {err.verdict.categories} {err.verdict.category_names}")
