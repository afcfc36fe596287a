"""Run folders that cannot be lost (issue 18): the run lock, crash-proof logs, --overwrite that
keeps foreign files, resume by folder identity, zip bombs, messages instead of tracebacks,
silent wrong values, the corrupt-checkpoint fallback, and the minor cases.

Everything runs on the CPU with real images from ../shared/data. Tests that need the lead's
wiring of these pieces into the training loop and model loading are in
test_reliability_wiring.py.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from difflab.cli.main import main
from difflab.errors import ConfigError, DataError
from difflab.training.checkpoint import (Checkpoint, check_parameter_count, check_state_dict,
                                         clean_orphaned_temp_files, count_parameters_without_allocating,
                                         estimate_unet_parameters, find_checkpoint, list_checkpoints,
                                         load_checkpoint, load_latest_readable, save_checkpoint,
                                         validate_checkpoint_meta)
from difflab.training.metrics_log import MetricsLog
from difflab.training.run_lock import LOCK_NAME, RunLock, check_not_locked, read_lock

TINY = ["--image-size", "16", "--channels", "16", "--dim-mults", "1,2", "--attn-resolutions", "8",
        "--timesteps", "50", "--batch-size", "8", "--workers", "0", "--max-images", "64", "--grid-images", "4",
        "--grid-sampler-steps", "2", "--warmup-steps", "2", "--no-progress"]


# ---- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def faces_zip(shared_data) -> Path:
    path = shared_data / "anime-faces-96px-2k.zip"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="module")
def faces_folder(faces_zip, tmp_path_factory) -> Path:
    """Twelve real images, extracted into a folder."""
    folder = tmp_path_factory.mktemp("faces")
    with zipfile.ZipFile(faces_zip) as archive:
        names = [n for n in archive.namelist() if n.lower().endswith((".jpg", ".png"))][:12]
        for index, name in enumerate(names):
            (folder / f"face{index:02d}{Path(name).suffix}").write_bytes(archive.read(name))
    return folder


def train_cli(data, out, *extra, steps=4, save_every=2) -> int:
    return main(["train", str(data), "--out", str(out), *TINY, "--steps", str(steps), "--save-every", str(save_every),
                 "--log-every", "1", *extra])


@pytest.fixture(scope="module")
def trained_run(faces_zip, tmp_path_factory) -> Path:
    """A tiny run on real faces: checkpoints at steps 2 and 4."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert train_cli(faces_zip, run) == 0
    return run


def copy_run(run: Path, target: Path) -> Path:
    shutil.copytree(run, target)
    (target / LOCK_NAME).unlink(missing_ok=True)
    return target


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def run_cli_expecting(capsys, argv, code) -> str:
    """main(argv) must end with exit code `code` and one error line (no traceback)."""
    try:
        result = main(argv)
    except SystemExit as exit_:  # ConfigError -> argparse's exit code 2
        result = exit_.code
    assert result == code
    return error_line(capsys)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def rewrite_checkpoint(source: Path, target: Path, tensors=None, metadata=None, drop=()) -> Path:
    """A copy of checkpoint `source` with tensors/metadata changed or keys dropped."""
    with safe_open(str(source), framework="pt") as handle:
        flat = {key: handle.get_tensor(key) for key in handle.keys()}
        meta = dict(handle.metadata())
    flat.update(tensors or {})
    meta.update(metadata or {})
    for key in drop:
        flat.pop(key, None)
        meta.pop(key, None)
    save_file(flat, str(target), metadata=meta)
    return target


# ---- 1. the run lock -------------------------------------------------------------------------------

