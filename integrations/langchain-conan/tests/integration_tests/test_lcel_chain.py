"""A real LCEL chain: InMemoryVectorStore retriever | prompt | extractive step."""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_conan import ConanEmbeddings

DOCS = [
    "The Eiffel Tower is in Paris and was completed in 1889.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The Great Wall of China is thousands of kilometres long.",
    "Mitochondria are the powerhouse of the cell.",
    "Python was created by Guido van Rossum.",
]

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer from the context only.\nContext:\n{context}\nEnd of context."),
        ("human", "{question}"),
    ]
)


def format_docs(docs: list[Document]) -> str:
    return "\n".join(d.page_content for d in docs)


def extract_context(prompt: PromptValue) -> str:
    """Deterministic extractive step (not an LLM): return the context the prompt carries."""
    system = prompt.to_messages()[0].content
    assert isinstance(system, str)
    return system.split("Context:\n", 1)[1].split("\nEnd of context.", 1)[0]


def test_retriever_prompt_model_chain_returns_the_relevant_document() -> None:
    emb = ConanEmbeddings(model="sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    store = InMemoryVectorStore.from_texts(DOCS, embedding=emb)
    retriever = store.as_retriever(search_kwargs={"k": 1})
    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | PROMPT
        | RunnableLambda(extract_context)
    )
    assert chain.invoke("Who created the Python programming language?") == DOCS[4]
    assert chain.invoke("What produces energy inside cells?") == DOCS[3]
    answers = chain.batch(["When was the Eiffel Tower finished?", "How do plants use light?"])
    assert answers == [DOCS[0], DOCS[1]]


async def test_chain_runs_async_through_aembed_query() -> None:
    emb = ConanEmbeddings(model="sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    store = await InMemoryVectorStore.afrom_texts(DOCS, embedding=emb)
    chain = (
        {
            "context": store.as_retriever(search_kwargs={"k": 1}) | format_docs,
            "question": RunnablePassthrough(),
        }
        | PROMPT
        | RunnableLambda(extract_context)
    )
    assert await chain.ainvoke("How long is the wall in China?") == DOCS[2]
