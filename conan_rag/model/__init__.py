"""Model folders: resolving ids, reading specs, the stages after the transformer, fingerprints.

Everything here reads files; nothing runs code found in a model folder.
"""

__all__: list[str] = []
