"""Evaluation metrics: Frechet distance, KID, the FID Inception port, weights, AFD, memorisation."""
from __future__ import annotations

import io
import shutil
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from scipy import linalg

from difflab.errors import ConfigError, DataError
from difflab.metrics.evaluation import measure
from difflab.metrics.extractors import Extractor, load_extractor
from difflab.metrics.features import FeatureCollector, images_to_tensor
from difflab.metrics.frechet import frechet_distance
from difflab.metrics.inception import (
    FID_WEIGHTS,
    FIDInceptionV3,
    inception_from_state_dict,
    load_fid_inception,
    random_state_dict,
)
from difflab.metrics.kid import kernel_distance, mmd2_unbiased, polynomial_kernel
from difflab.metrics.nearest import find_matches, near_copies
from difflab.metrics.statistics import FeatureStatistics, check_matches_extractor
from difflab.metrics.weights import RemoteFile, locate, sha256_of

FACES_64 = "anime-faces-64px-20k.zip"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Weights and statistics go to a throwaway cache; no test may see the user's."""
    monkeypatch.setenv("DIFFLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFLAB_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("DIFFLAB_ANIMEFACE_CASCADE", raising=False)


def random_spd(rng: np.random.Generator, dims: int) -> np.ndarray:
    factor = rng.normal(size=(dims, dims))
    return factor @ factor.T / dims + 0.1 * np.eye(dims)


def faces_from_zip(shared_data: Path, count: int, start: int = 0) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(shared_data / FACES_64) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))[start : start + count]
        return [(Path(n).name, archive.read(n)) for n in names]


def write_faces(folder: Path, faces: list[tuple[str, bytes]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in faces:
        (folder / name).write_bytes(data)
    return folder


# --- Frechet distance ------------------------------------------------------------------


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # = 5 + 1 + 1 + 4
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_commuting_covariances_is_the_closed_form():
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    eig1, eig2 = rng.uniform(0.5, 3, 6), rng.uniform(0.5, 3, 6)
    sigma1, sigma2 = rotation @ np.diag(eig1) @ rotation.T, rotation @ np.diag(eig2) @ rotation.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(eig1) - np.sqrt(eig2)) ** 2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_the_symmetric_scipy_formula():
    rng = np.random.default_rng(1)
    sigma1, sigma2 = random_spd(rng, 20), random_spd(rng, 20)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    root1 = linalg.sqrtm(sigma1).real
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * linalg.sqrtm(root1 @ sigma2 @ root1).real)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(direct, rel=1e-8)


def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(2)
    sigma, mu = random_spd(rng, 30), rng.normal(size=30)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * np.trace(sigma)


def test_frechet_distance_survives_rank_deficient_covariances():
    rng = np.random.default_rng(3)
    few_samples = rng.normal(size=(5, 16)), rng.normal(size=(5, 16)) + 0.5  # rank 4 in 16 dims
    stats = [(x.mean(0), np.cov(x, rowvar=False)) for x in few_samples]
    with np.errstate(all="ignore"):
        value = frechet_distance(*stats[0], *stats[1])
    assert np.isfinite(value) and value > 0


def test_frechet_distance_refuses_different_dimensions():
    with pytest.raises(DataError, match="different feature dimensions"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- KID -------------------------------------------------------------------------------


def test_mmd2_unbiased_equals_a_brute_force_double_loop():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(9, 5)) + 0.3

    def k(a, b):
        return (a @ b / 5 + 1) ** 3

    within_x = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    within_y = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    across = sum(k(a, b) for a in x for b in y) / (7 * 9)
    assert mmd2_unbiased(x, y) == pytest.approx(within_x + within_y - 2 * across, rel=1e-10)


def test_mmd2_of_two_point_masses_is_the_kernel_closed_form():
    x, y = np.tile([1.0, 2.0], (4, 1)), np.tile([0.0, -1.0], (6, 1))
    k = lambda a, b: (a @ b / 2 + 1) ** 3  # noqa: E731
    expected = k(x[0], x[0]) + k(y[0], y[0]) - 2 * k(x[0], y[0])
    assert mmd2_unbiased(x, y) == pytest.approx(expected)
    assert polynomial_kernel(x[:1], y[:1])[0, 0] == pytest.approx(k(x[0], y[0]))


