"""langchain-tests standard unit suite for ConanEmbeddings (no network: models load offline)."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import EmbeddingsUnitTests

from langchain_conan import ConanEmbeddings


class TestConanEmbeddingsStandard(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[ConanEmbeddings]:
        return ConanEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "sentence-transformers/all-MiniLM-L6-v2", "device": "cpu"}
