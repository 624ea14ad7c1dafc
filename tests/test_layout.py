"""The package's layout: two layers, no import cycle (type-only imports included), small modules.

Imports are read from the source with ``ast`` — module level, inside functions and under
``if TYPE_CHECKING:`` alike — so a cycle cannot hide behind a lazy or type-only import.
``python tests/test_layout.py`` prints the facts this test checks.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "conan_rag"
MAX_LINES = 400
# The RAG application and what sits on top of it; everything else is the encoder core.
APP = (
    "conan_rag.rag",
    "conan_rag.cli",
    "conan_rag.chroma",
    "conan_rag.pipeline",
    "conan_rag.demo",
    "conan_rag.server",
)
APP_ONLY_DEPENDENCIES = (
    "chromadb",
    "pypdf",
    "charset_normalizer",
    "fastapi",
    "uvicorn",
    "prometheus_client",
    "starlette",
)


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> Iterator[str]:
    """Every module this file imports, at any depth of the code."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            yield base
            for alias in node.names:  # `from conan_rag.rag import evaluation` imports a module
                if f"{base}.{alias.name}" in modules:
                    yield f"{base}.{alias.name}"


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path, name, modules):
            if imported.split(".")[0] != "conan_rag":
                targets.add(imported)
                continue
            while imported not in modules:  # a name inside a module: the module
                imported = imported.rsplit(".", 1)[0]
            if imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    internal = {n: {t for t in ts if t in graph} for n, ts in graph.items()}
    cycles, state = [], dict.fromkeys(internal, 0)

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(internal[node]):
            if state[target] == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif state[target] == 0:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(internal):
        if state[node] == 0:
            visit(node, [node])
    return cycles


def _is_app(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in APP)


def test_no_import_cycle_type_only_imports_included() -> None:
    graph = _graph()
    assert "conan_rag.serving.queue" in graph and "conan_rag.runtime.backend" in graph
    assert _cycles(graph) == []


def test_core_does_not_import_the_rag_application_or_its_dependencies() -> None:
    for name, targets in _graph().items():
        if _is_app(name):
            continue
        bad = {t for t in targets if _is_app(t) or t.split(".")[0] in APP_ONLY_DEPENDENCIES}
        assert not bad, f"{name} (core) imports {sorted(bad)}"


def test_the_queue_knows_no_model_and_the_runtime_no_queue() -> None:
    graph = _graph()
    for name, targets in graph.items():
        if name.startswith("conan_rag.serving"):
            assert not {t for t in targets if t.startswith("conan_rag.runtime")}, name
        if name.startswith("conan_rag.runtime"):
            assert not {t for t in targets if t.startswith("conan_rag.serving")}, name


def test_no_module_is_over_400_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert max(sizes.values()) <= MAX_LINES, max(sizes.items(), key=lambda kv: kv[1])


def test_core_dependencies_leave_out_the_vector_store() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    assert "chromadb" not in core and "pypdf" not in core
    assert any("chromadb" in d for d in project["optional-dependencies"]["rag"])
    for adapter in ("langchain-conan", "llama-index-embeddings-conan"):
        deps = tomllib.loads((REPO / "integrations" / adapter / "pyproject.toml").read_text())
        assert not [d for d in deps["project"]["dependencies"] if "chromadb" in d or "[rag]" in d]


def test_encoder_and_adapters_work_without_chromadb_or_pypdf() -> None:
    # A fresh interpreter where importing chromadb or pypdf fails, as without the rag extra.
    script = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("chromadb", "pypdf"):
                    raise ImportError(f"{name} is not installed (blocked by the test)")
        sys.meta_path.insert(0, Block())
        import conan_rag
        from langchain_conan import ConanEmbeddings
        from llama_index.embeddings.conan import ConanEmbedding
        model = "sentence-transformers/all-MiniLM-L6-v2"
        print(conan_rag.load_encoder(model, device="cpu").encode(["hi"]).shape)
        print(len(ConanEmbeddings(model=model, device="cpu").embed_query("hi")))
        print(len(ConanEmbedding(model_name=model, device="cpu").get_text_embedding("hi")))
        import tempfile
        from conan_rag.rag.pipeline import Pipeline
        try:
            Pipeline(conan_rag.load_encoder(model, device="cpu"), db=tempfile.mkdtemp())
        except ImportError as exc:
            print("rag needs:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[:3] == ["(1, 384)", "384", "384"]
    assert "rag needs:" in done.stdout and "pip install 'conan-rag[rag]'" in done.stdout


if __name__ == "__main__":
    graph = _graph()
    sizes = sorted(((len(p.read_text().splitlines()), n) for n, p in _modules().items()))
    print(f"modules: {len(graph)}; import cycles (type-only included): {_cycles(graph) or 'none'}")
    print("largest modules: " + ", ".join(f"{n} ({lines})" for lines, n in sizes[-3:]))
    core = sorted({t.split(".")[0] for n, ts in graph.items() if not _is_app(n) for t in ts})
    print("core (non-RAG) modules import: " + ", ".join(core))