def test_kid_is_about_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(5)
    real, same = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same_kid = kernel_distance(real, same, num_subsets=20, subset_size=200)
    shifted_kid = kernel_distance(real, same + 0.5, num_subsets=20, subset_size=200)
    assert abs(same_kid.mean) < 3 * same_kid.std + 1e-3
    assert shifted_kid.mean > 10 * max(same_kid.std, 1e-4)
    assert shifted_kid.subset_size == 200 and shifted_kid.num_subsets == 20


def test_kid_caps_subsets_at_the_smaller_set():
    rng = np.random.default_rng(6)
    assert kernel_distance(rng.normal(size=(30, 4)), rng.normal(size=(50, 4)), num_subsets=3).subset_size == 30


# --- the FID Inception port ------------------------------------------------------------


@pytest.fixture(scope="module")
def random_inception() -> FIDInceptionV3:
    return inception_from_state_dict(random_state_dict(seed=0))


def test_inception_state_dict_has_the_published_layout():
    state = FIDInceptionV3().state_dict()
    assert len(state) == 566  # as in pt_inception-2015-12-05-6726825d.pth
    expected_shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_var": (32,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch3x3dbl_3a.conv.weight": (384, 384, 1, 3),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "fc.weight": (1008, 2048),
    }
    for name, shape in expected_shapes.items():
        assert tuple(state[name].shape) == shape, name
    assert not any(name.startswith("AuxLogits") for name in state)


def test_inception_layer_shapes_and_pool_features(random_inception):
    shapes = {}
    for name in ("Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"):
        getattr(random_inception, name).register_forward_hook(
            lambda module, inputs, output, name=name: shapes.__setitem__(name, tuple(output.shape[1:]))
        )
    with torch.no_grad():
        features = random_inception.features(torch.rand(2, 3, 64, 64))
    assert shapes == {
        "Conv2d_2b_3x3": (64, 147, 147),
        "Conv2d_4a_3x3": (192, 71, 71),
        "Mixed_5d": (288, 35, 35),
        "Mixed_6e": (768, 17, 17),
        "Mixed_7c": (2048, 8, 8),
    }
    assert features.shape == (2, 2048)
    assert features.std() > 0.1  # the random weights keep activations alive


def test_inception_block_quirks_of_the_fid_graph(random_inception):
    x = torch.rand(1, 4, 5, 5)
    without_padding = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    assert torch.equal(random_inception.Mixed_7b.pool(x), without_padding)
    assert torch.equal(random_inception.Mixed_7c.pool(x), F.max_pool2d(x, 3, stride=1, padding=1))
    assert not torch.equal(without_padding, F.avg_pool2d(x, 3, stride=1, padding=1))


def test_inception_weights_round_trip_through_a_file(tmp_path, random_inception):
    path = tmp_path / "random-inception.safetensors"
    save_file(random_state_dict(seed=0), str(path))
    reloaded = inception_from_state_dict(load_file(str(path)))
    images = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(reloaded.features(images), random_inception.features(images))


def test_inception_refuses_another_layout():
    renamed = {f"blocks.{name}": value for name, value in random_state_dict(seed=1).items()}
    with pytest.raises(DataError, match="not an FID Inception state dict"):
        inception_from_state_dict(renamed)


# --- weights: lookup, checksum, download -----------------------------------------------


def test_missing_inception_weights_say_what_to_download_and_where():
    with pytest.raises(DataError) as error:
        load_fid_inception(allow_download=False)
    message = str(error.value)
    for hint in ("inception_weights", "DIFFLAB_INCEPTION_WEIGHTS", FID_WEIGHTS.url, str(FID_WEIGHTS.cached_path())):
        assert hint in message


def test_offline_download_failure_says_what_to_download(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DataError, match="could not download") as error:
        load_fid_inception()
    assert "inception_weights" in str(error.value)


def test_weights_with_a_wrong_checksum_are_refused(tmp_path, monkeypatch):
    impostor = tmp_path / FID_WEIGHTS.filename
    impostor.write_bytes(b"not the weights")
    with pytest.raises(DataError, match="sha256"):
        load_fid_inception(impostor)
    monkeypatch.setenv("DIFFLAB_INCEPTION_WEIGHTS", str(tmp_path / "absent.pth"))
    with pytest.raises(DataError, match="DIFFLAB_INCEPTION_WEIGHTS points to"):
        load_fid_inception(allow_download=False)


