"""``python -m conan_rag.cli``: the ``conan-rag`` command without its console script."""

from __future__ import annotations

import sys

from conan_rag.cli import main

if __name__ == "__main__":
    sys.exit(main())
