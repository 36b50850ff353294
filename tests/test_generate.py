from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from augmentor.data.reader import H5File, read_info
from augmentor.errors import AugmentorError
from augmentor.generate import GROUP, generate, parse_class_requests
from augmentor.models.card import save_model
from augmentor.models.dcgan import ConditionalDCGANGenerator
from cli import app

runner = CliRunner()
CLASSES = ["cyst", "metastasis", "hemangioma"]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A tiny (untrained, seeded) generator saved as a model directory."""
    torch.manual_seed(0)
    network = ConditionalDCGANGenerator(num_classes=3, latent_dim=8, image_size=16, base_channels=4, embedding_dim=4)
    with torch.no_grad():  # DCGAN's N(0, 0.02) init gives near-constant output: widen it so samples differ
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.4)
    folder = tmp_path / "tiny-liver"
    save_model(
        folder,
        network.eval(),
        {"class_names": CLASSES, "hu_window": [-160.0, 240.0], "algorithm": "cgan",
         "training_data": {"sha256": "ab" * 32, "patients_sha256": "cd" * 32, "path": "train.h5"}},
        dtype=torch.float32,
    )
    return folder


def test_generated_file_is_labelled_synthetic_with_provenance(model_dir: Path, tmp_path: Path) -> None:
    out = generate(["metastasis", "cyst=3"], 5, tmp_path / "s.h5", model=model_dir, seed=7, progress=False)
    info = read_info(out)
    assert info.num_samples == 8
    assert info.source.value == "synthetic"
    assert info.class_names == tuple(CLASSES)
    assert info.hu_window == (-160.0, 240.0)
    assert info.provenance["seed"] == 7
    assert info.provenance["model"]["name"] == "tiny-liver"
    assert info.provenance["model"]["trained_on_sha256"] == "ab" * 32
    images, masks, labels = H5File(out).read(list(range(8)))
    assert labels.tolist() == [1] * 5 + [0] * 3
    assert images.dtype == np.int16 and images.min() >= -160 and images.max() <= 240
    assert set(np.unique(masks)) <= {0, 1}


def test_same_seed_same_bytes_for_any_batch_size_and_shards(model_dir: Path, tmp_path: Path) -> None:
    count = GROUP + 37  # crosses a latent block boundary
    whole = H5File(generate("hemangioma", count, tmp_path / "a.h5", model=model_dir, seed=3, batch_size=1024, progress=False))
    small = H5File(generate("hemangioma", count, tmp_path / "b.h5", model=model_dir, seed=3, batch_size=50, progress=False))
    first = H5File(generate("hemangioma", 100, tmp_path / "c.h5", model=model_dir, seed=3, progress=False))
    rest = H5File(generate("hemangioma", count - 100, tmp_path / "d.h5", model=model_dir, seed=3, start=100, progress=False))
    everything = list(range(count))
    whole_images, whole_masks, _ = whole.read(everything)
    np.testing.assert_array_equal(small.read(everything)[0], whole_images)
    np.testing.assert_array_equal(np.concatenate([first.read(list(range(100)))[0], rest.read(list(range(count - 100)))[0]]), whole_images)
    np.testing.assert_array_equal(np.concatenate([first.read(list(range(100)))[1], rest.read(list(range(count - 100)))[1]]), whole_masks)
    other = H5File(generate("hemangioma", 4, tmp_path / "e.h5", model=model_dir, seed=4, progress=False))
    assert not np.array_equal(other.read([0, 1, 2, 3])[0], whole_images[:4])
    # samples differ from each other (the latents are drawn per sample)
    assert len({whole_images[i].tobytes() for i in range(20)}) == 20


def test_zero_samples_are_refused_in_one_line(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty.h5"
    for arguments, message in (
        (["--class", "cyst", "--n", "0"], "error: --n must be at least 1, got 0"),
        (["--class", "all", "--n", "0"], "error: --n must be at least 1, got 0"),
        (["--class", "cyst=0"], "error: --class 'cyst=0': count must be at least 1"),
        (["--class", "cyst=2", "--class", "metastasis=0"], "error: --class 'metastasis=0': count must be at least 1"),
    ):
        result = runner.invoke(app, ["generate", *arguments, "--model", str(model_dir), "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert result.output == message + "\n"
        assert list(tmp_path.iterdir()) == [model_dir]
    with pytest.raises(AugmentorError, match="--n must be at least 1"):
        generate("cyst", 0, out, model=model_dir, progress=False)


def test_class_requests() -> None:
    requests = parse_class_requests(["all"], 4, CLASSES)
    assert [(r.name, r.label, r.count) for r in requests] == [("cyst", 0, 4), ("metastasis", 1, 4), ("hemangioma", 2, 4)]
    with pytest.raises(AugmentorError, match=r"unknown class 'metastasys' \(did you mean 'metastasis'\?\); valid: cyst, metastasis, hemangioma"):
        parse_class_requests(["metastasys"], 1, CLASSES)
    with pytest.raises(AugmentorError, match="requested twice"):
        parse_class_requests(["cyst", "cyst=2"], 1, CLASSES)
    with pytest.raises(AugmentorError, match="give --n"):
        parse_class_requests(["cyst"], None, CLASSES)


def test_zoo_resolves_classes_and_reports_bad_ones(model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "tiny-liver").symlink_to(model_dir)
    monkeypatch.setenv("AUGMENTOR_HOME", str(home))
    monkeypatch.setattr("augmentor.zoo.SHIPPED_DIR", tmp_path / "no-shipped-models")
    out = tmp_path / "m.h5"
    result = runner.invoke(app, ["generate", "--class", "metastasis", "--n", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert read_info(out).provenance["model"]["name"] == "tiny-liver"
    unknown = runner.invoke(app, ["generate", "--class", "lymphoma", "--n", "3", "--out", str(tmp_path / "x.h5")])
    assert unknown.exit_code == 2
    assert unknown.output.strip() == "error: unknown class 'lymphoma'; valid classes: cyst, hemangioma, metastasis"
    assert not (tmp_path / "x.h5").exists()
    listing = runner.invoke(app, ["models"])
    assert listing.exit_code == 0 and "tiny-liver" in listing.output and "cyst, metastasis, hemangioma" in listing.output


def test_existing_output_and_corrupt_weights_are_one_line_errors(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    generate("cyst", 2, out, model=model_dir, progress=False)
    before = out.read_bytes()
    again = runner.invoke(app, ["generate", "--class", "cyst", "--n", "2", "--model", str(model_dir), "--out", str(out)])
    assert again.exit_code == 2 and "exists; pass --overwrite" in again.output
    assert out.read_bytes() == before
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    corrupt = runner.invoke(app, ["generate", "--class", "cyst", "--n", "2", "--model", str(model_dir), "--out", str(tmp_path / "y.h5")])
    assert corrupt.exit_code == 2
    assert "does not match the card" in corrupt.output and corrupt.output.count("\n") == 1
    assert not (tmp_path / "y.h5").exists()


def test_kill_9_during_generate_leaves_no_file(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed.h5"
    script = textwrap.dedent(
        f"""
        import augmentor.generate as g
        original = g.SampleStream.group
        def announce(self, label, block):
            if block == 2:
                print("writing", flush=True)
            return original(self, label, block)
        g.SampleStream.group = announce
        g.generate("cyst", 10_000_000, {str(out)!r}, model={str(model_dir)!r}, batch_size=256, progress=False)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "writing"
    time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists()
    (left,) = tmp_path.glob(".killed.h5.*.tmp")  # a killed process cannot clean up after itself
    # the next run writing the same file removes it
    result = runner.invoke(app, ["generate", "--class", "cyst", "--n", "3", "--model", str(model_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not left.exists() and not list(tmp_path.glob(".killed.h5.*"))


def test_shard_pieces_split_the_class_sequence_in_order() -> None:
    from augmentor.generate import ClassRequest, shard_pieces

    requests = [ClassRequest("cyst", 0, 5), ClassRequest("hemangioma", 2, 4)]
    parts = shard_pieces(requests, 10, 3)
    assert parts == [[(0, 10, 13)], [(0, 13, 15), (2, 10, 11)], [(2, 11, 14)]]
    with pytest.raises(AugmentorError, match="more than the 9 samples"):
        shard_pieces(requests, 0, 10)


def _read_all(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    file = H5File(path)
    return file.read(list(range(file.info.num_samples)))


def test_local_shards_reproduce_the_single_process_file_exactly(model_dir: Path, tmp_path: Path) -> None:
    classes = ["metastasis=300", "cyst=7"]  # the shard boundary falls inside a latent block of metastases
    single = generate(classes, None, tmp_path / "single.h5", model=model_dir, seed=5, progress=False)
    result = runner.invoke(app, ["generate", *(f"--class={c}" for c in classes), "--model", str(model_dir), "--seed", "5",
                                 "--shards", "2", "--out", str(tmp_path / "sharded.h5")])
    assert result.exit_code == 0, result.output
    assert "307 synthetic samples" in result.output
    assert sorted(p.name for p in tmp_path.glob("sharded.shard-*")) == ["sharded.shard-000-of-002.h5", "sharded.shard-001-of-002.h5"]
    for expected, got in zip(_read_all(single), _read_all(tmp_path / "sharded.h5"), strict=True):
        np.testing.assert_array_equal(got, expected)
    shards = read_info(tmp_path / "sharded.h5").provenance["shards"]
    assert [shard["provenance"]["details"]["shard"]["samples"] for shard in shards] == [
        [["metastasis", 0, 153]], [["metastasis", 153, 300], ["cyst", 0, 7]]
    ]


def _generate_as_rank(rank: int, port: int, model: Path, out: Path) -> None:
    from augmentor.training.distributed import environment_world

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    generate(["hemangioma=260", "cyst=3"], None, out, model=model, seed=5, progress=False, world=environment_world())


def test_torchrun_ranks_write_one_shard_each_and_rank_zero_joins(model_dir: Path, tmp_path: Path) -> None:
    """Forked with the environment torchrun gives its workers (2 ranks, gloo)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = torch.multiprocessing.get_context("fork")
    ranks = [context.Process(target=_generate_as_rank, args=(rank, port, model_dir, tmp_path / "ranks.h5")) for rank in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)
        if process.is_alive():
            process.kill()
    assert [process.exitcode for process in ranks] == [0, 0]
    single = generate(["hemangioma=260", "cyst=3"], None, tmp_path / "single.h5", model=model_dir, seed=5, progress=False)
    assert read_info(tmp_path / "ranks.h5").num_samples == 263
    for expected, got in zip(_read_all(single), _read_all(tmp_path / "ranks.h5"), strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("arguments", "fragment"), [(["--n", "3", "--shards", "0"], "--shards must be at least 1"),
                                                     (["--n", "3", "--shards", "4"], "--shards 4 is more than the 3 samples")])
def test_bad_shard_counts_are_refused_in_one_line(arguments: list[str], fragment: str, model_dir: Path, tmp_path: Path) -> None:
    from tests.one_line import assert_one_line_error

    result = runner.invoke(app, ["generate", "--class", "cyst", "--model", str(model_dir), "--out", str(tmp_path / "s.h5"), *arguments])
    assert_one_line_error(result, fragment)
    assert list(tmp_path.glob("s*.h5")) == []
