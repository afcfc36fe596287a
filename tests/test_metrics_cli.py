"""`difflab fid|fid-stats|kid|afd|nearest|eval` end to end, with the fixed feature network."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from difflab.cli.main import main

FACES_64 = "anime-faces-64px-20k.zip"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFLAB_INCEPTION_WEIGHTS", raising=False)


@pytest.fixture(scope="module")
def face_sets(tmp_path_factory, shared_data) -> tuple[Path, Path]:
    """300 "generated" faces (plus one broken file) and 400 disjoint real ones, as folders."""
    root = tmp_path_factory.mktemp("faces")
    with zipfile.ZipFile(shared_data / FACES_64) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
        for folder, members in (("generated", names[:300]), ("real", names[300:700])):
            (root / folder).mkdir()
            for member in members:
                (root / folder / Path(member).name).write_bytes(archive.read(member))
    (root / "generated" / "broken.png").write_bytes(b"\x89PNG truncated")
    return root / "generated", root / "real"


@pytest.fixture(scope="module")
def featnet(shared_eval) -> list[str]:
    return ["--features", f"{shared_eval}/featnet.py:cifar10", "--no-progress", "--device", "cpu"]


TINY_EXTRACTORS = '''
import torch
import torch.nn.functional as F


class Thumbnail(torch.nn.Module):
    """Pixels of a size x size gray thumbnail: a fast stand-in for a feature network."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def features(self, images):
        gray = images.mean(dim=1, keepdim=True)
        return F.adaptive_avg_pool2d(gray, self.size).flatten(1)


def thumb8():
    return Thumbnail(8)


def thumb4():
    return Thumbnail(4)
