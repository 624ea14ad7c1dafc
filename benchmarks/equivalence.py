"""Print the minimum cosine between conan_rag's and sentence-transformers' vectors.

Runs on the real bundled all-MiniLM-L6-v2 (fp32 and bf16) and on random-weight models with
Conan-embedding-v1's layout (cls and mean pooling), over the same 500+ varied texts the tests use
(English and Chinese STS sentences, mixed, empty, longer than the limit).

    python benchmarks/equivalence.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conan_rag import load_encoder
from conan_rag.model.files import BUNDLED_MINILM, resolve_model
from conan_rag.testing import build_conan_layout_model
from tests.texts import varied_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-bf16", action="store_true", help="bf16 is slow without native bf16")
    args = parser.parse_args()
    texts = varied_texts()
    tmp = Path(tempfile.mkdtemp())
    cases = [("all-MiniLM-L6-v2", resolve_model(BUNDLED_MINILM), "float32")]
    if not args.skip_bf16:
        cases.append(("all-MiniLM-L6-v2", resolve_model(BUNDLED_MINILM), "bfloat16"))
    for pooling in ("cls", "mean"):
        folder = build_conan_layout_model(tmp / pooling, pooling=pooling, hidden_size=128)
        cases.append((f"Conan layout ({pooling}, random)", folder, "float32"))
    print(f"{len(texts)} texts; reference: sentence-transformers fp32, normalize_embeddings=True")
    print(f"{'model':32} {'dtype':9} {'dim':>5} {'min cos':>9} {'mean cos':>9}")
    for name, folder, dtype in cases:
        ref = SentenceTransformer(str(folder), device="cpu").encode(
            texts, normalize_embeddings=True, batch_size=64
        )
        ours = load_encoder(str(folder), device="cpu", dtype=dtype).encode(texts)
        cos = (np.asarray(ref) * ours).sum(axis=1)
        print(f"{name:32} {dtype:9} {ours.shape[1]:5d} {cos.min():9.6f} {cos.mean():9.6f}")


if __name__ == "__main__":
    main()
