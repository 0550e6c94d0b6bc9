"""storage.atomic_dir: a folder's files replaced all together, or not at all."""
from __future__ import annotations

import pytest

from ray_logmilp import storage


def _write(fs, folder: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        fs.create_dir(f"{folder}/{name}".rsplit("/", 1)[0], recursive=True)
        storage.write_text(fs, f"{folder}/{name}", text)


def _contents(path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("as_uri", [False, True])
def test_success_moves_every_file_in_and_leaves_no_temporary_folder(tmp_path, as_uri):
    final = tmp_path / "out"
    final.mkdir()
    (final / "data.txt").write_text("old data")
    (final / "manifest.json").write_text("old manifest")
    (final / "notes.txt").write_text("not ours")
    with storage.atomic_dir(f"file://{final}" if as_uri else str(final), marker="manifest.json") as (fs, tmp):
        assert fs.get_file_info(tmp).type.name == "Directory" and not tmp.startswith(str(final) + "/")
        _write(fs, tmp, {"data.txt": "new data", "sub/part.txt": "new part", "manifest.json": "new manifest"})
        assert (final / "data.txt").read_text() == "old data"        # nothing visible before the block ends
    assert _contents(final) == {"data.txt": "new data", "manifest.json": "new manifest", "notes.txt": "not ours",
                                "sub/part.txt": "new part"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failure_leaves_the_previous_folder_as_it_was(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "data.txt").write_text("old data")
    (final / "manifest.json").write_text("old manifest")
    with pytest.raises(RuntimeError, match="half way"):
        with storage.atomic_dir(str(final), marker="manifest.json") as (fs, tmp):
            _write(fs, tmp, {"data.txt": "half written"})
            raise RuntimeError("failed half way")
    assert _contents(final) == {"data.txt": "old data", "manifest.json": "old manifest"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_nothing_is_committed_without_the_marker_and_a_new_folder_is_created(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json was not written"):
        with storage.atomic_dir(str(tmp_path / "out"), marker="manifest.json") as (fs, tmp):
            _write(fs, tmp, {"data.txt": "x"})
    assert list(tmp_path.iterdir()) == []
    with storage.atomic_dir(str(tmp_path / "a" / "out"), marker="m") as (fs, tmp):
        _write(fs, tmp, {"m": "done"})
    assert _contents(tmp_path / "a") == {"out/m": "done"}
