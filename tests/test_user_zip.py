"""ZipSource: a user's zip of images → the dataset zip, and ensure_dataset's rebuild rules."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from pokedex.data.archive import DatasetError, read_index
from pokedex.data.sources import ensure_dataset
from pokedex.data.sources.user_zip import ZipSource
from pokedex.io import file_sha256

CLASSES = ["Pikachu", "Nidoran♀", "Mr. Mime"]


def png(seed: int, size: int = 12, fmt: str = "PNG") -> bytes:
    image = Image.new("RGBA" if fmt == "PNG" else "RGB", (size, size), (seed * 37 % 256, seed * 11 % 256, 90, 255)[:4])
    image.putpixel((seed % size, 0), (255, 255, 255, 255)[: len(image.mode)])
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def make_zip(path: Path, members: dict[str, bytes | None]) -> Path:
    """``None`` as content makes a directory entry."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            if data is None:
                zf.mkdir(name.rstrip("/"))
            else:
                zf.writestr(name, data)
    return path


def split_layout(prefix: str = "") -> dict[str, bytes | None]:
    members: dict[str, bytes | None] = {}
    n = 0
    for name in CLASSES:
        for split, count in (("train", 3), ("val", 1), ("test", 1)):
            for i in range(count):
                n += 1
                members[f"{prefix}{split}/{name}/img{i}.png"] = png(n)
    return members


def flat_layout(per_class: int = 10) -> dict[str, bytes | None]:
    return {f"{name}/img{i:02d}.png": png(c * 100 + i) for c, name in enumerate(CLASSES) for i in range(per_class)}


def build(tmp_path: Path, members: dict[str, bytes | None], out: str = "out.zip", **kwargs):
    source = ZipSource(path=str(make_zip(tmp_path / "in.zip", members)), **kwargs)
    return source.build(tmp_path / out)


def test_split_layout_keeps_given_splits_and_names(tmp_path: Path) -> None:
    members = split_layout()
    make_zip(tmp_path / "in.zip", members)
    before = file_sha256(tmp_path / "in.zip")
    index = ZipSource(path=str(tmp_path / "in.zip")).build(tmp_path / "out.zip")

    assert index.classes == sorted(CLASSES)
    assert index.meta["summary"]["layout"] == "splits"
    assert index.counts() == {"train": 9, "val": 3, "test": 3}
    assert file_sha256(tmp_path / "in.zip") == before  # the user's zip is only read
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        for m in index.members:
            split, name, _ = m.source.split("/")
            assert m.split == split
            assert index.classes[m.label] == name
            assert m.path == m.source  # no wrapping folder: same place
            assert zf.read(m.path) == members[m.source]  # bytes copied as they are
    assert read_index(tmp_path / "out.zip").members == index.members


def test_single_wrapping_folder_is_stripped(tmp_path: Path) -> None:
    index = build(tmp_path, split_layout(prefix="pokemon/"))
    assert index.counts() == {"train": 9, "val": 3, "test": 3}
    assert {m.path.split("/")[0] for m in index.members} == {"train", "val", "test"}
    assert all(m.source.startswith("pokemon/") for m in index.members)


def test_flat_layout_is_stratified_and_stable(tmp_path: Path) -> None:
    members = flat_layout()
    first = build(tmp_path, members, out="a.zip", val_fraction=0.2, test_fraction=0.2)
    again = build(tmp_path, members, out="b.zip", val_fraction=0.2, test_fraction=0.2)
    other = build(tmp_path, members, out="c.zip", val_fraction=0.2, test_fraction=0.2, seed=1)

    assert first.meta["summary"]["layout"] == "flat"
    for label in range(len(CLASSES)):
        per_split = {s: sum(1 for m in first.split(s) if m.label == label) for s in ("train", "val", "test")}
        assert per_split == {"train": 6, "val": 2, "test": 2}
    key = [(m.source, m.split) for m in first.members]
    assert key == [(m.source, m.split) for m in again.members]
    assert key != [(m.source, m.split) for m in other.members]
    for m in first.members:
        assert first.classes[m.label] == m.source.split("/")[0]


def test_small_flat_class_gets_one_image_per_split(tmp_path: Path) -> None:
    index = build(tmp_path, {f"Ditto/{i}.png": png(i) for i in range(3)})
    assert index.counts() == {"train": 1, "val": 1, "test": 1}


def test_junk_members_are_ignored(tmp_path: Path) -> None:
    members = flat_layout(per_class=4)
    members.update(
        {
            "__MACOSX/Pikachu/._img00.png": b"\x00\x05\x16\x07junk",
            "Pikachu/.DS_Store": b"junk",
            "Pikachu/._img01.png": b"junk",
            "Pikachu/extra/": None,
            "notes.txt": b"hello",
        }
    )
    index = build(tmp_path, members)
    assert len(index.members) == 12
    assert index.meta["summary"]["skipped"] == {"not_an_image": 1, "system_file": 3}


def test_other_image_formats_keep_their_bytes(tmp_path: Path) -> None:
    members = flat_layout(per_class=3)
    members["Pikachu/photo.JPG"] = png(7, fmt="JPEG")
    index = build(tmp_path, members)
    photo = next(m for m in index.members if m.source == "Pikachu/photo.JPG")
    assert photo.path.endswith("/Pikachu/photo.JPG")
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert zf.read(photo.path) == members["Pikachu/photo.JPG"]