def test_lock_is_exclusive_names_its_holder_and_is_released(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        record = read_lock(lock.path)
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname() and record["started"]
        with pytest.raises(DataError, match=rf"PID {os.getpid()} on host {socket.gethostname()}"):
            RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    with pytest.raises(RuntimeError):  # released on an exception too
        with RunLock(tmp_path / "run"):
            raise RuntimeError("boom")
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_lock_held_by_another_live_process_blocks(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from difflab.training.run_lock import RunLock\n"
        f"with RunLock({str(run)!r}):\n"
        "    print('locked', flush=True); sys.stdin.readline()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataError, match=rf"PID {holder.pid} on host"):
            RunLock(run).acquire()
        with pytest.raises(DataError, match=rf"PID {holder.pid}"):
            check_not_locked(run)  # what --overwrite and --resume check before touching anything
    finally:
        holder.communicate("\n", timeout=30)
    assert not (run / LOCK_NAME).exists()
    RunLock(run).acquire().release()


def test_stale_lock_of_a_dead_process_is_reclaimed_with_a_warning(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pid = dead_pid()
    (run / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "earlier"}))
    check_not_locked(run)  # a stale lock does not block
    with pytest.warns(RuntimeWarning, match=rf"stale lock .*process {pid} is no longer running"):
        with RunLock(run) as lock:
            assert read_lock(lock.path)["pid"] == os.getpid()


def test_lock_of_another_host_is_not_reclaimed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": "elsewhere.example", "started": "x"}))
    with pytest.raises(DataError, match="on host elsewhere.example"):
        RunLock(run).acquire()


def test_overwrite_refuses_a_run_in_use(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-00000002.safetensors").write_bytes(b"x")
    (run / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "now"}))
    line = run_cli_expecting(capsys, ["train", "shapes", "--out", str(run), "--overwrite", *TINY], 1)
    assert f"PID {os.getppid()}" in line and "in use" in line
    assert (run / "checkpoints" / "ckpt-00000002.safetensors").exists()  # nothing deleted


# ---- 2. crash-proof logs and full disks ---------------------------------------------------------------

def test_torn_last_line_is_dropped_and_reported_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    with pytest.warns(RuntimeWarning, match="dropped 1 incomplete line"):
        assert [r["step"] for r in MetricsLog(path).read()] == [1, 2, 3][:2]
    with pytest.warns(RuntimeWarning, match="dropped 1 incomplete line"):
        log = MetricsLog(path, resume_step=2)
    log.write({"step": 3, "loss": 0.3})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_a_write_after_a_torn_line_starts_on_a_line_of_its_own(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo')  # the disk filled up mid-line
    MetricsLog(path).write({"step": 3})
    with pytest.warns(RuntimeWarning):
        assert [r["step"] for r in MetricsLog(path).read()] == [1, 3]


def test_each_record_is_one_write_call(tmp_path, monkeypatch):
    calls = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: calls.append(bytes(data)) or real_write(fd, data))
    MetricsLog(tmp_path / "metrics.jsonl").write({"step": 1, "loss": 0.25})
    assert calls == [b'{"step": 1, "loss": 0.25}\n']


def test_full_disk_while_training_is_one_line_that_names_the_kept_checkpoint(faces_zip, tmp_path, monkeypatch, capsys):
    """The disk fills up after the step-2 checkpoint: one line naming what was kept, exit 1;
    after space is freed, --resume continues from that checkpoint."""
    real_write, calls = MetricsLog.write, []

    def filling_disk(self, record):
        calls.append(record)
        if record.get("step", 0) >= 3:
            with open(self.path, "a") as handle:  # half a line reaches the disk
                handle.write(json.dumps(record)[:9])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        real_write(self, record)

    monkeypatch.setattr(MetricsLog, "write", filling_disk)
    run = tmp_path / "run"
    assert train_cli(faces_zip, run, steps=6) == 1
    line = error_line(capsys)
    assert "No space left on device" in line and "ckpt-00000002.safetensors" in line and "--resume" in line
    monkeypatch.setattr(MetricsLog, "write", real_write)  # space freed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_cli(faces_zip, run, "--resume", steps=6) == 0
    assert any("incomplete line" in str(w.message) for w in caught)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert load_checkpoint(run).step == 6