'''


@pytest.fixture(scope="module")
def tiny_features(tmp_path_factory) -> Path:
    """A FILE.py with two cheap extractors (64-d and 16-d) for the commands' plumbing."""
    path = tmp_path_factory.mktemp("extractors") / "tiny.py"
    path.write_text(TINY_EXTRACTORS)
    return path


def test_eval_end_to_end_with_the_fixed_feature_network(tmp_path, face_sets, featnet, shared_data, capsys):
    generated, real = face_sets
    report, pairs = tmp_path / "metrics.json", tmp_path / "nn.png"
    detector = ["--detector-weights", str(shared_data / "lbpcascade_animeface.xml")]
    code = main(["eval", str(generated), str(real), "--json", str(report), "--out", str(pairs),
                 "--kid-subsets", "10", *detector, *featnet])  # fmt: skip
    assert code == 0
    results = json.loads(report.read_text())
    assert results["generated"]["num_images"] == 300 and results["generated"]["num_unreadable"] == 1
    assert results["reference"]["num_images"] == 400
    assert results["extractor"] == "featnet.py:cifar10"
    assert "fid" not in results and results["fd"] > 0  # never an FID outside the FID Inception
    assert abs(results["kid"]["mean"]) < 0.01 and results["kid"]["subset_size"] == 300
    assert results["nearest"]["num_near_copies"] == 0 and len(results["nearest"]["matches"]) == 300
    assert pairs.is_file()
    if "afd" in results:  # OpenCV installed
        assert results["afd"]["rate"] > 0.8 and "lbpcascade_animeface" in results["afd"]["detector"]
    table = capsys.readouterr().out
    assert "FD " in table and "FID" not in table and "broken.png" in table


def test_fid_from_saved_statistics_equals_fid_from_images(tmp_path, face_sets, tiny_features):
    generated, real = face_sets
    options = ["--features", f"{tiny_features}:thumb8", "--no-progress"]
    stats = tmp_path / "real-stats.npz"
    assert main(["fid-stats", str(real), "--out", str(stats), *options]) == 0
    assert main(["fid", str(generated), str(stats), "--json", str(tmp_path / "a.json"), *options]) == 0
    assert main(["fid", str(generated), str(real), "--json", str(tmp_path / "b.json"), *options]) == 0
    assert main(["fid", str(generated), str(real), "--json", str(tmp_path / "c.json"), "--no-cache", *options]) == 0
    from_file, from_cache, from_images = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "abc")
    assert from_file["extractor"] == "tiny.py:thumb8"
    assert from_file["fd"] == pytest.approx(from_images["fd"], rel=1e-12)
    assert from_cache["fd"] == pytest.approx(from_images["fd"], rel=1e-12)
    assert [r["reference"]["statistics_from"] for r in (from_file, from_cache, from_images)] == [
        "file", "cache", "images"]  # fmt: skip


def test_eval_against_statistics_gives_the_distance_only(tmp_path, face_sets, tiny_features):
    generated, real = face_sets
    options = ["--features", f"{tiny_features}:thumb8", "--no-progress", "--afd", "off"]
    stats, report = tmp_path / "real.npz", tmp_path / "eval.json"
    assert main(["fid-stats", str(real), "--out", str(stats), *options[:3]]) == 0
    assert main(["eval", str(generated), str(stats), "--json", str(report), *options]) == 0
    results = json.loads(report.read_text())
    assert results["fd"] > 0 and "kid" not in results and "nearest" not in results
    assert results["reference"]["statistics_from"] == "file" and "statistics file" in results["notes"][0]


def test_fid_with_too_few_images_suggests_kid(tmp_path, face_sets, tiny_features, capsys):
    generated, real = face_sets
    few = tmp_path / "few"
    few.mkdir()
    for image in sorted(generated.glob("*.jpg"))[:50]:
        shutil.copy(image, few)
    options = ["--features", f"{tiny_features}:thumb8", "--no-progress"]
    assert main(["fid", str(few), str(real), *options]) == 1
    error = capsys.readouterr().err
    assert "too few" in error and "difflab kid" in error

    report = tmp_path / "eval.json"  # eval still reports KID, and why there is no FD
    assert main(["eval", str(few), str(real), "--afd", "off", "--json", str(report), *options]) == 0
    results = json.loads(report.read_text())
    assert results["fd"] is None and "KID" in results["fd_error"] and "kid" in results


def test_statistics_of_another_extractor_are_refused(tmp_path, face_sets, tiny_features, capsys):
    generated, real = face_sets
    stats = tmp_path / "thumb8-stats.npz"
    assert main(["fid-stats", str(real), "--out", str(stats), "--features", f"{tiny_features}:thumb8"]) == 0
    assert main(["fid", str(generated), str(stats), "--features", f"{tiny_features}:thumb4", "--no-progress"]) == 1
    assert "tiny.py:thumb8" in capsys.readouterr().err


def test_kid_and_nearest_need_images_not_statistics(tmp_path, face_sets):
    generated, _ = face_sets
    for command in (["kid"], ["nearest", "--out", str(tmp_path / "nn.png")]):
        with pytest.raises(SystemExit) as usage_error:
            main([*command, str(generated), str(tmp_path / "stats.npz")])
        assert usage_error.value.code == 2


def test_kid_command_reports_mean_and_spread(tmp_path, face_sets, tiny_features):
    generated, real = face_sets
    report = tmp_path / "kid.json"
    options = ["--features", f"{tiny_features}:thumb8", "--kid-subsets", "5", "--kid-subset-size", "100", "--no-progress"]
    assert main(["kid", str(generated), str(real), "--json", str(report), *options]) == 0
    kid = json.loads(report.read_text())["kid"]
    assert kid["num_subsets"] == 5 and kid["subset_size"] == 100 and kid["std"] > 0


def test_missing_inception_weights_fail_with_instructions(face_sets, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    generated, real = face_sets
    assert main(["fid", str(generated), str(real), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "--inception-weights" in error and "pt_inception-2015-12-05-6726825d.pth" in error


def test_afd_reports_the_rate_on_real_faces(tmp_path, face_sets, shared_data, capsys):
    pytest.importorskip("cv2", reason="AFD needs opencv-python-headless<5 (pip install 'difflab[afd]')")
    _, real = face_sets
    report = tmp_path / "afd.json"
    code = main(["afd", str(real), "--detector-weights", str(shared_data / "lbpcascade_animeface.xml"),
                 "--json", str(report), "--no-progress"])  # fmt: skip
    assert code == 0
    afd = json.loads(report.read_text())["afd"]
    assert afd["num_images"] == 400 and 0.8 < afd["rate"] < 0.97
    assert "AFD rate" in capsys.readouterr().out
