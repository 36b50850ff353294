from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose, RandFlipd, RandRotate90d
from torch.utils.data import DataLoader

from augmentor.data.dataset import H5Dataset, collate, mix, pretrain_then_finetune
from augmentor.data.intensity import denormalise, normalise
from augmentor.errors import AugmentorError


def test_sample_dict_is_normalised_from_the_file_window(tiny_file) -> None:
    dataset = H5Dataset(tiny_file(count=6))
    sample = dataset[4]
    assert set(sample) == {"image", "mask", "label", "source", "patient_id", "index"}
    assert sample["image"].shape == (1, 16, 16) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (1, 16, 16)
    assert float(sample["image"].min()) >= -1.0 and float(sample["image"].max()) <= 1.0
    assert int(sample["label"]) == 4 % 3
    assert sample["source"] == "real" and sample["patient_id"] == "p000"
    # lesion HU (10 + 40 * label) maps through the (-160, 240) window
    centre = float(sample["image"][0, 8, 8])
    assert centre == pytest.approx(float(normalise(np.float32(50.0), (-160.0, 240.0))), abs=1e-6)
    custom = H5Dataset(tiny_file("b.h5", count=6), window=(0.0, 100.0))
    assert float(custom[4]["image"][0, 8, 8]) == pytest.approx(0.0, abs=1e-6)


def test_window_round_trip() -> None:
    hu = np.array([-100.0, 0.0, 200.0])
    np.testing.assert_allclose(denormalise(normalise(hu, (-160.0, 240.0)), (-160.0, 240.0)), hu)


def test_normalise_takes_int16_tensors_and_leaves_its_input_alone() -> None:
    hu = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    as_float = hu.float()
    result = normalise(hu, (-160.0, 240.0))
    assert result.dtype == torch.float32 and torch.equal(result, normalise(as_float, (-160.0, 240.0)))
    assert torch.equal(as_float, hu.float())  # not modified in place
    expected = np.clip((hu.numpy().astype(np.float32) + 160.0) * np.float32(2.0 / 400.0) - 1.0, -1.0, 1.0)
    np.testing.assert_array_equal(result.numpy(), expected)


def test_batched_access_keeps_requested_order_negative_indices_and_range_errors(tiny_file) -> None:
    dataset = H5Dataset([tiny_file("a.h5", count=5), tiny_file("b.h5", count=4, seed=2)])
    batch = dataset.__getitems__([8, 0, -1, 5, 0])
    assert [sample["index"] for sample in batch] == [8, 0, -1, 5, 0]
    assert torch.equal(batch[2]["image"], dataset[8]["image"]) and torch.equal(batch[1]["image"], batch[4]["image"])
    assert batch[3]["patient_id"] == dataset.patient_ids()[5]
    with pytest.raises(IndexError, match="index 9 out of range for 9 samples"):
        dataset.__getitems__([1, 9])
    with pytest.raises(IndexError, match="index -10 out of range"):
        dataset[-10]


def test_monai_dictionary_transforms_move_image_and_mask_together(tiny_file) -> None:
    transform = Compose([RandFlipd(keys=["image", "mask"], prob=1.0, spatial_axis=1), RandRotate90d(keys=["image", "mask"], prob=1.0)])
    transform.set_random_state(seed=3)
    dataset = H5Dataset(tiny_file(count=6), transform=transform)
    plain = H5Dataset(dataset.files[0].path)
    for index in range(6):
        moved, original = dataset[index], plain[index]
        lesion_moved = moved["mask"][0] > 0
        assert lesion_moved.sum() == (original["mask"][0] > 0).sum()
        # the lesion's HU travelled with its mask
        assert torch.allclose(moved["image"][0][lesion_moved].mean(), original["image"][0][original["mask"][0] > 0].mean())


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_works_in_dataloader_workers(tiny_file, context: str) -> None:
    dataset = H5Dataset([tiny_file("a.h5", count=10), tiny_file("b.h5", count=7, seed=4)])
    pickle.dumps(dataset)  # crosses into spawn workers without an open handle
    loader = DataLoader(dataset, batch_size=4, shuffle=False, num_workers=2, multiprocessing_context=context, collate_fn=collate)
    batches = list(loader)
    labels = torch.cat([batch["label"] for batch in batches])
    np.testing.assert_array_equal(labels.numpy(), dataset.labels())
    assert batches[-1]["image"].shape == (1, 1, 16, 16)
    assert batches[0]["index"].tolist() == [0, 1, 2, 3]


def test_mix_draws_ratio_times_real_per_class(tiny_file) -> None:
    real = H5Dataset(tiny_file("real.h5", count=9))
    synthetic = H5Dataset(tiny_file("synthetic.h5", count=300, source="synthetic", seed=9))
    mixed = mix(real, synthetic, ratio=2, seed=0)
    assert len(mixed) == 9 + 18
    sources = [mixed[i]["source"] for i in range(len(mixed))]
    assert sources.count("synthetic") == 18
    synthetic_labels = [int(mixed[i]["label"]) for i in range(9, 27)]
    assert np.bincount(synthetic_labels).tolist() == [6, 6, 6]
    again = mix(real, synthetic, ratio=2, seed=0)
    assert [again[i]["index"] for i in range(27)] == [mixed[i]["index"] for i in range(27)]
    assert len(mix(real, synthetic, ratio=0)) == 9


def test_mix_refuses_different_classes(tiny_file) -> None:
    real = H5Dataset(tiny_file("real.h5"))
    lung = H5Dataset(tiny_file("lung.h5", class_names=("benign", "malignant")))
    with pytest.raises(AugmentorError, match="differ"):
        mix(real, lung, ratio=1)


def test_mix_names_the_classes_a_synthetic_pool_lacks(tiny_file) -> None:
    real = H5Dataset(tiny_file("real.h5", count=9))
    cysts_and_metastases = H5Dataset(tiny_file("synthetic.h5", count=2, source="synthetic"))  # labels 0, 1
    with pytest.raises(AugmentorError, match="no 'hemangioma' samples"):
        mix(real, cysts_and_metastases, ratio=1)
    assert len(mix(real, cysts_and_metastases, ratio=1, per_class=False)) == 18


def test_pretrain_then_finetune_schedule(tiny_file) -> None:
    real, synthetic = H5Dataset(tiny_file("r.h5")), H5Dataset(tiny_file("s.h5", source="synthetic"))
    stages = pretrain_then_finetune(synthetic, real, pretrain_epochs=3, finetune_epochs=5)
    assert [(stage.name, stage.epochs) for stage in stages] == [("pretrain-synthetic", 3), ("finetune-real", 5)]
    assert stages[0].dataset is synthetic and stages[1].dataset is real


def test_files_with_different_classes_cannot_share_a_dataset(tiny_file, tmp_path: Path) -> None:
    with pytest.raises(AugmentorError, match="classes"):
        H5Dataset([tiny_file("a.h5"), tiny_file("b.h5", class_names=("benign", "malignant"))])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_lazy_and_cached_reads_agree(tiny_file, context: str) -> None:
    path = tiny_file(count=11)
    lazy, cached = H5Dataset(path, cache=False), H5Dataset(path, cache=True)
    assert not lazy.cached and cached.cached
    order = [10, 3, 3, 0, 7]
    for a, b in zip(lazy.__getitems__(order), cached.__getitems__(order), strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"]) and a["index"] == b["index"]
    loader = DataLoader(cached, batch_size=4, num_workers=1, multiprocessing_context=context, collate_fn=collate)
    assert torch.equal(torch.cat([batch["image"] for batch in loader]), torch.stack([lazy[i]["image"] for i in range(11)]))
