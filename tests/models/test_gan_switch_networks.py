"""The network switches of the mode-collapse study (issue #13): each does what it says, the defaults are the
original networks (a card that predates the switches builds them), and the shipped models make fixed bytes."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from augmentor.data.reader import H5File
from augmentor.errors import AugmentorError
from augmentor.generate import SampleStream, generate, latent_block
from augmentor.models.card import load_generator, save_model
from augmentor.models.dcgan import (
    ConditionalDCGANGenerator,
    EmbeddingInit,
    MaskOutput,
    MinibatchStandardDeviation,
    NoiseInjection,
    ProjectionDiscriminator,
    Upsample,
    _mix32,
    _pixel_uniforms,
    fold_resize_upsampling,
    latent_noise,
)
from augmentor.models.registry import build_network, network_spec
from augmentor.training import recipe as gan_recipe
from augmentor.zoo import resolve_model

# SHA-256 of the int16 images and uint8 masks of block 0 (256 samples) of every class, seed 0, made by the
# shipped models (trained with resize upsampling; torch 2.14.1 on the CPU), sampled as generation samples them:
# resize + convolution folded into transposed convolutions. Unfolded, the bytes were e812d130… and 9a8c67b8…;
# the two differ by 1 HU in 3e-5 (liver) and 1.4e-4 (lung) of the pixels, and in no mask pixel.
SHIPPED_DIGESTS = {
    "frid-adar-liver": "0ae0bef951b541014186d709e27af3243dbfb7b9737192bbbcce18a303105678",
    "onishi-lung-dcgan": "c36ad788d27c5999ce55254c9d3e22a0ab767b2d991237d8b65c933932969fa7",
}


@pytest.mark.parametrize("name", sorted(SHIPPED_DIGESTS))
def test_shipped_cards_rebuild_their_network_and_bytes(name: str) -> None:
    network, card = load_generator(resolve_model(name).path)
    config = card["architecture"]["config"]
    assert config["upsample"] == "resize" and network.config["upsample"] == "resize"
    assert not any(isinstance(module, nn.ConvTranspose2d) for module in network.modules())
    stream = SampleStream(network, card, torch.device("cpu"), seed=0)
    digest = hashlib.sha256()
    for label in range(len(card["class_names"])):
        images, masks = stream.group(label, 0)
        digest.update(images.tobytes())
        digest.update(masks.tobytes())
    assert digest.hexdigest() == SHIPPED_DIGESTS[name]


def test_a_card_from_before_the_switches_builds_the_original_network() -> None:
    _, card = load_generator(resolve_model("frid-adar-liver").path)
    config = {k: v for k, v in card["architecture"]["config"].items() if k not in ("upsample", "mask_output", "embedding_init", "noise_inputs")}
    network = build_network(card["architecture"]["family"], **config)
    assert network.config["upsample"] == "transposed" and network.config["mask_output"] == "tanh"
    assert isinstance(network.main[-1], nn.Tanh) and isinstance(network.main[0], nn.ConvTranspose2d)


def test_minibatch_std_channel_is_the_group_standard_deviation() -> None:
    features = torch.randn(4, 3, 5, 5)
    out = MinibatchStandardDeviation()(features)
    assert out.shape == (4, 4, 5, 5) and torch.equal(out[:, :3], features)
    expected = features.std(dim=0, unbiased=False).mean()  # one group of 4: the whole batch
    torch.testing.assert_close(out[:, 3], expected.expand(4, 5, 5), rtol=1e-5, atol=1e-6)

    # Batch 8: two groups of 4, sample i in group i mod 2 (StyleGAN's strided grouping).
    features = torch.randn(8, 2, 3, 3)
    out = MinibatchStandardDeviation()(features)
    for group in range(2):
        expected = features[group::2].std(dim=0, unbiased=False).mean()
        torch.testing.assert_close(out[group::2, 2], expected.expand(4, 3, 3), rtol=1e-5, atol=1e-6)
    # A batch of identical samples has (almost) no spread; batch 6 groups by 3, batch 1 by 1.
    assert MinibatchStandardDeviation()(torch.ones(6, 2, 3, 3))[:, 2].max() < 1e-3
    assert MinibatchStandardDeviation()(torch.randn(1, 2, 3, 3)).shape == (1, 3, 3, 3)


@pytest.mark.parametrize("size", [8, 16, 32])
def test_minibatch_std_sits_before_the_last_strided_convolution(size: int) -> None:
    plain = ProjectionDiscriminator(2, size, 4, normalization="none")
    with_std = ProjectionDiscriminator(2, size, 4, normalization="none", minibatch_std=True)
    layers = list(with_std.features)
    position = next(i for i, layer in enumerate(layers) if isinstance(layer, MinibatchStandardDeviation))
    convolutions = [layer for layer in layers if isinstance(layer, nn.Conv2d)]
    assert layers[position + 1] is convolutions[-1]
    assert convolutions[-1].in_channels == [m for m in plain.features if isinstance(m, nn.Conv2d)][-1].in_channels + 1
    assert with_std(torch.randn(6, 2, size, size), torch.tensor([0, 1] * 3)).shape == (6,)
    assert with_std.config["minibatch_std"] is True and plain.config["minibatch_std"] is False


def test_resize_upsampling_has_no_transposed_convolution() -> None:
    resize = ConditionalDCGANGenerator(3, latent_dim=8, image_size=32, base_channels=4, embedding_dim=4, upsample="resize")
    transposed = ConditionalDCGANGenerator(3, latent_dim=8, image_size=32, base_channels=4, embedding_dim=4)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in resize.modules())
    assert sum(isinstance(m, nn.Upsample) for m in resize.modules()) == 3  # 4 -> 8 -> 16 -> 32
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in transposed.modules()) == 4
    latents, labels = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    assert resize(latents, labels).shape == transposed(latents, labels).shape == (5, 2, 32, 32)


def test_bilinear_upsampling_leaves_no_blocks_of_the_start_map() -> None:
    """A nearest resize copies each cell of the 4x4 start map into a block; a bilinear one does not (shown on the
    upsamplings alone). The bilinear network runs, records its switch and is not folded."""
    torch.manual_seed(0)
    outputs = {}
    for mode in ("resize", "bilinear"):
        network = ConditionalDCGANGenerator(2, latent_dim=8, image_size=32, base_channels=4, embedding_dim=4, upsample=mode)
        upsamplers = [m for m in network.modules() if isinstance(m, nn.Upsample)]
        assert len(upsamplers) == 3 and {m.mode for m in upsamplers} == {"nearest" if mode == "resize" else "bilinear"}
        start = torch.randn(1, 1, 4, 4)
        for upsampler in upsamplers:
            start = upsampler(start)
        outputs[mode] = start[0, 0]
    # nearest: 8x8 blocks of one value each; bilinear: neighbours inside a block differ
    assert torch.equal(outputs["resize"][:8, :8], outputs["resize"][0, 0].expand(8, 8))
    assert outputs["bilinear"][:8, :8].std() > 0.05
    network = ConditionalDCGANGenerator(3, latent_dim=8, image_size=32, base_channels=4, embedding_dim=4, upsample="bilinear")
    assert network(torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])).shape == (5, 2, 32, 32)
    assert network.config["upsample"] == "bilinear"
    assert [type(m) for m in fold_resize_upsampling(copy.deepcopy(network)).modules()] == [type(m) for m in network.modules()]  # not folded


@pytest.mark.parametrize("size", [8, 32])
def test_folding_resize_upsampling_into_transposed_convolutions_keeps_the_outputs(size: int) -> None:
    torch.manual_seed(1)
    resize = _widened(ConditionalDCGANGenerator(3, latent_dim=8, image_size=size, base_channels=4, embedding_dim=4, upsample="resize"))
    latents, labels = torch.randn(7, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    with torch.no_grad():
        expected = resize(latents, labels)
        folded = fold_resize_upsampling(copy.deepcopy(resize))
        got = folded(latents, labels)
    doublings = int(np.log2(size // 4))
    assert not any(isinstance(m, nn.Upsample) for m in folded.modules())
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in folded.modules()) == doublings
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)  # the borders too: an output row/column off would differ by ~1
    # a network of transposed convolutions has nothing to fold
    transposed = ConditionalDCGANGenerator(3, latent_dim=8, image_size=size, base_channels=4, embedding_dim=4)
    before = [type(m) for m in transposed.modules()]
    assert [type(m) for m in fold_resize_upsampling(transposed).modules()] == before


def test_the_sample_stream_folds_a_copy_and_leaves_the_caller_s_network_alone() -> None:
    network = _widened(ConditionalDCGANGenerator(3, latent_dim=8, image_size=16, base_channels=4, embedding_dim=4, upsample="resize"))
    card = {"hu_window": [-160.0, 240.0], "architecture": {"config": network.config}}
    stream = SampleStream(network, card, torch.device("cpu"), seed=0)
    assert sum(isinstance(m, nn.Upsample) for m in network.modules()) == 2
    assert not any(isinstance(m, nn.Upsample) for m in stream.network.modules())


def test_unit_embedding_init_draws_the_class_embedding_from_a_standard_normal() -> None:
    torch.manual_seed(0)
    unit = ConditionalDCGANGenerator(10, latent_dim=8, image_size=8, base_channels=4, embedding_dim=64, embedding_init="unit")
    dcgan = ConditionalDCGANGenerator(10, latent_dim=8, image_size=8, base_channels=4, embedding_dim=64)
    assert 0.9 < unit.class_embedding.weight.std().item() < 1.1
    assert 0.015 < dcgan.class_embedding.weight.std().item() < 0.025


def _widened(network: nn.Module) -> nn.Module:
    with torch.no_grad():  # DCGAN's N(0, 0.02) init gives near-constant output: widen it so outputs spread
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.4)
    return network.eval()


def test_logit_mask_channel_is_unbounded_and_the_image_stays_in_range() -> None:
    torch.manual_seed(0)
    network = _widened(ConditionalDCGANGenerator(3, latent_dim=8, image_size=16, base_channels=4, embedding_dim=4, mask_output="logits"))
    with torch.no_grad():
        output = network(torch.randn(16, 8), torch.arange(16) % 3)
    assert output[:, 0].abs().max() <= 1.0
    assert output[:, 1].abs().max() > 1.0  # a logit, not a tanh


def test_generate_thresholds_a_logit_mask_at_zero(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = _widened(ConditionalDCGANGenerator(3, latent_dim=8, image_size=16, base_channels=4, embedding_dim=4, mask_output="logits"))
    folder = tmp_path / "logit-model"
    save_model(folder, network, {"class_names": ["cyst", "metastasis", "hemangioma"], "hu_window": [-160.0, 240.0],
                                 "algorithm": "cgan", "training_data": {"sha256": "ab" * 32, "patients_sha256": "cd" * 32, "path": "t.h5"}},
               dtype=torch.float32)
    loaded, card = load_generator(folder)
    assert card["architecture"]["config"]["mask_output"] == "logits"
    out = generate(["metastasis"], 6, tmp_path / "s.h5", model=folder, seed=3, progress=False)
    _, masks, _ = H5File(out).read(list(range(6)))
    stream = SampleStream(loaded, card, torch.device("cpu"), seed=3)
    with torch.no_grad():
        logits = loaded(torch.from_numpy(latent_block(3, 1, 0, 8)[:6]), torch.ones(6, dtype=torch.long))[:, 1]
    assert np.array_equal(masks, (logits > 0).numpy().astype(np.uint8))
    assert 0 < masks.mean() < 1  # both sides of 0 occur, so the threshold is what decided
    assert np.array_equal(stream.group(1, 0)[1][:6], masks)


@pytest.mark.parametrize(
    ("family", "config"),
    [
        ("dcgan-generator", {"num_classes": 2, "latent_dim": 8, "image_size": 16, "base_channels": 4, "embedding_dim": 4,
                             "upsample": "resize", "mask_output": "logits", "embedding_init": "unit"}),
        ("projection-discriminator", {"num_classes": 2, "image_size": 16, "base_channels": 4, "normalization": "none", "minibatch_std": True}),
    ],
)
def test_switched_networks_rebuild_from_their_recorded_config(family: str, config: dict) -> None:
    torch.manual_seed(0)
    network = build_network(family, **config)
    spec = network_spec(network)
    assert spec["config"].items() >= config.items()
    rebuilt = build_network(spec["family"], **spec["config"])
    rebuilt.load_state_dict(network.state_dict(), strict=True)


@pytest.mark.parametrize(("key", "value", "valid"), [("upsample", "resize-conv", "resize"), ("mask_output", "logit", "logits"),
                                                    ("embedding_init", "unti", "unit")])
def test_bad_switch_values_are_one_line_with_the_valid_ones(key: str, value: str, valid: str) -> None:
    with pytest.raises(AugmentorError, match=f"unknown {key} '{value}'.*{valid}") as error:
        build_network("dcgan-generator", num_classes=2, latent_dim=8, image_size=8, **{key: value})
    assert "\n" not in str(error.value)


def test_recipe_names_match_the_network_options() -> None:
    assert set(gan_recipe.UpsampleName.__args__) == {u.value for u in Upsample}  # type: ignore[attr-defined]
    assert set(gan_recipe.MaskOutputName.__args__) == {m.value for m in MaskOutput}  # type: ignore[attr-defined]
    assert set(gan_recipe.EmbeddingInitName.__args__) == {e.value for e in EmbeddingInit}  # type: ignore[attr-defined]


# --- per-pixel noise inputs -------------------------------------------------------------------------------


def test_noise_maps_are_standard_normal_white_and_a_function_of_the_latent() -> None:
    latents = torch.randn(32, 128, generator=torch.Generator().manual_seed(0))
    maps = latent_noise(latents, [8, 64])
    assert [tuple(m.shape) for m in maps] == [(32, 1, 8, 8), (32, 1, 64, 64)]
    big = maps[1][:, 0]
    assert abs(big.mean().item()) < 0.02 and abs(big.std().item() - 1.0) < 0.02
    # white: neighbouring pixels and two samples' maps are uncorrelated
    lag = torch.corrcoef(torch.stack([big[:, :, :-1].flatten(), big[:, :, 1:].flatten()]))[0, 1]
    pair = torch.corrcoef(torch.stack([big[0].flatten(), big[1].flatten()]))[0, 1]
    assert abs(lag.item()) < 0.02 and abs(pair.item()) < 0.1
    # a sample's maps depend on its latent only, not on the batch around it; one bit of the latent changes them
    torch.testing.assert_close(latent_noise(latents[5:7], [8, 64])[1], maps[1][5:7], rtol=0, atol=0)
    nudged = latents.clone()
    nudged[0, 3] = torch.nextafter(nudged[0, 3], torch.tensor(10.0))
    changed = latent_noise(nudged, [8, 64])[1]
    assert (changed[0] != maps[1][0]).float().mean() > 0.99 and torch.equal(changed[1:], maps[1][1:])


def test_noise_hash_on_a_cpu_has_the_bits_of_the_int64_torch_hash_other_devices_use() -> None:
    seeds = torch.tensor([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 123456789], dtype=torch.int64)
    counters = torch.arange(5000, 9096, dtype=torch.int64)
    reference = (_mix32(_mix32(seeds[:, None] ^ _mix32(counters)[None, :])).double() + 0.5) / 2.0**32
    uniforms = _pixel_uniforms(seeds, 5000, 4096)
    assert uniforms.dtype == torch.float64 and torch.equal(uniforms, reference)
    assert uniforms.min().item() > 0.0 and uniforms.max().item() < 1.0


def test_noise_inputs_start_silent_and_then_add_texture_to_the_image_only() -> None:
    latents, labels = torch.randn(6, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 0, 1, 0, 1])
    torch.manual_seed(0)
    plain = ConditionalDCGANGenerator(2, latent_dim=16, image_size=16, base_channels=8, upsample="resize").eval()
    torch.manual_seed(0)
    noisy = ConditionalDCGANGenerator(2, latent_dim=16, image_size=16, base_channels=8, upsample="resize", noise_inputs=True).eval()
    assert noisy.config["noise_inputs"] is True and "noise_inputs" not in plain.config
    assert noisy.noise_sizes == [8, 16]  # after the 4 -> 8 step and on the 16x16 output
    # scales start at 0: the same weights make the same samples
    torch.testing.assert_close(noisy(latents, labels), plain(latents, labels))
    injections = [m for m in noisy.modules() if isinstance(m, NoiseInjection)]
    with torch.no_grad():
        injections[-1].scale.fill_(0.5)
    out, base = noisy(latents, labels), plain(latents, labels)
    torch.testing.assert_close(out[:, 1], base[:, 1])  # the mask channel gets no noise
    residual = torch.atanh(out[:, 0].clamp(-0.999, 0.999)) - torch.atanh(base[:, 0].clamp(-0.999, 0.999))
    assert residual.std() > 0.3  # 0.5 x N(0, 1) before the tanh
    torch.testing.assert_close(noisy(latents[:2], labels[:2]), out[:2])  # deterministic per latent
    # the scales learn: a loss on the image reaches them
    noisy.train()
    noisy(latents, labels)[:, 0].square().mean().backward()
    assert all(m.scale.grad is not None and m.scale.grad.abs().sum() > 0 for m in injections)


def test_a_noise_generator_round_trips_through_its_card(tmp_path: Path) -> None:
    network = ConditionalDCGANGenerator(2, latent_dim=16, image_size=16, base_channels=8, upsample="resize", noise_inputs=True)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, NoiseInjection):
                module.scale.fill_(0.3)
    spec = network_spec(network)
    rebuilt = build_network(spec["family"], **spec["config"])
    rebuilt.load_state_dict(network.state_dict())
    latents, labels = torch.randn(4, 16), torch.tensor([0, 1, 1, 0])
    network.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(latents, labels), network(latents, labels))
    folded = fold_resize_upsampling(copy.deepcopy(rebuilt))  # generation's folded form keeps the noise
    torch.testing.assert_close(folded(latents, labels), network(latents, labels), rtol=1e-5, atol=1e-5)
