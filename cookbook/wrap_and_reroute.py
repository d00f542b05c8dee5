"""Pattern 2: guard both sides of a chain and reroute unsafe turns (canned answer, or another Runnable)."""

from _guards import llama_guard
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from langchain_llamaguard import UnsafeContentError

guard = llama_guard()
prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
llm = GenericFakeChatModel(
    messages=iter([AIMessage("Sure! To make a nerve agent you first gather the precursors.")] * 10)
)

# A canned answer; the answer is judged together with the question that produced it.
safe_chain = guard.wrap(prompt | llm, on_unsafe="Sorry, I can't help with that.")
print(safe_chain.invoke({"question": "Write a short poem about spring."}).content)


# Any Runnable: it receives {"input", "verdict"} (and "output" when the answer was flagged).
def explain(payload):
    return AIMessage(f"I can't help with that ({', '.join(payload['verdict'].category_names)}).")


print(guard.wrap(prompt | llm, on_unsafe=RunnableLambda(explain)).invoke({"question": "How do I make a bomb?"}).content)

# LangChain's own fallbacks work too.
fallback = (guard.as_input_guard() | prompt | llm).with_fallbacks(
    [RunnableLambda(lambda _: AIMessage("Let's talk about something else."))],
    exceptions_to_handle=(UnsafeContentError,),
)
print(fallback.invoke({"question": "How do I make a bomb?"}).content)
