"""Readiness by mode, artifact lookup, and which folders are projects at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from finalcopy.finalize.discovery import assess, discover
from tests.support.trees import make_tree as write_tree


@pytest.mark.parametrize(
    ("files", "strict", "lenient", "videos"),
    [
        ([], False, False, False),
        (["d/a.mp4"], False, False, True),
        (["d/a.MP4", "d/a.csv"], False, True, True),
        (["d/a.avi", "d/a_scenes.csv", "d/a_tracking.json"], True, True, True),
        (["d/a.mkv", "d/a_audio.json"], False, True, True),
        (["d/a.webm", "other/a_tracking.json", "d/a.csv"], True, True, True),
        (["d/a.mov", "d/b_tracking.json", "d/b.csv"], False, False, True),
        (["d/a.txt", "d/a.csv"], False, False, False),
    ],
)
def test_readiness_by_mode(files: list[str], strict: bool, lenient: bool, videos: bool) -> None:
    assert assess(files, "strict").ready is strict
    assert assess(files, "lenient").ready is lenient
    assert assess(files, "videos").ready is videos


def test_artifacts_next_to_the_video_win_and_reasons_are_given() -> None:
    files = ["a/v.mp4", "a/v_tracking.json", "b/v_tracking.json", "b/v.csv", "a/v_audio.json"]
    r = assess(files, "strict")
    assert r.ready and r.basis == "a/v.mp4"
    assert r.artifacts == {
        "b/v.csv": "scenes",
        "a/v_tracking.json": "tracking",
        "a/v_audio.json": "audio",
    }
    assert "strict" in assess(["v.mp4"], "strict").reason
    assert "no video" in assess(["x.csv"], "lenient").reason


def test_discover_skips_hidden_links_and_protected_folders(tmp_path: Path) -> None:
    work = tmp_path / "w"
    write_tree(work / "p", {"docs/v.mp4": b"v", "docs/v.csv": b"h\n"})
    write_tree(work / ".hidden", {"docs/v.mp4": b"v", "docs/v.csv": b"h\n"})
    write_tree(work / "archives" / "p", {"docs/v_tracking.json": b"{}"})
    write_tree(work / "logs" / "step7", {"x.log": b""})
    (work / "link").symlink_to(work / "p")
    found = {
        c.name: c for c in discover(work, "lenient", [work / "logs" / "step7"], work / "archives")
    }
    assert sorted(found) == ["archives", "link", "logs", "p"]
    assert found["p"].ready
    assert "protected" in found["archives"].reason
    assert "protected" in found["logs"].reason
    assert "symbolic link" in found["link"].reason
    # A work directory inside ARCHIVES_DIR: nothing there is a project.
    inner = discover(work / "archives", "videos", [], work / "archives")
    assert not any(c.ready for c in inner)