def test_full_disk_while_sampling_leaves_no_partial_image_and_a_manifest(trained_run, tmp_path, monkeypatch, capsys):
    from PIL import Image
    real_save, saved = Image.Image.save, []

    def filling_disk(self, fp, format=None, **params):
        if len(saved) == 5:  # the sixth image: a few bytes, then the disk is full
            fp.write(b"\xff\xd8")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(fp)
        return real_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", filling_disk)
    out = tmp_path / "samples"
    line = run_cli_expecting(capsys, ["sample", str(trained_run), "-n", "8", "--batch-size", "4", "--steps", "2",
                                      "--out", str(out), "--no-progress"], 1)
    assert "No space left on device" in line and "5 complete image(s) were kept" in line
    files = sorted(p.name for p in out.iterdir())
    assert files == ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg", "difflab-sample.json"]  # no temp, no 0-byte file
    assert all((out / name).stat().st_size > 0 for name in files)
    manifest = json.loads((out / "difflab-sample.json").read_text())
    assert manifest["complete"] is False and manifest["images"] == [f"{i}.jpg" for i in range(1, 6)]


# ---- 3. --overwrite deletes only difflab's files -------------------------------------------------------

def test_overwrite_keeps_foreign_files_and_says_what_it_removed(faces_zip, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "samples" / "holiday.jpg").write_bytes(b"my photo")
    (run / "config.json").write_text("{}")
    (run / "notes.txt").write_text("mine")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "ckpt-00000007.safetensors").write_bytes(b"old")
    (run / "checkpoints" / "my-model.pt").write_bytes(b"mine")
    (run / "samples" / "step-00000007.png").write_bytes(b"old")
    line = run_cli_expecting(capsys, ["train", str(faces_zip), "--out", str(run), *TINY, "--steps", "2"], 2)
    assert "--overwrite" in line
    assert train_cli(faces_zip, run, "--overwrite", steps=2) == 0
    err = capsys.readouterr().err
    assert "removed 3 file(s)" in err and "ckpt-00000007.safetensors" in err and "samples/holiday.jpg" in err
    assert (run / "samples" / "holiday.jpg").read_bytes() == b"my photo"
    assert (run / "notes.txt").read_text() == "mine" and (run / "checkpoints" / "my-model.pt").exists()
    assert not (run / "checkpoints" / "ckpt-00000007.safetensors").exists()
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["ckpt-00000002.safetensors"]


def test_a_folder_of_foreign_files_only_is_not_a_run(tmp_path):
    from difflab.cli.train import _difflab_run_files
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "holiday.jpg").write_bytes(b"x")
    assert _difflab_run_files(tmp_path) == []


# ---- 4. --resume identifies the run by its folder --------------------------------------------------------

