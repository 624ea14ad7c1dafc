"""The package's layout: two layers, no import cycle, short functions, a declared public surface.

Imports are read from the source with ``ast`` — module level, inside functions and under
``if TYPE_CHECKING:`` alike — so a cycle cannot hide behind a lazy or type-only import. The
checks walk the tree, so they hold as modules move: no function over 80 code lines, no
``# fmt: skip``, every package declares ``__all__``, and the code users copy (README, notebooks,
the integrations) imports conan_rag names only through a package's ``__all__``.
``python tests/test_layout.py`` prints the facts these tests check.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import tokenize
from collections.abc import Iterator
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "conan_rag"
MAX_FUNCTION_LINES = 80
# The test-fixture package and the argument parser's builder (one flat list of options).
LENGTH_EXEMPT_MODULES = ("conan_rag/testing.py", "conan_rag/testing/")
LENGTH_EXEMPT_FUNCTIONS = {("conan_rag/cli/parser.py", "build_parser")}
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
FMT_SKIP = re.compile(r"#\s*fmt:\s*skip\b")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _python_files() -> list[Path]:
    """Every .py file git tracks, plus new ones it does not ignore (they are about to be)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO / name for name in sorted(set(listed)) if (REPO / name).is_file()]


def _is_test_code(path: Path) -> bool:
    parts = path.relative_to(REPO).parts
    return "tests" in parts or path.name.startswith("test_") or path.name == "conftest.py"


def _integration_code() -> list[Path]:
    """The integrations' library code: every .py under integrations/*/ that is not a test."""
    return [p for p in sorted((REPO / "integrations").glob("*/**/*.py")) if not _is_test_code(p)]


def _length_checked() -> list[Path]:
    ours = [p for p in PACKAGE.rglob("*.py") if not _rel(p).startswith(LENGTH_EXEMPT_MODULES)]
    return sorted([*ours, *_integration_code(), *(REPO / "benchmarks").glob("*.py")])


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    """Lines of the body that are not blank, not comments and not the docstring."""
    first, docstring = node.body[0], range(0)
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        docstring = range(first.lineno, (first.end_lineno or first.lineno) + 1)
    count = 0
    for number in range(first.lineno, (node.end_lineno or node.lineno) + 1):
        text = lines[number - 1].strip()
        if text and not text.startswith("#") and number not in docstring:
            count += 1
    return count


def _function_lengths(path: Path) -> Iterator[tuple[str, int, int]]:
    """``(qualified name, first line, code lines)`` of every function and method in a file."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                yield name, child.lineno, _code_lines(child, lines)
                yield from visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(ast.parse(source), "")


def _long_functions() -> list[tuple[int, str]]:
    """``(code lines, "file:line name")`` of every checked function, longest first."""
    found = []
    for path in _length_checked():
        for name, line, length in _function_lengths(path):
            if (_rel(path), name) not in LENGTH_EXEMPT_FUNCTIONS:
                found.append((length, f"{_rel(path)}:{line} {name}"))
    return sorted(found, reverse=True)


def _fmt_skips(path: Path) -> Iterator[int]:
    """Lines of a file with a ``# fmt: skip`` comment (comments only, not strings)."""
    readline = io.StringIO(path.read_text(encoding="utf-8")).readline
    for token in tokenize.generate_tokens(readline):
        if token.type == tokenize.COMMENT and FMT_SKIP.search(token.string):
            yield token.start[0]


def _declared_all(init: Path) -> list[str] | None:
    """The names a package's ``__init__.py`` puts in ``__all__``; ``None`` if it declares none."""
    names: list[str] | None = None
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        if not any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            continue
        value = node.value
        try:
            listed = [str(n) for n in ast.literal_eval(value)] if value is not None else []
        except ValueError:  # built from expressions: declared, contents unknown here
            listed = []
        names = [*(names or []), *listed] if isinstance(node, ast.AugAssign) else listed
    return names


def _packages() -> dict[str, list[str] | None]:
    """Every package under conan_rag/ (a folder with ``__init__.py``) and its ``__all__``."""
    found = {}
    for init in sorted(PACKAGE.rglob("__init__.py")):
        name = ".".join(init.parent.relative_to(REPO).parts)
        found[name] = _declared_all(init)
    return found


