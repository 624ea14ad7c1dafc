"""Discovery and symbolic links: linked folders followed once, loops and broken links named."""

# ruff: noqa: F811 - pytest fixtures imported from tests.pipeline_helpers
from __future__ import annotations

from pathlib import Path

from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.sources.discovery import discover
from tests.pipeline_helpers import tiny  # noqa: F401 - fixture


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """``docs/`` (the input) and ``outside/`` (reached only through links)."""
    docs, outside = tmp_path / "docs", tmp_path / "outside"
    (docs / "real").mkdir(parents=True)
    (outside / "deep").mkdir(parents=True)
    (docs / "a.md").write_text("alpha")
    (docs / "real" / "r.md").write_text("real")
    (outside / "o.md").write_text("outside")
    (outside / "deep" / "d.md").write_text("deep")
    return docs, outside


def test_a_linked_folder_is_walked_under_the_link(tmp_path: Path) -> None:
    docs, outside = _tree(tmp_path)
    (docs / "linked").symlink_to(outside, target_is_directory=True)
    found = discover([docs])
    names = [p.relative_to(docs.resolve()).as_posix() for p in found.files]
    assert names == ["a.md", "linked/o.md", "linked/deep/d.md", "real/r.md"]
    assert found.skipped == [] and found.covers(str(docs.resolve() / "linked" / "o.md"))


def test_loops_and_second_links_are_walked_once_and_named(tmp_path: Path) -> None:
    docs, outside = _tree(tmp_path)
    (docs / "linked").symlink_to(outside, target_is_directory=True)
    (docs / "twin").symlink_to(outside, target_is_directory=True)  # a second way in
    (outside / "deep" / "up").symlink_to(outside, target_is_directory=True)  # a loop outside
    (docs / "real" / "back").symlink_to(docs, target_is_directory=True)  # a loop inside
    (docs / "alias").symlink_to(docs / "real", target_is_directory=True)  # inside, elsewhere
    found = discover([docs])  # ends: no folder is walked twice
    root = docs.resolve()
    names = [p.relative_to(root).as_posix() for p in found.files]
    assert names == ["a.md", "linked/o.md", "linked/deep/d.md", "real/r.md"]
    reasons = {Path(p).relative_to(root).as_posix(): why for p, why in found.skipped}
    assert set(reasons) == {"alias", "linked/deep/up", "real/back", "twin"}
    assert reasons["real/back"].startswith("symlink loop: ")
    assert reasons["linked/deep/up"].startswith("symlink loop: ")
    assert reasons["alias"] == f"link inside the folder: {root / 'real'} is walked at its own path"
    assert reasons["twin"].startswith("linked folder: the same folder as ")
    assert not found.covers(str(root / "twin" / "o.md"))  # never pruned from under a skip


def test_broken_links_are_named_and_linked_files_keep_the_given_path(tmp_path: Path) -> None:
    docs, outside = _tree(tmp_path)
    (docs / "gone.md").symlink_to(tmp_path / "nowhere.md")
    (docs / "gone-folder").symlink_to(tmp_path / "nowhere", target_is_directory=True)
    (docs / "b.md").symlink_to(outside / "o.md")
    (docs / "same.md").symlink_to(docs / "a.md")  # the file itself is found too: kept once
    found = discover([docs, docs / "gone.md"])
    root = docs.resolve()
    assert [p.relative_to(root).as_posix() for p in found.files] == ["a.md", "b.md", "real/r.md"]
    assert dict(found.unsupported) == {} and found.missing == []
    reasons = dict(found.skipped)
    assert set(reasons) == {str(root / "gone-folder"), str(root / "gone.md")}
    assert reasons[str(root / "gone.md")] == (
        f"broken symlink: its target {tmp_path / 'nowhere.md'} does not exist"
    )
    assert discover([docs / "b.md"]).files == [root / "b.md"]  # named: the link, not its target


def test_prune_removes_a_linked_file_once_its_link_is_gone(tiny, tmp_path: Path) -> None:
    docs, outside = _tree(tmp_path)
    (docs / "b.md").symlink_to(outside / "o.md")
    (docs / "ext").symlink_to(outside / "deep", target_is_directory=True)
    pipe = Pipeline(tiny, db=tmp_path / "db", collection="links")

    def sources() -> set[str]:
        got = pipe.collection.get(include=["metadatas"])["metadatas"]
        return {Path(m["source"]).relative_to(tmp_path.resolve()).as_posix() for m in got}

    pipe.ingest([docs])
    assert sources() == {"docs/a.md", "docs/b.md", "docs/ext/d.md", "docs/real/r.md"}
    (docs / "b.md").unlink()
    (docs / "ext").unlink()  # now a broken link (an unmounted drive): what it held is kept
    (docs / "ext").symlink_to(tmp_path / "unmounted", target_is_directory=True)
    report = pipe.ingest([docs], prune=True)
    assert report.deleted == 1 and sources() == {"docs/a.md", "docs/ext/d.md", "docs/real/r.md"}
    assert [reason.split(":")[0] for _, reason in report.skipped] == ["broken symlink"]