def test_resume_accepts_every_spelling_of_the_folder_and_a_moved_folder(trained_run, tmp_path, monkeypatch, faces_zip):
    from difflab.cli.main import build_parser
    from difflab.cli.train import resolve_config
    runs = tmp_path / "runs"
    copy_run(trained_run, runs / "t0")
    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    for spelling in ("runs/t0/", "./runs/t0", str(runs / "t0"), "runs//t0", "runs/../runs/t0"):
        args = parser.parse_args(["train", "--out", spelling, "--resume", "--steps", "6"])
        assert resolve_config(args).out == spelling
    monkeypatch.chdir(runs)  # another working directory
    assert resolve_config(parser.parse_args(["train", "--out", "t0", "--resume"])).channels == 16
    moved = shutil.move(str(runs / "t0"), str(tmp_path / "moved"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", "moved", "--resume", "--steps", "6", "--no-progress"]) == 0
    assert load_checkpoint(moved).step == 6
    assert json.loads((Path(moved) / "config.json").read_text())["out"] == "moved"  # the new location


def test_resume_still_refuses_a_changed_network(trained_run, tmp_path):
    from difflab.cli.main import build_parser
    from difflab.cli.train import resolve_config
    run = copy_run(trained_run, tmp_path / "run")
    args = build_parser().parse_args(["train", "--out", str(run), "--resume", "--channels", "32"])
    with pytest.raises(ConfigError, match="--channels 32 differs"):
        resolve_config(args)


def test_resume_with_a_corrupt_config_json_is_a_message(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path / "run")
    (run / "config.json").write_text('{"channels": 1')
    line = run_cli_expecting(capsys, ["train", "--out", str(run), "--resume", "--no-progress"], 1)
    assert "config.json is not readable JSON" in line


# ---- 5. sample --overwrite leaves exactly the new set; evaluation uses the manifest ------------------------

def test_sample_overwrite_leaves_exactly_the_new_set(trained_run, tmp_path, capsys):
    from difflab.metrics.evaluation import list_samples
    out = tmp_path / "S"
    common = ["--steps", "2", "--batch-size", "5", "--no-progress", "--out", str(out)]
    assert main(["sample", str(trained_run), "-n", "10", *common]) == 0
    (out / "mine.txt").write_text("not an image of difflab's")
    assert main(["sample", str(trained_run), "-n", "3", "--overwrite", *common]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["1.jpg", "2.jpg", "3.jpg", "difflab-sample.json", "grid.png",
                                                     "mine.txt"]
    assert [Path(ref.name).name for ref in list_samples(str(out))] == ["1.jpg", "2.jpg", "3.jpg"]


def test_evaluation_measures_the_manifest_list_not_stale_files(trained_run, tmp_path):
    from difflab.metrics.evaluation import list_samples
    out = tmp_path / "S"
    assert main(["sample", str(trained_run), "-n", "3", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    for index in range(4, 8):  # stale images of an earlier, larger run
        shutil.copy(out / "1.jpg", out / f"{index}.jpg")
    assert len(list_samples(str(out))) == 3


# ---- 6. zip bombs --------------------------------------------------------------------------------------

def _declare_size(archive: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size a zip member declares (local and central headers)."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as handle:
        info = handle.getinfo(member)
    local = info.header_offset
    data[local + 22:local + 26] = size.to_bytes(4, "little")
    central = data.index(b"PK\x01\x02" + bytes(data[data.index(b"PK\x01\x02") + 4:data.index(b"PK\x01\x02") + 6]))
    while True:  # find this member's central entry
        name_length = int.from_bytes(data[central + 28:central + 30], "little")
        if data[central + 46:central + 46 + name_length].decode() == member:
            break
        extra = int.from_bytes(data[central + 30:central + 32], "little")
        comment = int.from_bytes(data[central + 32:central + 34], "little")
        central += 46 + name_length + extra + comment
    data[central + 24:central + 28] = size.to_bytes(4, "little")
    archive.write_bytes(bytes(data))


def test_zip_member_declaring_a_huge_size_is_skipped_unread(faces_zip, tmp_path, monkeypatch):
    from difflab.data import files
    from difflab.data.dataset import ImageDataset
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(faces_zip) as source, zipfile.ZipFile(archive, "w") as target:
        for name in [n for n in source.namelist() if n.endswith((".jpg", ".png"))][:9]:
            target.writestr(Path(name).name, source.read(name))
        target.writestr("bomb.jpg", b"\0" * 1000, compress_type=zipfile.ZIP_DEFLATED)
    _declare_size(archive, "bomb.jpg", 3 * 2**30)
    read = []
    real_read = zipfile.ZipFile.read
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda self, name, pwd=None: read.append(name) or real_read(self, name, pwd))
    dataset = ImageDataset(str(archive), image_size=16, channels="3", progress=False)
    assert len(dataset) == 9 and "bomb.jpg" not in read
    assert any("bomb.jpg" in label and "zip bomb" in reason for label, reason in dataset.bad_files)
    with zipfile.ZipFile(archive) as handle:
        with pytest.raises(ValueError, match="3,072 MiB"):
            files.check_zip_member(handle.getinfo("bomb.jpg"))


def test_zip_member_with_an_absurd_compression_ratio_is_skipped(tmp_path):
    from difflab.data.files import ImageRef, read_bytes
    archive = tmp_path / "ratio.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as target:
        target.writestr("zeros.png", b"\0" * (20 * 2**20))
    with pytest.raises(ValueError, match="expands .*-fold"):
        read_bytes(ImageRef(str(archive), "zeros.png"))


# ---- 7. messages, not tracebacks ---------------------------------------------------------------------------

def test_divergence_is_one_line_with_exit_code_1(faces_zip, tmp_path, monkeypatch, capsys):
    from difflab.diffusion.losses import DiffusionLoss
    real_call = DiffusionLoss.__call__
    calls = []

    def diverging(self, model, x0, generator=None):  # the loss turns NaN from the third step on
        calls.append(1)
        loss = real_call(self, model, x0, generator)
        return loss * float("nan") if len(calls) > 2 else loss

    monkeypatch.setattr(DiffusionLoss, "__call__", diverging)
    run = tmp_path / "run"
    line = run_cli_expecting(capsys, ["train", str(faces_zip), "--out", str(run), *TINY, "--steps", "6",
                                      "--save-every", "2", "--log-every", "1"], 1)
    assert "NaN or infinite" in line and "ckpt-00000002.safetensors" in line
    assert load_checkpoint(run).step == 2


def test_read_only_out_and_out_that_is_a_file(faces_zip, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    line = run_cli_expecting(capsys, ["train", str(faces_zip), "--out", str(a_file), *TINY], 2)
    assert "is a file, not a folder" in line
    line = run_cli_expecting(capsys, ["train", str(faces_zip), "--out", str(a_file / "run"), *TINY], 2)
    assert "is a file" in line
    import tempfile
    read_only = tmp_path / "ro"
    read_only.mkdir()

    def refuse(*args, **kwargs):  # a read-only file system (root ignores chmod, so simulate EROFS)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    line = run_cli_expecting(capsys, ["train", str(faces_zip), "--out", str(read_only / "run"), *TINY], 1)
    assert "Read-only file system" in line and "choose another --out" in line


def test_storage_errors_anywhere_in_train_are_one_line(faces_zip, tmp_path, monkeypatch, capsys):
    from difflab.cli import train as train_module
    monkeypatch.setattr(train_module, "check_out_folder", lambda *a: (_ for _ in ()).throw(
        OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "run" / "config.json"))))
    line = run_cli_expecting(capsys, ["train", str(faces_zip), "--out", str(tmp_path / "run"), *TINY], 1)
    assert "Read-only file system" in line and "no checkpoint had been written yet" in line


@pytest.mark.parametrize("name, text, expected", [
    ("bad.toml", "steps = [1,\n", "is not valid TOML"),
    ("bad.yaml", "steps: [1, 2\nlr: 3\n", "is not valid YAML"),
    ("list.yaml", "- 1\n- 2\n", "must hold a table"),
    ("table.toml", "train = 3\n", "must hold options"),
])
def test_malformed_config_files_are_messages(tmp_path, capsys, name, text, expected):
    config = tmp_path / name
    config.write_text(text)
    line = run_cli_expecting(capsys, ["train", "shapes", "--out", str(tmp_path / "run"), "--config", str(config)], 2)
    assert expected in line and str(config) in line


def test_corrupt_latest_json_falls_back_to_scanning(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    for text in ('["x"]', '{"checkpoint": 5}', '{"checkpoint": "../../etc/passwd"}', "{not json", '"x"'):
        (run / "checkpoints" / "latest.json").write_text(text)
        with pytest.warns(RuntimeWarning, match="latest.json is corrupt"):
            assert find_checkpoint(run).name == "ckpt-00000004.safetensors"


def test_checkpoint_validation_helpers(trained_run, tmp_path):
    from difflab.build import build_network
    from difflab.config import TrainConfig
    checkpoint = load_checkpoint(trained_run)
    validate_checkpoint_meta(checkpoint, groups=("ema", "model"), meta_keys=("image_channels",))
    with pytest.raises(DataError, match="holds no 'ema' weights"):
        validate_checkpoint_meta(Checkpoint(step=1, config={}, tensors={"model": {"a": torch.ones(1)}}),
                                 groups=("ema",))
    with pytest.raises(DataError, match="does not record image_channels"):
        validate_checkpoint_meta(Checkpoint(step=1, config={}, meta={}), meta_keys=("image_channels",))
    config = TrainConfig.from_dict(checkpoint.config)
    network = build_network(config, 3).to("meta")
    check_state_dict(network, checkpoint.tensors["ema"], "ckpt")
    tensors = dict(checkpoint.tensors["ema"])
    name = next(iter(tensors))
    with pytest.raises(DataError, match="1 missing"):
        check_state_dict(network, {k: v for k, v in tensors.items() if k != name}, "ckpt")
    with pytest.raises(DataError, match="wrong shape"):
        check_state_dict(network, {**tensors, name: torch.zeros(3, 3, 3)}, "ckpt")
    with pytest.raises(DataError, match="1 unexpected"):
        check_state_dict(network, {**tensors, "extra.weight": torch.zeros(1)}, "ckpt")
    count = count_parameters_without_allocating(lambda: build_network(config, 3))
    assert count == sum(p.numel() for p in build_network(config, 3).parameters())
    assert 0.5 * count < estimate_unet_parameters(16, (1, 2), config.res_blocks) < 1.5 * count
    absurd = TrainConfig.from_dict({**checkpoint.config, "channels": 64_000, "attn_resolutions": ""})
    huge = count_parameters_without_allocating(lambda: build_network(absurd, 3))  # nothing allocated
    with pytest.raises(DataError, match="parameters"):
        check_parameter_count(huge, "ckpt")


@pytest.mark.parametrize("case", ["no-step", "bad-step", "config-not-json", "config-a-list", "meta-not-json",
                                  "not-difflab", "truncated", "tensor-without-group"])
def test_malformed_checkpoint_files_are_data_errors(trained_run, tmp_path, case):
    source = find_checkpoint(trained_run)
    target = tmp_path / "ckpt-00000004.safetensors"
    if case == "truncated":
        target.write_bytes(source.read_bytes()[:5000])
    elif case == "tensor-without-group":
        rewrite_checkpoint(source, target, tensors={"nogroup": torch.zeros(1)})
    else:
        changes = {"no-step": dict(drop=("step",)), "bad-step": dict(metadata={"step": "four"}),
                   "config-not-json": dict(metadata={"config": "{oops"}),
                   "config-a-list": dict(metadata={"config": "[1, 2]"}),
                   "meta-not-json": dict(metadata={"meta": "{"}),
                   "not-difflab": dict(metadata={"format": "other/1"})}[case]
        rewrite_checkpoint(source, target, **changes)
    with pytest.raises(DataError, match=str(target.name)):
        load_checkpoint(target)


def test_nan_weights_fail_sampling_with_a_message(trained_run, tmp_path, capsys):
    source = find_checkpoint(trained_run)
    with safe_open(str(source), framework="pt") as handle:
        key = next(k for k in handle.keys() if k.startswith("ema.") and handle.get_tensor(k).is_floating_point())
        value = handle.get_tensor(key)
    target = rewrite_checkpoint(source, tmp_path / "ckpt-00000004.safetensors",
                                tensors={key: torch.full_like(value, float("nan"))})
    out = tmp_path / "S"
    line = run_cli_expecting(capsys, ["sample", str(target), "-n", "2", "--steps", "2", "--out", str(out),
                                      "--no-progress"], 1)
    assert "NaN or infinite weights" in line
    assert not out.exists() or not any(out.glob("*.jpg"))


def test_features_file_errors_are_messages(tmp_path, faces_folder, capsys):
    from difflab.metrics.evaluation import measure
    from difflab.metrics.extractors import load_extractor
    (tmp_path / "syntax.py").write_text("def make(:\n    pass\n")
    (tmp_path / "raises.py").write_text("def make():\n    raise RuntimeError('no weights here')\n")
    (tmp_path / "imports.py").write_text("import not_a_module_anywhere\n")
    (tmp_path / "nan.py").write_text(
        "import torch\n"
        "class Net:\n"
        "    def features(self, images):\n"
        "        return torch.full((len(images), 4), float('nan'))\n"
        "def make():\n    return Net()\n")
    with pytest.raises(ConfigError, match="syntax error on line 1"):
        load_extractor(f"{tmp_path / 'syntax.py'}:make")
    with pytest.raises(ConfigError, match="make\\(\\) failed: RuntimeError: no weights here"):
        load_extractor(f"{tmp_path / 'raises.py'}:make")
    with pytest.raises(ConfigError, match="importing .* failed: ModuleNotFoundError"):
        load_extractor(f"{tmp_path / 'imports.py'}:make")
    with pytest.raises(DataError, match="NaN or infinite for 12 of 12"):
        measure(str(faces_folder), load_extractor(f"{tmp_path / 'nan.py'}:make"), progress=False)
    # The same through the command line: one line, no traceback.
    line = run_cli_expecting(capsys, ["fid", str(faces_folder), str(faces_folder), "--features",
                                      f"{tmp_path / 'nan.py'}:make", "--device", "cpu"], 1)
    assert "NaN" in line
    line = run_cli_expecting(capsys, ["fid", str(faces_folder), str(faces_folder), "--features",
                                      f"{tmp_path / 'syntax.py'}:make", "--device", "cpu"], 2)
    assert "syntax error" in line


# ---- 8. silent wrong values ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, expected", [
    ("a.yaml", "batch_size: 8.5\n", "--batch-size expects a whole number (no fraction)"),
    ("b.yaml", "batch_size: true\n", "--batch-size expects a whole number, not true/false"),
    ("c.toml", "steps = 1e400\n", "--steps expects a finite whole number"),
    ("d.toml", "lr = inf\n", "--lr expects a finite number"),
    ("e.yaml", "hflip: 1\n", "--hflip expects true or false"),
    ("f.yaml", "hflip: maybe\n", "--hflip expects true or false"),
    ("g.yaml", "lr: .nan\n", "--lr expects a finite number"),
])
def test_config_values_are_not_silently_changed(tmp_path, capsys, name, text, expected):
    config = tmp_path / name
    config.write_text(text)
    line = run_cli_expecting(capsys, ["train", "shapes", "--out", str(tmp_path / "run"), "--config", str(config)], 2)
    assert expected in line


def test_config_values_that_are_fine_still_pass():
    from difflab.config import TrainConfig
    config = TrainConfig.from_dict({"batch_size": 8.0, "steps": "20", "hflip": "no", "lr": 1, "compile": False,
                                    "dim_mults": [1, 2], "image_channels": 3, "data": "shapes", "out": "x"})
    assert (config.batch_size, config.steps, config.hflip, config.lr, config.compile, config.dim_mults,
            config.image_channels) == (8, 20, False, 1.0, "off", "1,2", "3")


@pytest.mark.parametrize("option, value", [("--steps", "0"), ("--steps", "-3"), ("--eta", "nan"), ("--eta", "inf"),
                                           ("--eta", "-1")])
def test_sample_rejects_zero_steps_and_non_finite_eta(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exit_:
        main(["sample", str(tmp_path / "no-run"), "--out", str(tmp_path / "S"), option, value])
    assert exit_.value.code == 2
    assert option in capsys.readouterr().err


def test_nan_statistics_are_refused(tmp_path, faces_folder, capsys):
    from difflab.metrics.statistics import FeatureStatistics
    (tmp_path / "feat.py").write_text(
        "import torch\nclass Net:\n    def features(self, images):\n"
        "        return images.mean(dim=(2, 3))\ndef make():\n    return Net()\n")
    spec = f"{tmp_path / 'feat.py'}:make"
    stats = tmp_path / "stats.npz"
    assert main(["fid-stats", str(faces_folder), "--out", str(stats), "--features", spec, "--device", "cpu",
                 "--no-cache"]) == 0
    stored = dict(np.load(stats))
    stored["mu"] = np.full_like(stored["mu"], np.nan)
    np.savez(tmp_path / "nan.npz", **stored)
    with pytest.raises(DataError, match="NaN or infinite"):
        FeatureStatistics.load(tmp_path / "nan.npz")
    line = run_cli_expecting(capsys, ["fid", str(tmp_path / "nan.npz"), str(stats), "--features", spec,
                                      "--device", "cpu"], 1)
    assert "NaN or infinite" in line


# ---- 9. the newest checkpoint is corrupt: fall back ------------------------------------------------------------

def test_truncated_newest_checkpoint_falls_back_with_a_warning(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path / "run")
    newest = run / "checkpoints" / "ckpt-00000004.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="ckpt-00000004.safetensors is not a readable checkpoint"):
        checkpoint = load_latest_readable(run)
    assert checkpoint.step == 2 and newest.exists()  # the bad file is kept
    out = tmp_path / "S"
    with pytest.warns(RuntimeWarning, match="ckpt-00000004.safetensors"):
        assert main(["sample", str(run), "-n", "2", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "difflab-sample.json").read_text())["step"] == 2
    for bad in list_checkpoints(run / "checkpoints"):
        bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match="none of the 2 checkpoint"):
        load_checkpoint(run)


def test_a_checkpoint_file_given_by_name_does_not_fall_back(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    newest = run / "checkpoints" / "ckpt-00000004.safetensors"
    newest.write_bytes(b"garbage")
    with pytest.raises(DataError, match="ckpt-00000004"):
        load_checkpoint(newest)


# ---- 10. minor -------------------------------------------------------------------------------------------------

def test_orphaned_temp_files_of_dead_processes_are_removed(tmp_path):
    dead, alive = dead_pid(), os.getppid()
    orphan = tmp_path / f".ckpt-00000005.safetensors.{dead}.tmp"
    in_progress = tmp_path / f".ckpt-00000006.safetensors.{alive}.tmp"
    own = tmp_path / f".latest.json.{os.getpid()}.tmp"
    keep = tmp_path / "ckpt-00000004.safetensors"
    for path in (orphan, in_progress, own, keep):
        path.write_bytes(b"x")
    assert clean_orphaned_temp_files(tmp_path) == [orphan]
    assert not orphan.exists() and in_progress.exists() and own.exists() and keep.exists()


def test_symlinked_sub_folders_are_followed_without_looping(faces_folder, tmp_path):
    from difflab.data.files import list_images
    root = tmp_path / "data"
    (root / "own").mkdir(parents=True)
    shutil.copy(next(faces_folder.glob("face00*")), root / "own")
    (root / "linked").symlink_to(faces_folder, target_is_directory=True)
    (root / "own" / "loop").symlink_to(root, target_is_directory=True)  # a loop back to the top
    (root / "twice").symlink_to(faces_folder, target_is_directory=True)  # the same folder again
    names = [Path(ref.name).name for ref in list_images(root)]
    assert len(names) == 1 + 12 and len(set(Path(ref.name).resolve() for ref in list_images(root))) == 13


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_checkpoints_are_written_with_the_users_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path, Checkpoint(step=1, config={}, tensors={"model": {"w": torch.ones(2)}}))
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode
    assert (tmp_path / "latest.json").stat().st_mode & 0o777 == mode


# ---- kill -9 at random moments, then resume ---------------------------------------------------------------------

@pytest.mark.slow
def test_kill_at_random_moments_then_resume(faces_zip, tmp_path):
    """Kill training (SIGKILL) at seeded random moments, several times, resuming in between:
    the latest checkpoint always loads, the metrics log stays readable, and the run completes.
    Bounded: three kills in all and one final run per seed, of a 16-step tiny configuration."""
    import random
    import signal
    import time
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for seed in (1, 2):
        rng = random.Random(seed)
        run = tmp_path / f"run{seed}"
        command = [sys.executable, "-m", "difflab.cli.main", "train", str(faces_zip), "--out", str(run), *TINY,
                   "--steps", "16", "--save-every", "2", "--log-every", "1", "--keep-checkpoints", "2"]
        for attempt in range(2 if seed == 1 else 1):
            resume = ["--resume"] if (run / "config.json").exists() else []
            process = subprocess.Popen(command + resume, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            # Wait until this attempt has written something, then kill at a random moment after it.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and process.poll() is None and not list(run.glob("checkpoints/*")):
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.5))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()
            if list_checkpoints(run / "checkpoints"):
                checkpoint = load_checkpoint(run)  # whatever was killed, the latest checkpoint loads
                assert {"model", "ema", "optimizer", "rng"} <= set(checkpoint.tensors)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                MetricsLog(run / "metrics.jsonl").read()  # readable, torn line or not
        resume = ["--resume"] if (run / "config.json").exists() else []
        final = subprocess.run(command + resume, env=env, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr[-2000:]
        assert load_checkpoint(run).step == 16
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            steps = [record["step"] for record in MetricsLog(run / "metrics.jsonl").read()]
        assert steps == sorted(set(steps)) and steps[-1] == 16
