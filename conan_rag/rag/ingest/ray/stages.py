"""The Ray actors of the ingest: an encoder per actor, and store writers for a Chroma server.

Cutting runs as plain Ray tasks over :func:`~conan_rag.rag.ingest.rows.cut_units`; the classes
here are what needs state per worker. Both are plain classes over column batches, testable
without Ray.

Example (on Ray, ``ds.map_batches(EmbedChunks, fn_constructor_kwargs=...)``)::

    embed = EmbedChunks(encoder.config.to_dict(), encoder.fingerprint, threads=None)
    batch = embed(batch)  # adds the ``vector`` column
"""

from __future__ import annotations

from typing import Any

from conan_rag.rag.ingest.rows import Batch, embed_rows
from conan_rag.rag.ingest.sink import StoreSink

__all__ = ["EmbedChunks", "WriteStore"]


class EmbedChunks:
    """Embeds the ``chunk`` and ``first`` rows of a batch with the shared encoder of its process.

    Args:
        config: the encoder's config (:meth:`EncoderConfig.to_dict`).
        fingerprint: the driver's model fingerprint; a worker whose model files differ refuses.
        threads: torch threads for this actor (``None``: what Ray set, one per CPU it reserved).
    """

    def __init__(self, config: dict[str, Any], fingerprint: str, threads: int | None) -> None:
        import torch

        from conan_rag.config import EncoderConfig
        from conan_rag.errors import CollectionMismatchError
        from conan_rag.registry import load_encoder

        if threads:
            torch.set_num_threads(threads)
        self.encoder = load_encoder(config=EncoderConfig.from_dict(config))
        if self.encoder.fingerprint != fingerprint:
            raise CollectionMismatchError(
                f"The model files on this Ray worker (fingerprint {self.encoder.fingerprint[:12]}"
                f") differ from the driver's ({fingerprint[:12]}); install the same model "
                "revision on every node.",
                collection=None,
                recorded_model=config.get("model"),
                offered_model=self.encoder.model_id,
            )

    def __call__(self, batch: Batch) -> Batch:
        """The batch with a ``vector`` column."""
        return embed_rows(self.encoder, batch)


class WriteStore:
    """Writes batches through a :class:`~conan_rag.rag.ingest.sink.StoreSink` of its own.

    Args:
        spec: the store, as :meth:`~conan_rag.rag.store.VectorStore.spec` describes it (a
            Chroma server: the token comes from the environment).
        limit: most records per write.
    """

    def __init__(self, spec: dict[str, Any], limit: int) -> None:
        from conan_rag.rag.store import ChromaStore

        self.sink = StoreSink(ChromaStore.from_spec(spec), limit, mark=False)

    def __call__(self, batch: Batch) -> Batch:
        """Write the batch; return its summary."""
        return self.sink.write(batch)