# --- bad input: each message names the thing and says what to do -------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope\.zip: file not found; pass the zip of your images as data\.path="):
        ZipSource(path=str(tmp_path / "nope.zip")).fingerprint()


def test_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "in.zip").write_text("not a zip")
    with pytest.raises(DatasetError, match=r"in\.zip: not a zip file \(.*\); pass a \.zip of your images"):
        ZipSource(path=str(tmp_path / "in.zip")).build(tmp_path / "out.zip")


def test_empty_zip(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"in\.zip: contains no images \(\.png, \.jpg.*\); expected train/<Name>"):
        build(tmp_path, {"readme.txt": b"hi", "Pikachu/": None})


def test_class_with_too_few_images(tmp_path: Path) -> None:
    members = split_layout()
    del members["train/Pikachu/img0.png"], members["train/Pikachu/img1.png"]
    with pytest.raises(
        DatasetError, match=r"class 'Pikachu' has 3 image\(s\); at least 4 are needed \(data\.source\.min_images"
    ):
        build(tmp_path, members, min_images_per_class=4)


def test_flat_class_needs_one_image_per_split(tmp_path: Path) -> None:
    members = flat_layout(per_class=5)
    members.update({"Eevee/a.png": png(1), "Eevee/b.png": png(2)})
    with pytest.raises(
        DatasetError,
        match=r"class 'Eevee' has 2 image\(s\); at least 3 are needed \(one each for train, val and test",
    ):
        build(tmp_path, members, min_images_per_class=1)


def test_class_only_in_val(tmp_path: Path) -> None:
    members = split_layout()
    members.update({f"val/Mew/{i}.png": png(i) for i in range(3)})
    with pytest.raises(
        DatasetError, match=r"class 'Mew' has images in val/ but none in train/; add training images under train/Mew/"
    ):
        build(tmp_path, members)


def test_split_without_images(tmp_path: Path) -> None:
    members = {k: v for k, v in split_layout().items() if not k.startswith("test/")}
    with pytest.raises(DatasetError, match=r"no images under test/; every split needs some"):
        build(tmp_path, members)


def test_mixed_layout(tmp_path: Path) -> None:
    members = split_layout()
    members["a/b/c/d.png"] = png(1)
    with pytest.raises(DatasetError, match=r"cannot tell the zip's layout from member 'a/b/c/d\.png'"):
        build(tmp_path, members)


def test_corrupt_member_is_an_error(tmp_path: Path) -> None:
    members = split_layout()
    members["train/Pikachu/bad.png"] = png(1)[:40]
    with pytest.raises(
        DatasetError,
        match=r"unreadable image train/Pikachu/bad\.png: .*\. Fix or remove it, or set data\.on_bad_image=skip",
    ):
        build(tmp_path, members)


def test_corrupt_member_skipped_and_counted(tmp_path: Path) -> None:
    members = split_layout()
    members["train/Pikachu/bad.png"] = png(1)[:40]
    members["train/Pikachu/empty.png"] = b""
    index = build(tmp_path, members, on_bad_image="skip")
    assert index.meta["summary"]["skipped"] == {"bad_image": 2}
    assert index.counts() == {"train": 9, "val": 3, "test": 3}
    assert not any("bad" in m.path or "empty" in m.path for m in index.members)


def test_refuses_to_overwrite_the_input(tmp_path: Path) -> None:
    source = ZipSource(path=str(make_zip(tmp_path / "in.zip", split_layout())))
    with pytest.raises(DatasetError, match=r"in\.zip: is the input zip itself; refusing to overwrite it"):
        source.build(tmp_path / "in.zip")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        ensure_dataset(source, tmp_path / "in.zip")


# --- ensure_dataset ------------------------------------------------------------------------------------------


def test_ensure_dataset_is_a_noop_on_rerun(tmp_path: Path) -> None:
    source = ZipSource(path=str(make_zip(tmp_path / "in.zip", split_layout())))
    out = tmp_path / "data" / "user.zip"
    first = ensure_dataset(source, out)
    mtime = out.stat().st_mtime_ns
    again = ensure_dataset(source, out)
    assert out.stat().st_mtime_ns == mtime
    assert again.members == first.members
    assert again.meta["fingerprint"]["sha256"] == file_sha256(tmp_path / "in.zip")

    rebuilt = ensure_dataset(ZipSource(path=source.path, seed=1), out)  # other inputs: rebuilt in place
    assert rebuilt.meta["fingerprint"]["seed"] == 1
    assert read_index(out).meta["fingerprint"]["seed"] == 1


@pytest.mark.parametrize("content", [b"someone's notes", None])
def test_ensure_dataset_refuses_foreign_files(tmp_path: Path, content: bytes | None) -> None:
    source = ZipSource(path=str(make_zip(tmp_path / "in.zip", split_layout())))
    out = tmp_path / "other.zip"
    if content is None:
        make_zip(out, {"x.png": png(1)})  # a zip, but not one of ours
    else:
        out.write_bytes(content)
    before = out.read_bytes()
    with pytest.raises(FileExistsError, match=r"other\.zip exists but was not built by pokedex"):
        ensure_dataset(source, out)
    assert out.read_bytes() == before