def _user_code() -> Iterator[tuple[str, int, str]]:
    """The code users copy (README blocks, notebook cells, integrations).

    Yields:
        ``(where, offset, source)``: ``where`` formats a line of ``source`` (``{line}``) as a
        place in the repository once ``offset`` is added to it.
    """
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for match in re.finditer(r"^```python\n(.*?)^```", readme, flags=re.S | re.M):
        yield "README.md:{line}", readme.count("\n", 0, match.start(1)), match.group(1)
    for notebook in sorted((REPO / "examples").glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        for number, cell in enumerate(cells, 1):
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                source = re.sub(r"^\s*[!%].*$", "", source, flags=re.M)  # shell and magics
                yield f"{_rel(notebook)} cell {number} line {{line}}", 0, source
    for path in _integration_code():
        yield f"{_rel(path)}:{{line}}", 0, path.read_text(encoding="utf-8")


def _private_imports() -> Iterator[str]:
    """Each conan_rag import in user code that bypasses a package's ``__all__``."""
    packages = _packages()
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    for where, offset, source in _user_code():
        tree = compile(source, where.format(line=offset), "exec", flags=flags, dont_inherit=True)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            at = where.format(line=offset + node.lineno)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "conan_rag" and alias.name not in packages:
                        yield f"{at}: `import {alias.name}` (not a package)"
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                if node.module.split(".")[0] != "conan_rag":
                    continue
                public = packages.get(node.module)
                if node.module not in packages or public is None:
                    what = "not a package" if node.module not in packages else "no __all__"
                    yield f"{at}: from {node.module} ({what})"
                    continue
                hidden = [a.name for a in node.names if a.name not in public]
                if hidden:
                    yield f"{at}: {hidden} not in {node.module}.__all__"


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
    assert "conan_rag.batching.queue" in graph and "conan_rag.runtime.backend" in graph
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
        if name.startswith("conan_rag.batching"):
            assert not {t for t in targets if t.startswith("conan_rag.runtime")}, name
        if name.startswith("conan_rag.runtime"):
            assert not {t for t in targets if t.startswith("conan_rag.batching")}, name


def test_no_function_is_over_80_code_lines() -> None:
    long = [f"{where} ({n} lines)" for n, where in _long_functions() if n > MAX_FUNCTION_LINES]
    assert not long, f"over {MAX_FUNCTION_LINES} code lines: " + "; ".join(long)


def test_the_length_count_leaves_out_docstrings_comments_and_blank_lines(tmp_path: Path) -> None:
    code = '''
        def f(x):
            """A docstring

            over several lines."""
            # a comment

            y = x + 1  # code with a comment
            return (
                y
            )
    '''
    (tmp_path / "m.py").write_text(textwrap.dedent(code), encoding="utf-8")
    assert list(_function_lengths(tmp_path / "m.py")) == [("f", 2, 4)]


def test_no_fmt_skip_in_any_python_file() -> None:
    found = [f"{_rel(p)}:{line}" for p in _python_files() for line in _fmt_skips(p)]
    assert not found, "`# fmt: skip` (format the statement instead): " + ", ".join(found)


def test_every_package_declares_all() -> None:
    missing = [name for name, names in _packages().items() if names is None]
    assert not missing, "packages without __all__: " + ", ".join(
        f"{name.replace('.', '/')}/__init__.py" for name in missing
    )


def test_readme_notebooks_and_integrations_import_only_public_names() -> None:
    found = list(_private_imports())
    assert not found, "imports past a package's __all__:\n" + "\n".join(found)


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
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[:3] == ["(1, 384)", "384", "384"]
    assert "rag needs:" in done.stdout and "pip install 'conan-rag[rag]'" in done.stdout


def test_chromadb_is_imported_in_rag_only_by_the_chroma_store() -> None:
    # The store protocol is the RAG app's one door to its vector store (type-only imports count).
    graph = _graph()
    importers = sorted(
        name
        for name, targets in graph.items()
        if name.startswith("conan_rag.rag") and any(t.split(".")[0] == "chromadb" for t in targets)
    )
    assert importers == ["conan_rag.rag.store.chroma"]


def test_tests_mirror_the_package_folders() -> None:
    # tests/<path>/test_*.py tests conan_rag/<path>/; tests at the top are project-wide.
    tests = REPO / "tests"
    folders = {p.parent.relative_to(tests) for p in tests.rglob("test_*.py")} - {Path(".")}
    assert folders, "no test folders"
    unmatched = sorted(str(f) for f in folders if not (REPO / "conan_rag" / f).is_dir())
    assert unmatched == [], f"test folders with no package folder: {unmatched}"
    for folder in folders:
        for parent in [folder, *folder.parents][:-1]:
            assert (tests / parent / "__init__.py").exists(), f"tests/{parent} is not a package"


if __name__ == "__main__":
    graph = _graph()
    print(f"modules: {len(graph)}; import cycles (type-only included): {_cycles(graph) or 'none'}")
    longest = _long_functions()
    print(f"longest functions (limit {MAX_FUNCTION_LINES} code lines):")
    print("\n".join(f"  {n:4d}  {where}" for n, where in longest[:10]))
    chroma = sorted(n for n, ts in graph.items() if any(t.split(".")[0] == "chromadb" for t in ts))
    print("modules importing chromadb: " + (", ".join(chroma) or "none"))
    missing = [name for name, names in _packages().items() if names is None]
    print("packages missing __all__: " + (", ".join(missing) or "none"))
    core = sorted({t.split(".")[0] for n, ts in graph.items() if not _is_app(n) for t in ts})
    print("core (non-RAG) modules import: " + ", ".join(core))
    skips = [f"{_rel(p)}:{line}" for p in _python_files() for line in _fmt_skips(p)]
    print("`# fmt: skip` lines: " + (", ".join(skips) or "none"))
    private = list(_private_imports())
    print(f"imports past a package's __all__: {len(private) or 'none'}")
    print("\n".join(f"  {line}" for line in private))
