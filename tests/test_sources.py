"""Sources: files, directories, globs, manifests; slide ids safe and unique."""

import pytest

from nic_ray.slides.sources import SourceError, expand_sources


@pytest.fixture
def tree(tmp_path):
    for name in ("a.svs", "b.tiff", "sub/c.ndpi", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_directory_glob_file(tree):
    assert [s.slide_id for s in expand_sources([str(tree)])] == ["a", "b", "c"]
    assert [s.slide_id for s in expand_sources([str(tree / "*.svs")])] == ["a"]
    assert [s.url for s in expand_sources([str(tree / "notes.txt")])] == [str(tree / "notes.txt")]


def test_manifest_with_ids_and_mpp(tree):
    (tree / "m.csv").write_text("url,slide_id,mpp\na.svs,case-1,0.25\nsub/c.ndpi,case-2,\n")
    slides = expand_sources([str(tree / "m.csv")])
    assert [(s.slide_id, s.url, s.mpp) for s in slides] == [
        ("case-1", str(tree / "a.svs"), 0.25),
        ("case-2", str(tree / "sub/c.ndpi"), None),
    ]


@pytest.mark.parametrize(
    "body,message",
    [
        ("path\na.svs\n", "needs a 'url' column"),
        ("url,slide_id\na.svs,../etc\n", "unsafe slide id '../etc'"),
        ("url,slide_id\na.svs,x\nb.tiff,x\n", "slide id 'x' is also that of"),
        ("url,mpp\na.svs,-1\n", "mpp must be a positive number"),
    ],
)
def test_bad_manifests(tree, body, message):
    (tree / "m.csv").write_text(body)
    with pytest.raises(SourceError, match=message):
        expand_sources([str(tree / "m.csv")])


def test_missing_and_empty_sources(tree):
    with pytest.raises(SourceError, match="no such file"):
        expand_sources([str(tree / "nope.svs")])
    (tree / "empty").mkdir()
    with pytest.raises(SourceError, match="no slides found"):
        expand_sources([str(tree / "empty")])
    (tree / "x y.svs").write_bytes(b"x")
    with pytest.raises(SourceError, match="unsafe slide id 'x y'"):
        expand_sources([str(tree / "x y.svs")])
