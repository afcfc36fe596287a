"""The user's path through the command line, on real images from ../shared/data."""
import json

import pytest
from PIL import Image

from difflab.cli.main import main
from difflab.training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shared_data):
    run = tmp_path_factory.mktemp("e2e") / "anime"
    code = main(["train", str(shared_data / "anime-faces-96px-2k.zip"), "--out", str(run), "--image-size", "32",
                 "--channels", "16", "--dim-mults", "1,2", "--attn-resolutions", "16", "--res-blocks", "1",
                 "--timesteps", "50", "--batch-size", "16", "--steps", "6", "--save-every", "3",
                 "--grid-images", "4", "--grid-sampler-steps", "3", "--max-images", "200", "--no-progress",
                 "--workers", "0", "--rotate-degrees", "5", "--jitter", "0.1"])
    assert code == 0
    return run


def test_train_writes_the_run_folder(trained_run):
    assert load_checkpoint(trained_run).step == 6
    assert (trained_run / "samples" / "step-00000006.png").is_file()
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records][-1] == 6 and all(r["loss"] > 0 for r in records)
    assert Image.open(trained_run / "loss.png").size[0] > 100


@pytest.mark.parametrize("sampler,extra", [("ddim", ["--steps", "5"]), ("ddpm", []),
                                           ("dpmpp-2m", ["--steps", "5", "--eta", "1"])])
def test_sample_writes_numbered_images_and_a_grid(trained_run, tmp_path, sampler, extra):
    out = tmp_path / f"submission-{sampler}"
    assert main(["sample", str(trained_run), "-n", "10", "--batch-size", "4", "--sampler", sampler, *extra,
                 "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted(f"{i}.jpg" for i in range(1, 11))
    image = Image.open(out / "7.jpg")
    assert image.size == (32, 32) and image.mode == "RGB"
    assert Image.open(out / "grid.png").size[0] > 32
    manifest = json.loads((out / "difflab-sample.json").read_text())
    assert manifest["num_images"] == 10 and manifest["previews"] == ["grid.png"]
    label = {"ddim": "DDIM-5", "ddpm": f"DDPM-{json.loads((trained_run / 'config.json').read_text())['timesteps']}",
             "dpmpp-2m": "DPM-Solver++(2M)-5"}[sampler]
    assert manifest["sampler"] == label


def test_sample_is_reproducible_and_refuses_to_overwrite(trained_run, tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert main(["sample", str(trained_run), "-n", "3", "--steps", "4", "--seed", "7", "--format", "png",
                     "--out", str(out), "--no-progress"]) == 0
    assert (first / "2.png").read_bytes() == (second / "2.png").read_bytes()
    with pytest.raises(SystemExit):
        main(["sample", str(trained_run), "-n", "3", "--steps", "4", "--out", str(first), "--no-progress"])
    assert "--overwrite" in capsys.readouterr().err
    assert main(["sample", str(trained_run), "-n", "3", "--steps", "4", "--out", str(first), "--overwrite",
                 "--no-progress"]) == 0


def test_sample_from_a_checkpoint_file(trained_run, tmp_path):
    checkpoint = trained_run / "checkpoints" / "ckpt-00000003.safetensors"
    assert main(["sample", str(checkpoint), "-n", "2", "--steps", "3", "--out", str(tmp_path / "s"),
                 "--no-progress"]) == 0
    assert (tmp_path / "s" / "2.jpg").is_file()
