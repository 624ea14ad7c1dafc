"""Model folders: resolving ids, reading specs, the stages after the transformer, fingerprints.

Everything here reads files; nothing runs code found in a model folder.
"""
