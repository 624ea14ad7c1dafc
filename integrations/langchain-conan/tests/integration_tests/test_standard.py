"""langchain-tests standard integration suite for ConanEmbeddings, on the real bundled MiniLM."""

from __future__ import annotations

from typing import Any

from langchain_tests.integration_tests import EmbeddingsIntegrationTests

from langchain_conan import ConanEmbeddings


class TestConanEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[ConanEmbeddings]:
        return ConanEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "sentence-transformers/all-MiniLM-L6-v2", "device": "cpu"}
