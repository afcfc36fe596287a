"""Tests for difflab.data: reading folders and zips, bad files, builtins, batching, augmentation."""
from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.data import (
    BatchStream,
    ImageDataset,
    ImageRef,
    TensorImageDataset,
    augment_batch,
    batch_indices,
    detect_channels,
    is_grayscale,
    iter_images,
    list_images,
    load_dataset,
    make_shapes,
    to_mode,
    to_square,
)
from difflab.data.augment import adjust_brightness_contrast, rotate
from difflab.errors import ConfigError, DataError

RNG = np.random.default_rng(1234)


def noise(height: int, width: int, mode: str = "RGB") -> Image.Image:
    """A random image: colourful in RGB, gray in L."""
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = RNG.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Nested folder of odd-sized images in every supported format, plus files to ignore."""
    root = tmp_path / "images"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "__MACOSX").mkdir()
    noise(30, 40).save(root / "a.jpg")
    noise(50, 20, "L").save(root / "b.png")
    noise(17, 33).save(root / "sub" / "c.WEBP")
    noise(25, 25, "L").save(root / "sub" / "d.bmp")
    noise(9, 70).convert("RGBA").save(root / "sub" / "deeper" / "e.png")
    noise(40, 40).convert("P").save(root / "sub" / "deeper" / "f.png")
    noise(64, 48).save(root / "g.JPG")
    noise(8, 8).save(root / ".hidden.jpg")
    noise(8, 8).save(root / "__MACOSX" / "junk.jpg")
    (root / "notes.txt").write_text("not an image")
    return root


EXPECTED_NAMES = ["a.jpg", "b.png", "g.JPG", "sub/c.WEBP", "sub/d.bmp", "sub/deeper/e.png", "sub/deeper/f.png"]


def relative_names(refs: list[ImageRef], root: Path) -> list[str]:
    return [Path(ref.name).relative_to(root).as_posix() for ref in refs]


def zip_folder(folder: Path, archive: Path, prefix: str = "faces/") -> Path:
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                handle.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


def shared_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


# --- listing and reading files -------------------------------------------------


def test_folder_is_listed_recursively_sorted_and_filtered(mixed_folder: Path) -> None:
    assert relative_names(list_images(mixed_folder), mixed_folder) == EXPECTED_NAMES


def test_folder_of_mixed_formats_and_sizes_becomes_uniform_tensors(mixed_folder: Path) -> None:
    ds = ImageDataset(mixed_folder, image_size=16, progress=False)
    assert len(ds) == len(EXPECTED_NAMES) and ds.bad_files == []
    assert ds.channels == 3 and ds.image_size == 16
    assert ds.images.shape == (len(EXPECTED_NAMES), 3, 16, 16) and ds.images.dtype == torch.uint8
    assert all(ds[i].shape == (3, 16, 16) and ds[i].dtype == torch.uint8 for i in range(len(ds)))


def test_zip_archive_reads_like_a_folder(mixed_folder: Path, tmp_path: Path) -> None:
    archive = zip_folder(mixed_folder, tmp_path / "faces.zip")
    refs = list_images(archive)
    assert [ref.name for ref in refs] == ["faces/" + name for name in EXPECTED_NAMES]
    assert str(refs[0]) == "faces.zip:faces/a.jpg"
    from_zip = ImageDataset(archive, image_size=16, progress=False)
    from_folder = ImageDataset(mixed_folder, image_size=16, progress=False)
    assert torch.equal(from_zip.images, from_folder.images)


def test_single_image_file(tmp_path: Path) -> None:
    path = tmp_path / "one.png"
    noise(20, 30).save(path)
    ds = ImageDataset(path, image_size=8, progress=False)
    assert len(ds) == 1 and ds[0].shape == (3, 8, 8)


def test_missing_and_empty_sources_name_the_path_and_extensions(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere.*does not exist.*\.webp"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no images found in .*empty.*\.png"):
        list_images(tmp_path / "empty")


def test_iter_images_streams_and_reports_bad_files(tmp_path: Path) -> None:
    noise(10, 10).save(tmp_path / "good.jpg")
    (tmp_path / "bad.png").write_text("hello")
    bad: list[tuple[str, str]] = []
    results = list(iter_images(list_images(tmp_path), mode="L", workers=2, bad_files=bad))
    assert [(Path(ref.name).name, None if img is None else img.mode) for ref, img in results] == [
        ("bad.png", None),
        ("good.jpg", "L"),
    ]
    assert len(bad) == 1 and bad[0][0].endswith("bad.png")


# --- bad files ------------------------------------------------------------------


@pytest.fixture
def folder_with_bad_files(tmp_path: Path) -> Path:
    root = tmp_path / "dirty"
    root.mkdir()
    for i in range(3):
        noise(32, 32).save(root / f"good{i}.jpg", quality=90)
    encoded = (root / "good0.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(encoded[: len(encoded) // 2])
    (root / "a_text.png").write_text("this is not a png")  # sorts before the good files
    return root


def test_bad_files_are_reported_once_and_skipped(folder_with_bad_files: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="difflab.data"):
        ds = ImageDataset(folder_with_bad_files, image_size=16, progress=False)
    assert len(ds) == 3 and ds.images.shape[0] == 3
    assert sorted(Path(label).name for label, _ in ds.bad_files) == ["a_text.png", "truncated.jpg"]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 2 of 5 files" in warnings[0] and "truncated.jpg" in warnings[0] and "a_text.png" in warnings[0]


def test_too_few_images_is_a_data_error_naming_the_option(folder_with_bad_files: Path) -> None:
    ds = ImageDataset(folder_with_bad_files, image_size=16, progress=False)
    ds.require_at_least(3)
    with pytest.raises(DataError, match=r"3 usable images \(2 unreadable.*batch_size needs at least 64"):
        ds.require_at_least(64)


def test_folder_without_a_single_readable_image_fails(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="none of the 1 files"):
        ImageDataset(tmp_path, image_size=8, progress=False)


def test_lazy_mode_skips_non_images_and_matches_cached_pixels(folder_with_bad_files: Path) -> None:
    (folder_with_bad_files / "truncated.jpg").unlink()  # only a full decode can catch this one
    cached = ImageDataset(folder_with_bad_files, image_size=16, cache=True, progress=False)
    lazy = ImageDataset(folder_with_bad_files, image_size=16, cache="off", progress=False)
    assert lazy.images is None and len(lazy) == len(cached) == 3
    assert [label for label, _ in lazy.bad_files] == [label for label, _ in cached.bad_files]
    assert all(torch.equal(lazy[i], cached[i]) for i in range(3))


def test_auto_cache_reads_lazily_when_the_set_would_not_fit(mixed_folder: Path, monkeypatch) -> None:
    monkeypatch.setattr("difflab.data.dataset.CACHE_LIMIT_BYTES", 16 * 16 * 3 * 2)  # room for two images
    assert ImageDataset(mixed_folder, image_size=16, progress=False).images is None
    assert ImageDataset(mixed_folder, image_size=16, max_images=2, progress=False).images is not None


def test_lazy_mode_replaces_a_file_that_fails_late(tmp_path: Path, caplog) -> None:
    for i in range(2):
        noise(32, 32).save(tmp_path / f"good{i}.jpg")
    encoded = (tmp_path / "good0.jpg").read_bytes()
    (tmp_path / "late.jpg").write_bytes(encoded[: len(encoded) * 9 // 10])  # header intact, data cut
    lazy = ImageDataset(tmp_path, image_size=8, cache=False, progress=False)
    assert len(lazy) == 3 and Path(lazy.refs[2].name).name == "late.jpg"
    with caplog.at_level(logging.WARNING, logger="difflab.data"):
        replacement = lazy[2]
    assert torch.equal(replacement, lazy[0]) and "late.jpg" in caplog.text
    with pytest.raises(IndexError):
        lazy[3]


# --- channels and transforms -----------------------------------------------------


def test_channels_auto_detects_gray_even_when_stored_as_rgb(tmp_path: Path) -> None:
    noise(20, 20, "L").save(tmp_path / "gray.png")
    noise(20, 20, "L").convert("RGB").save(tmp_path / "gray_as_rgb.jpg")
    assert detect_channels(list_images(tmp_path)) == 1
    ds = ImageDataset(tmp_path, image_size=8, progress=False)
    assert ds.channels == 1 and ds.images.shape == (2, 1, 8, 8)
    noise(20, 20).save(tmp_path / "colour.jpg")
    assert ImageDataset(tmp_path, image_size=8, progress=False).channels == 3


def test_nearly_equal_rgb_channels_count_as_gray() -> None:
    gray = np.repeat(RNG.integers(0, 250, size=(8, 8, 1), dtype=np.uint8), 3, axis=2)
    assert is_grayscale(Image.fromarray(gray))
    gray[..., 2] += 2  # compression noise
    assert is_grayscale(Image.fromarray(gray))
    gray[0, 0, 0] = min(255, int(gray[0, 0, 1]) + 40)  # one coloured pixel
    assert not is_grayscale(Image.fromarray(gray))


def test_explicit_channels_and_bad_options(mixed_folder: Path) -> None:
    ds = ImageDataset(mixed_folder, image_size=8, channels=1, progress=False)
    assert ds.images.shape == (len(EXPECTED_NAMES), 1, 8, 8)
    with pytest.raises(ConfigError, match=r"image_channels must be one of auto, 1, 3; got 'rgb'"):
        ImageDataset(mixed_folder, image_size=8, channels="rgb")
    with pytest.raises(ConfigError, match="cache"):
        ImageDataset(mixed_folder, image_size=8, cache="sometimes")
    with pytest.raises(ConfigError, match="image_size"):
        ImageDataset(mixed_folder, image_size=0)


def test_to_square_keeps_the_centre() -> None:
    stripes = np.zeros((20, 80, 3), dtype=np.uint8)
    stripes[:, :20] = (255, 0, 0)
    stripes[:, 20:60] = (0, 255, 0)  # the central 20x20 crop lies well inside this stripe
    stripes[:, 60:] = (0, 0, 255)
    square = np.asarray(to_square(Image.fromarray(stripes), 10))
    assert square.shape == (10, 10, 3)
    assert (square == (0, 255, 0)).all()


def test_to_mode_handles_16_bit_alpha_and_palette() -> None:
    sixteen = Image.fromarray(np.array([[0, 200 * 257, 65535]], dtype=np.uint16))
    assert np.asarray(to_mode(sixteen, 1)).tolist() == [[0, 200, 255]]
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(to_mode(transparent, 3)).reshape(-1, 3).tolist() == [[255, 255, 255]] * 16
    palette = Image.new("RGB", (4, 4), (200, 10, 10)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert to_mode(palette, 3).getpixel((0, 0)) == (200, 10, 10)


# --- real data (../shared/data) ---------------------------------------------------


def test_anime_faces_96px_resized_to_64(shared_data: Path) -> None:
    ds = ImageDataset(shared_file(shared_data, "anime-faces-96px-2k.zip"), image_size=64, progress=False)
    assert len(ds) == 2000 and ds.bad_files == [] and ds.channels == 3
    assert ds.images.shape == (2000, 3, 64, 64) and ds.images.dtype == torch.uint8
    assert ds.images.min() < 30 and ds.images.max() > 225
    assert ds.images.float().std(dim=(1, 2, 3)).min() > 5  # no constant images


def test_mnist_from_idx_files(shared_data: Path) -> None:
    root = shared_file(shared_data, "mnist")
    ds = load_dataset("mnist", image_size=28, root=root)
    assert isinstance(ds, TensorImageDataset)
    assert len(ds) == 60000 and ds.channels == 1 and ds.images.shape == (60000, 1, 28, 28)
    assert ds.images.min() == 0 and ds.images.max() == 255
    resized = load_dataset("mnist", image_size=32, root=shared_data, split="test", max_images=500)
    assert resized.images.shape == (500, 1, 32, 32)


def test_cifar10_zip_with_max_images_spreads_over_classes(shared_data: Path) -> None:
    shared_file(shared_data, "cifar10-train-jpg.zip")
    ds = load_dataset("cifar10", image_size=32, root=shared_data, max_images=100, progress=False)
    assert len(ds) == 100 and ds.images.shape == (100, 3, 32, 32)
    assert len({ref.name.split("/")[1] for ref in ds.refs}) == 10


# --- builtins without real data ------------------------------------------------------


def test_missing_mnist_explains_where_to_put_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*does not download"):
        load_dataset("mnist", image_size=28, root=tmp_path)


def test_unknown_source_lists_builtins(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="mnist, cifar10, shapes"):
        load_dataset(str(tmp_path / "nope"), image_size=28)


def test_cifar10_python_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = RNG.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1]}))
    ds = load_dataset("cifar10", image_size=32, root=tmp_path)
    assert ds.images.shape == (10, 3, 32, 32)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": print}))
    with pytest.raises(DataError, match="unexpected object"):
        load_dataset("cifar10", image_size=32, root=tmp_path, split="test")


def test_shapes_are_deterministic_and_varied() -> None:
    first = make_shapes(32, 16, seed=3)
    assert first.shape == (32, 3, 16, 16) and first.dtype == torch.uint8
    assert torch.equal(first, make_shapes(32, 16, seed=3))
    assert torch.equal(first[:8], make_shapes(8, 16, seed=3))  # image i does not depend on N
    assert not torch.equal(first, make_shapes(32, 16, seed=4))
    flat = first.flatten(1).float()
    assert torch.cdist(flat, flat).fill_diagonal_(1e9).min() > 0  # no two images identical
    assert load_dataset("shapes", image_size=16, channels=1, num_images=4).images.shape == (4, 1, 16, 16)


# --- batch order -----------------------------------------------------------------------


def test_every_index_once_per_epoch_even_across_batch_boundaries() -> None:
    stream = torch.cat([batch_indices(step, 4, 10, seed=0) for step in range(5)])  # 2 epochs of 10
    assert sorted(stream[:10].tolist()) == list(range(10))
    assert sorted(stream[10:].tolist()) == list(range(10))
    assert not torch.equal(stream[:10], stream[10:])  # a fresh permutation per epoch


def test_batches_larger_than_the_dataset_span_several_epochs() -> None:
    batch = batch_indices(0, 25, 10, seed=0)
    assert len(batch) == 25 and sorted(batch[:20].tolist()) == sorted(list(range(10)) * 2)


def test_batch_order_depends_only_on_seed_and_step() -> None:
    assert torch.equal(batch_indices(7, 8, 100, seed=1), batch_indices(7, 8, 100, seed=1))
    assert not torch.equal(batch_indices(7, 8, 100, seed=1), batch_indices(7, 8, 100, seed=2))


def test_ranks_share_the_global_batch_disjointly() -> None:
    whole = batch_indices(3, 12, 50, seed=5)
    shards = [batch_indices(3, 12, 50, seed=5, rank=rank, world_size=3) for rank in range(3)]
    assert all(len(shard) == 4 for shard in shards)
    assert sorted(torch.cat(shards).tolist()) == sorted(whole.tolist())
    assert len(set(torch.cat(shards).tolist())) == 12
    with pytest.raises(ConfigError, match="batch_size"):
        batch_indices(0, 10, 50, seed=0, world_size=3)


def take(stream: BatchStream, count: int) -> list[torch.Tensor]:
    iterator = iter(stream)
    return [next(iterator) for _ in range(count)]


def test_resumed_stream_continues_the_same_sequence() -> None:
    ds = TensorImageDataset(make_shapes(20, 8, seed=0), name="shapes")
    straight = take(BatchStream(ds, batch_size=6, seed=9, start_step=0, device="cpu"), 7)
    resumed = take(BatchStream(ds, batch_size=6, seed=9, start_step=4, device="cpu"), 3)
    assert all(torch.equal(a, b) for a, b in zip(straight[4:], resumed))
    assert straight[0].shape == (6, 3, 8, 8) and straight[0].dtype == torch.uint8


def test_stream_batch_size_is_per_process() -> None:
    ds = TensorImageDataset(torch.arange(30, dtype=torch.uint8).view(30, 1, 1, 1).expand(30, 1, 2, 2).clone(), "ids")
    shards = [take(BatchStream(ds, 4, seed=2, start_step=5, device="cpu", rank=r, world_size=2), 1)[0] for r in (0, 1)]
    assert [len(shard) for shard in shards] == [4, 4]
    received = sorted(torch.cat(shards)[:, 0, 0, 0].tolist())
    assert received == sorted(batch_indices(5, 8, 30, seed=2).tolist())


def test_loader_path_yields_the_same_batches_as_memory(mixed_folder: Path, tmp_path: Path) -> None:
    archive = zip_folder(mixed_folder, tmp_path / "imgs.zip")
    cached = ImageDataset(archive, image_size=8, progress=False)
    lazy = ImageDataset(archive, image_size=8, cache=False, progress=False)
    fast = take(BatchStream(cached, batch_size=4, seed=1, start_step=2, device="cpu"), 3)
    # a worker process reads the zip through its own handle
    loaded = take(BatchStream(lazy, batch_size=4, seed=1, start_step=2, device="cpu", workers=1), 3)
    assert all(torch.equal(a, b) for a, b in zip(fast, loaded))


# --- augmentation ------------------------------------------------------------------------


def images_in_unit_range(count: int = 64, channels: int = 3, size: int = 8) -> torch.Tensor:
    return torch.rand(count, channels, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_no_augmentation_returns_the_input() -> None:
    images = images_in_unit_range()
    assert augment_batch(images, torch.Generator(), hflip=False, rotate_degrees=0, jitter=0) is images


def test_flip_only_gives_the_image_or_its_mirror() -> None:
    images = images_in_unit_range()
    out = augment_batch(images, torch.Generator().manual_seed(0), hflip=True, rotate_degrees=0, jitter=0)
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert 10 < mirrored.sum() < 54  # about half of 64


def test_rotation_by_zero_is_identity_and_by_90_matches_rot90() -> None:
    images = images_in_unit_range(4)
    assert torch.allclose(rotate(images, torch.zeros(4)), images, atol=1e-5)
    assert torch.allclose(rotate(images, torch.full((4,), 90.0)), torch.rot90(images, 1, (-2, -1)), atol=1e-5)


def test_rotation_fills_corners_by_reflection() -> None:
    white = torch.ones(2, 3, 8, 8)
    assert torch.allclose(rotate(white, torch.tensor([45.0, -30.0])), white)


def test_zero_contrast_gives_each_image_its_gray_mean() -> None:
    images = images_in_unit_range(4)
    flat = adjust_brightness_contrast(images, brightness=torch.ones(4), contrast=torch.zeros(4))
    gray = (images + 1) / 2 * torch.tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)
    expected = gray.sum(1, keepdim=True).mean((1, 2, 3), keepdim=True) * 2 - 1
    assert torch.allclose(flat, expected.expand_as(images), atol=1e-6)


def test_augmentation_is_reproducible_and_keeps_range() -> None:
    images = images_in_unit_range()

    def run(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return augment_batch(images, generator, hflip=True, rotate_degrees=10, jitter=0.5)

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    jittered = augment_batch(images, torch.Generator().manual_seed(0), hflip=False, rotate_degrees=0, jitter=0.9)
    assert jittered.min() >= -1 and jittered.max() <= 1
    assert not torch.allclose(jittered, images)
    with pytest.raises(ConfigError, match="jitter"):
        augment_batch(images, torch.Generator(), jitter=1.5)
