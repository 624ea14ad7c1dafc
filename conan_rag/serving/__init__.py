"""Serving many callers from one model: batch planning and the coalescing queue.

This layer knows nothing of the model: the queue runs batches through a small
:class:`~conan_rag.serving.queue.BatchRunner` protocol.
"""
