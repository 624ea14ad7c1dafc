"""The reference RAG application on top of the encoder core.

Documents (:mod:`~conan_rag.rag.documents`) are cut into chunks (:mod:`~conan_rag.rag.chunking`),
stored in Chroma (:mod:`~conan_rag.rag.store`) by the ingest (:mod:`~conan_rag.rag.ingest`),
retrieved by exact cosine (:mod:`~conan_rag.rag.retrieval`) and answered with citations
(:mod:`~conan_rag.rag.answer`); :class:`~conan_rag.rag.pipeline.Pipeline` is the facade.
Needs the ``rag`` extra: ``pip install 'conan-rag[rag]'``.
"""
