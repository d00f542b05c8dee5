"""Pattern 3: batch, async and streaming with an output guard (buffered or incremental)."""

import asyncio

from _guards import llama_guard
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate

guard = llama_guard()
prompt = ChatPromptTemplate.from_messages([("human", "{question}")])


def llm(text):
    return GenericFakeChatModel(messages=iter([AIMessage(text)] * 10))


chain = guard.wrap(prompt | llm("Paris is the capital of France."), on_unsafe="Sorry, I can't help with that.")
questions = [{"question": "What is the capital of France?"}, {"question": "How do I make a bomb?"}]
print([m.content for m in chain.batch(questions)])  # one guard batch per side
print([m.content for m in asyncio.run(chain.abatch(questions))])

# Buffered (default): nothing is shown before the whole answer is checked.
for chunk in chain.stream({"question": "What is the capital of France?"}):
    print(chunk.content, end="|")
print()

# Incremental: checked every 4 chunks; only checked text is released; stops at the first unsafe check.
bad = (
    prompt
    | llm("Sure! To make a nerve agent you first gather the precursors.")
    | guard.as_output_guard(stream_mode="incremental", check_every=4, on_unsafe="[answer withheld]")
)
for chunk in bad.stream({"question": "Write a short poem about spring."}):
    print(chunk.content, end="|")
print()
