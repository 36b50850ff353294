"""Downstream networks: the classifiers and the segmenter the arms train.

- ``frid-adar-cnn``: the small lesion classifier of Frid-Adar et al. 2018 (three convolution + max-pool
  blocks, a dense layer with dropout, a soft-max output; 5x5 kernels, 32/64/128 filters as we read the
  paper). Its dense layer doubles as the feature extractor of the fidelity and memorisation audits.
- any MONAI classification network by name (explicit registry below: DenseNet, ResNet, EfficientNet),
  built for 2-D, single-channel input, randomly initialised (no pretrained weights are used).
- a MONAI ``UNet`` for segmentation.

Networks return raw logits; the losses own the activation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from augmentor.errors import AugmentorError, look_up_option


class FridAdarCNN(nn.Module):
    """The CNN of Frid-Adar et al. 2018 for 64x64 liver-lesion ROIs.

    Args:
        in_channels: image channels (1 for CT).
        num_classes: output classes.
        image_size: input height = width; divisible by 2 ** len(channels).
        channels: filters of each convolution + ReLU + 2x2 max-pool block.
        kernel_size: convolution kernel (odd; padding keeps the size).
        dense_units: the hidden fully connected layer.
        dropout: dropout before the output layer (0.5 in the paper).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        image_size: int = 64,
        channels: Sequence[int] = (32, 64, 128),
        kernel_size: int = 5,
        dense_units: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if image_size % (2 ** len(channels)):
            raise AugmentorError(f"frid-adar-cnn: image size {image_size} is not divisible by 2^{len(channels)} (one halving per block)")
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [nn.Conv2d(previous, width, kernel_size, padding=kernel_size // 2), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            previous = width
        side = image_size // 2 ** len(channels)
        self.features = nn.Sequential(*layers)  # (B, C, S, S) -> (B, channels[-1], S / 2^k, S / 2^k)
        self.embedding = nn.Sequential(nn.Flatten(), nn.Linear(previous * side * side, dense_units), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dense_units, num_classes))
        self.num_features = dense_units

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The dense layer's activations, (B, dense_units): the features of the fidelity audit."""
        return self.embedding(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))


def _frid_adar(in_channels: int, num_classes: int, image_size: int, options: Any) -> nn.Module:
    return FridAdarCNN(
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        channels=tuple(options.channels),
        kernel_size=options.kernel_size,
        dense_units=options.dense_units,
        dropout=options.dropout,
    )


def _densenet(variant: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, num_classes: int, image_size: int, options: Any) -> nn.Module:
        from monai.networks import nets

        network = {"densenet121": nets.DenseNet121, "densenet169": nets.DenseNet169}[variant]
        return network(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, dropout_prob=options.dropout)

    return build


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def build(in_channels: int, num_classes: int, image_size: int, options: Any) -> nn.Module:
        from monai.networks.nets import resnet

        builder = {10: resnet.resnet10, 18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50}[depth]
        return builder(spatial_dims=2, n_input_channels=in_channels, num_classes=num_classes, pretrained=False)

    return build


def _efficientnet(in_channels: int, num_classes: int, image_size: int, options: Any) -> nn.Module:
    from monai.networks.nets import EfficientNetBN

    return EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=in_channels, num_classes=num_classes)


# Explicit registry: name -> builder(in_channels, num_classes, image_size, options). Add a network by
# adding a line here (and its name to evaluation.recipe.ClassifierName).
CLASSIFIERS: dict[str, Callable[..., nn.Module]] = {
    "frid-adar-cnn": _frid_adar,
    "densenet121": _densenet("densenet121"),
    "densenet169": _densenet("densenet169"),
    "resnet10": _resnet(10),
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "resnet50": _resnet(50),
    "efficientnet-b0": _efficientnet,
}


def build_classifier(name: str, *, in_channels: int, num_classes: int, image_size: int, options: Any) -> nn.Module:
    """Build a registered classifier.

    Args:
        name: a key of :data:`CLASSIFIERS`.
        in_channels: image channels.
        num_classes: output logits.
        image_size: input height = width.
        options: the recipe's ``[classifier]`` section (widths and dropout).

    Returns:
        A randomly initialised network returning (B, num_classes) logits.
    """
    builder = CLASSIFIERS[look_up_option(name, CLASSIFIERS, "classifier network")]
    return builder(in_channels, num_classes, image_size, options)


def build_segmenter(*, in_channels: int, num_labels: int, channels: Sequence[int], residual_units: int) -> nn.Module:
    """A 2-D MONAI UNet returning (B, num_labels, H, W) logits (label 0 is background).

    Args:
        in_channels: image channels.
        num_labels: mask labels including background.
        channels: widths per level; each level below the first halves the resolution.
        residual_units: residual units per block (0: plain convolutions).
    """
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_labels,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=residual_units,
    )