def test_download_is_verified_and_cached(tmp_path):
    published = tmp_path / "published.bin"
    published.write_bytes(b"some weights")
    good = RemoteFile("w.bin", published.as_uri(), sha256_of(published), "w", "DIFFLAB_TEST_W")
    cached = locate(good)
    assert cached == good.cached_path() and cached.read_bytes() == b"some weights"

    tampered = RemoteFile("v.bin", published.as_uri(), "0" * 64, "w", "DIFFLAB_TEST_W")
    with pytest.raises(DataError, match="not using it"):
        locate(tampered)
    assert not tampered.cached_path().exists()
    assert not list(tampered.cached_path().parent.glob("*.part"))


# --- feature extraction and statistics -------------------------------------------------


class MeanColour(torch.nn.Module):
    """A tiny stand-in extractor: each image's mean RGB."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))


def test_images_become_tensors_exactly_as_to_tensor_makes_them():
    pixels = np.random.default_rng(7).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    tensor = images_to_tensor([Image.fromarray(pixels)])
    expected = torch.from_numpy(pixels).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    assert torch.equal(tensor[0], expected)


def test_features_keep_input_order_across_image_sizes():
    collector = FeatureCollector(Extractor("mean-colour", MeanColour(), "test"), "cpu")
    images = [Image.new("RGB", size, colour) for size, colour in
              (((8, 8), (10, 0, 0)), ((16, 4), (20, 0, 0)), ((8, 8), (30, 0, 0)))]  # fmt: skip
    red = collector.features_of(images)[:, 0] * 255
    assert np.allclose(red, [10, 20, 30])


def test_statistics_round_trip_and_pytorch_fid_files(tmp_path):
    features = np.random.default_rng(8).normal(size=(50, 4))
    extractor = Extractor("mean-colour", MeanColour(), "test")
    stats = FeatureStatistics.from_features(features, extractor, "set")
    stats.save(tmp_path / "stats.npz")
    loaded = FeatureStatistics.load(tmp_path / "stats.npz")
    assert np.array_equal(loaded.mu, stats.mu) and np.array_equal(loaded.sigma, stats.sigma)
    assert (loaded.num_images, loaded.extractor) == (50, "mean-colour")

    np.savez(tmp_path / "pytorch-fid.npz", mu=stats.mu, sigma=stats.sigma)
    foreign = FeatureStatistics.load(tmp_path / "pytorch-fid.npz")
    assert foreign.extractor is None and foreign.num_images is None
    with pytest.raises(DataError, match="pytorch-fid's Inception"):
        check_matches_extractor(foreign, extractor)


def test_statistics_from_different_extractors_are_not_compared():
    rng = np.random.default_rng(9)
    a = FeatureStatistics.from_features(rng.normal(size=(20, 3)), Extractor("net-a", MeanColour(), "a"), "A")
    b = FeatureStatistics.from_features(rng.normal(size=(20, 3)), Extractor("net-b", MeanColour(), "b"), "B")
    with pytest.raises(DataError, match="same features"):
        a.frechet_distance(b)
    c = FeatureStatistics.from_features(rng.normal(size=(20, 5)), Extractor("net-a", MeanColour(), "a"), "C")
    with pytest.raises(DataError, match="different feature extractors"):
        a.frechet_distance(c)


def test_too_few_images_for_a_covariance_suggest_kid():
    rng = np.random.default_rng(10)
    extractor = Extractor("net", MeanColour(), "n")
    small = FeatureStatistics.from_features(rng.normal(size=(8, 16)), extractor, "small/")
    large = FeatureStatistics.from_features(rng.normal(size=(40, 16)), extractor, "large/")
    with pytest.raises(DataError, match="too few") as error:
        small.frechet_distance(large)
    assert "KID" in str(error.value) and "small/" in str(error.value)
    with pytest.raises(DataError, match="at least 2 images"):
        FeatureStatistics.from_features(rng.normal(size=(1, 16)), extractor, "one")


def test_features_spec_errors_are_config_errors(tmp_path):
    module = tmp_path / "nets.py"
    module.write_text("def not_a_network():\n    return 42\n")
    for spec, message in (("resnet", "FILE.py:FUNCTION"), (f"{tmp_path}/absent.py:f", "does not exist"),
                          (f"{module}:missing", "no function"), (f"{module}:not_a_network", "features")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            load_extractor(spec)


def test_featnet_extractor_is_named_after_file_and_function(shared_eval):
    extractor = load_extractor(f"{shared_eval}/featnet.py:cifar10")
    assert extractor.name == "featnet.py:cifar10" and extractor.distance_name == "FD"
    assert not extractor.is_fid_inception


# --- reading: empty and unreadable inputs ----------------------------------------------


def test_unreadable_images_are_reported_and_skipped(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    measured = measure(str(folder), Extractor("mean-colour", MeanColour(), "t"), progress=False)
    assert [Path(ref.name).name for ref in measured.used] == ["good.png"]
    assert measured.features.shape == (1, 3)
    assert len(measured.unreadable) == 1 and "broken.jpg" in measured.unreadable[0][0]

    (folder / "good.png").unlink()
    with pytest.raises(DataError, match="could be read"):
        measure(str(folder), Extractor("mean-colour", MeanColour(), "t"), progress=False)


def test_an_empty_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no images"):
        measure(str(tmp_path), Extractor("mean-colour", MeanColour(), "t"), progress=False)


# --- AFD -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cascade(shared_data):
    pytest.importorskip("cv2", reason="AFD needs opencv-python-headless<5 (pip install 'difflab[afd]')")
    from difflab.metrics.afd import load_detector

    return load_detector("cascade", shared_data / "lbpcascade_animeface.xml")


def test_cascade_finds_real_anime_faces(shared_data, cascade):
    faces = [Image.open(io.BytesIO(data)).convert("RGB") for _, data in faces_from_zip(shared_data, 300)]
    found = [count > 0 for count in cascade.detect(faces)]
    assert sum(found) / len(found) > 0.8


def test_cascade_finds_no_faces_in_noise(cascade):
    rng = np.random.default_rng(11)
    noise = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(100)]
    assert sum(count > 0 for count in cascade.detect(noise)) <= 2


def test_cascade_name_records_its_parameters(cascade):
    assert "scaleFactor 1.1" in cascade.name and "minNeighbors 5" in cascade.name


def test_missing_opencv_is_explained(monkeypatch):
    from difflab.metrics.afd import load_detector

    monkeypatch.setitem(__import__("sys").modules, "cv2", None)  # makes `import cv2` fail
    with pytest.raises(ConfigError, match="opencv-python-headless<5"):
        load_detector("cascade")


def test_yolo_needs_its_weights():
    from difflab.metrics.afd import load_detector

    with pytest.raises(ConfigError, match="detector_weights"):
        load_detector("yolo")


def test_yolo_detector_where_ultralytics_is_installed(shared_data):
    pytest.importorskip("ultralytics", reason="the YOLO detector is optional; ultralytics is not installed")
    import os

    weights = os.environ.get("DIFFLAB_YOLO_ANIMEFACE")
    if not weights:
        pytest.skip("set DIFFLAB_YOLO_ANIMEFACE to yolov8x6_animeface.pt to test the YOLO detector")
    from difflab.metrics.afd import load_detector

    detector = load_detector("yolo", weights)
    faces = [Image.open(io.BytesIO(data)).convert("RGB") for _, data in faces_from_zip(shared_data, 50)]
    assert sum(count > 0 for count in detector.detect(faces)) / 50 > 0.8


# --- memorisation check ----------------------------------------------------------------


def test_planted_copies_are_found_exactly(tmp_path, shared_data, shared_eval):
    training = write_faces(tmp_path / "training", faces_from_zip(shared_data, 120))
    generated = write_faces(tmp_path / "generated", faces_from_zip(shared_data, 20, start=500))
    planted = sorted(training.iterdir())[::40]  # three training images, copied under new names
    for index, original in enumerate(planted):
        shutil.copy(original, generated / f"copy_{index}.jpg")

    extractor = load_extractor(f"{shared_eval}/featnet.py:cifar10")
    gen = measure(str(generated), extractor, thumbnails=True, progress=False)
    train = measure(str(training), extractor, thumbnails=True, progress=False)
    matches = find_matches(gen.used, gen.features, gen.thumbnails, train.used, train.features, train.thumbnails)
    copies = near_copies(matches)

    assert sorted(Path(m.generated.name).name for m in copies) == ["copy_0.jpg", "copy_1.jpg", "copy_2.jpg"]
    assert sorted(Path(m.pixel_neighbour.name) for m in copies) == planted
    assert all(m.pixel_distance == 0 and m.feature_distance == 0 for m in copies)
    assert all(m.pixel_distance > 0.05 for m in matches if m not in copies)
