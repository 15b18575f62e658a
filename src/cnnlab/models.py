"""CNN built from a declarative ModelSpec, and its shape, parameter and FLOP arithmetic."""

from __future__ import annotations

import typing
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.config import ConvBlock, ModelSpec


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Return the output length of a convolution along one axis (PyTorch's floor rule)."""
    return (size + 2 * padding - kernel) // stride + 1


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "gelu":
        return nn.GELU()
    if name == "elu":
        return nn.ELU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "tanh":
        return nn.Tanh()
    return nn.Identity()


class ConvUnit(nn.Sequential):
    """Conv, batch norm, activation, max pool and dropout of one ConvBlock.

    With ``spec.pool_before_norm`` the pooling comes straight after the conv.
    """

    def __init__(self, in_channels: int, block: ConvBlock, spec: ModelSpec | None = None) -> None:
        spec = spec or ModelSpec(blocks=(block,))
        conv = nn.Conv2d(
            in_channels,
            block.channels,
            block.kernel_size,
            stride=block.stride,
            padding=block.pad,
            bias=not block.batch_norm,  # a bias before batch norm is cancelled by its mean
        )
        if spec.identity_init:
            # The first in_channels filters pass their input channel through unchanged
            # (a Dirac delta at the kernel centre); the rest keep their random start.
            with torch.no_grad():
                nn.init.dirac_(conv.weight[: conv.weight.shape[1]])
        layers: dict[str, nn.Module] = {"conv": conv}
        if block.pool > 1 and spec.pool_before_norm:
            layers["pool"] = nn.MaxPool2d(block.pool)
        if block.batch_norm:
            bn = nn.BatchNorm2d(block.channels, momentum=spec.bn_momentum)
            bn.weight.requires_grad_(spec.bn_scale)
            layers["bn"] = bn
        layers["act"] = _activation(block.activation)
        if block.pool > 1 and not spec.pool_before_norm:
            layers["pool"] = nn.MaxPool2d(block.pool)
        if block.dropout > 0:
            layers["drop"] = nn.Dropout2d(block.dropout)
        super().__init__(OrderedDict(layers))


class WhiteningStem(nn.Sequential):
    """A frozen p x p convolution whose filters whiten image patches, then GELU.

    Its 2·C·p² filters are the eigenvectors of the training patches' covariance,
    each divided by the square root of its eigenvalue, and their negatives, so the
    GELU after it keeps both signs of every whitened direction.
    """

    def __init__(self, channels: int, patch: int) -> None:
        width = 2 * channels * patch * patch
        conv = nn.Conv2d(channels, width, patch, padding=0, bias=True)
        conv.weight.requires_grad_(False)
        with torch.no_grad():
            conv.weight.zero_()  # set by fit(); the bias starts at zero and trains
            nn.init.zeros_(typing.cast(torch.Tensor, conv.bias))
        super().__init__(OrderedDict(conv=conv, act=nn.GELU()))
        self.channels, self.patch, self.width = channels, patch, width

    def freeze_bias(self) -> None:
        """Stop training the bias, so the layers after the stem need no input gradient."""
        bias = self[0].bias
        assert bias is not None
        bias.requires_grad_(False)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, epsilon: float = 5e-4) -> None:
        """Set the filters from scaled training images [N, C, H, W]."""
        conv = self[0]
        assert isinstance(conv, nn.Conv2d)
        channels, patch = self.channels, self.patch
        patches = images.float().unfold(2, patch, 1).unfold(3, patch, 1)  # N C H' W' p p
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels * patch * patch)
        patches = patches.double()
        patches -= patches.mean(dim=0)
        cov = patches.T @ patches / (len(patches) - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        filters = (eigenvectors / (eigenvalues.clamp_min(0) + epsilon).sqrt()).T
        filters = filters.reshape(-1, channels, patch, patch).float()
        conv.weight.copy_(torch.cat([filters, -filters]))


class CNN(nn.Module):
    def __init__(
        self, spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int
    ) -> None:
        super().__init__()
        self.spec = spec
        channels, height, width = input_shape
        self.stem: WhiteningStem | None = None
        if spec.whiten_patch > 0:
            self.stem = WhiteningStem(channels, spec.whiten_patch)
            channels = self.stem.width
            height, width = height - spec.whiten_patch + 1, width - spec.whiten_patch + 1
        units = []
        for block in spec.blocks:
            units.append(ConvUnit(channels, block, spec))
            channels = block.channels
            height = conv_output_size(height, block.kernel_size, block.stride, block.pad)
            width = conv_output_size(width, block.kernel_size, block.stride, block.pad)
            height, width = height // block.pool, width // block.pool
        self.features = nn.ModuleList(units)
        head: list[nn.Module] = []
        if spec.global_pool != "none":
            head.append(
                nn.AdaptiveMaxPool2d(1) if spec.global_pool == "max" else nn.AdaptiveAvgPool2d(1)
            )
            height = width = 1
        head.append(nn.Flatten())
        width_in = channels * height * width
        for units_out in spec.hidden:
            head += [nn.Linear(width_in, units_out), nn.ReLU(inplace=True)]
            if spec.head_dropout > 0:
                head.append(nn.Dropout(spec.head_dropout))
            width_in = units_out
        if spec.head_dropout > 0 and not spec.hidden:
            head.append(nn.Dropout(spec.head_dropout))
        head.append(nn.Linear(width_in, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            x = self.stem(x)
        for unit in self.features:
            x = unit(x)
        logits: torch.Tensor = self.head(x)
        if self.spec.logit_scale != 1.0:
            logits = logits * self.spec.logit_scale
        return logits

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return each conv block's output after activation, without dropout.

        The maps are taken before pooling, except with ``pool_before_norm``,
        where the pooling comes first and the map is the pooled one.
        """
        if self.stem is not None:
            x = self.stem(x)
        maps = []
        for unit in self.features:
            pending = None
            for name, layer in unit.named_children():
                if name == "drop":
                    continue
                if name == "pool" and not self.spec.pool_before_norm:
                    pending = layer
                    continue
                x = layer(x)
            maps.append(x)
            if pending is not None:
                x = pending(x)
        return maps


def build_model(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> CNN:
    return CNN(spec, input_shape, num_classes)


def penalized_weights(model: nn.Module) -> list[torch.Tensor]:
    """Return the trained conv and linear weights that the L2 penalty covers (no biases, no BN)."""
    return [
        m.weight
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and m.weight.requires_grad
    ]


def conv_filters(model: nn.Module) -> list[torch.Tensor]:
    """Return the trained convolution weights, the tensors that Muon updates."""
    return [
        m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad
    ]


def norm_biases(model: nn.Module) -> list[torch.Tensor]:
    """Return the batch-norm shift parameters, which may train at a higher learning rate."""
    return [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine]


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    flops: int  # per image, forward pass, 2 per multiply-add
    receptive_field: int | None  # pixels of the input that one output unit sees

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "output_shape": list(self.output_shape),
            "params": self.params,
            "flops": self.flops,
            "receptive_field": self.receptive_field,
        }


def layer_table(
    spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int
) -> list[LayerInfo]:
    """Describe each layer by shape arithmetic alone, without building the model."""
    channels, height, width = input_shape
    rf, jump = 1, 1  # receptive field and distance between adjacent outputs, in input pixels
    rows = [LayerInfo("input", "Input", (channels, height, width), 0, 0, 1)]
    if spec.whiten_patch > 0:
        patch = spec.whiten_patch
        width_out = 2 * channels * patch * patch
        height, width = height - patch + 1, width - patch + 1
        rf += patch - 1
        rows.append(
            LayerInfo(
                "stem.conv",
                f"Whitening conv {patch}x{patch} (frozen) + gelu",
                (width_out, height, width),
                width_out * channels * patch * patch + width_out,
                2 * width_out * channels * patch * patch * height * width,
                rf,
            )
        )
        channels = width_out
    for i, block in enumerate(spec.blocks):
        height = conv_output_size(height, block.kernel_size, block.stride, block.pad)
        width = conv_output_size(width, block.kernel_size, block.stride, block.pad)
        rf += (block.kernel_size - 1) * jump
        jump *= block.stride
        params = block.channels * channels * block.kernel_size**2
        params += 2 * block.channels if block.batch_norm else block.channels
        macs = block.channels * channels * block.kernel_size**2 * height * width
        desc = f"Conv {block.kernel_size}x{block.kernel_size}/{block.stride}"
        if block.batch_norm:
            desc += " + BN"
        if block.activation != "none":
            desc += f" + {block.activation}"
        rows.append(
            LayerInfo(
                f"block{i + 1}.conv", desc, (block.channels, height, width), params, 2 * macs, rf
            )
        )
        channels = block.channels
        if block.pool > 1:
            height, width = height // block.pool, width // block.pool
            rf += (block.pool - 1) * jump
            jump *= block.pool
            rows.append(
                LayerInfo(
                    f"block{i + 1}.pool",
                    f"MaxPool {block.pool}x{block.pool}",
                    (channels, height, width),
                    0,
                    channels * height * width * (block.pool**2 - 1),
                    rf,
                )
            )
    if spec.global_pool != "none":
        rows.append(
            LayerInfo(
                "global_pool",
                f"Global {spec.global_pool} pool",
                (channels, 1, 1),
                0,
                channels * height * width,
                None,
            )
        )
        height = width = 1
    features = channels * height * width
    for j, units in enumerate(spec.hidden):
        rows.append(
            LayerInfo(
                f"fc{j + 1}",
                "Linear + relu",
                (units,),
                features * units + units,
                2 * features * units,
                None,
            )
        )
        features = units
    rows.append(
        LayerInfo(
            "classifier",
            "Linear",
            (num_classes,),
            features * num_classes + num_classes,
            2 * features * num_classes,
            None,
        )
    )
    return rows


def feature_map_sizes(spec: ModelSpec, input_shape: tuple[int, int, int]) -> list[list[int]]:
    """Return [H, W] of each conv block's feature map (see CNN.feature_maps)."""
    _, height, width = input_shape
    if spec.whiten_patch > 0:
        height, width = height - spec.whiten_patch + 1, width - spec.whiten_patch + 1
    sizes = []
    for block in spec.blocks:
        height = conv_output_size(height, block.kernel_size, block.stride, block.pad)
        width = conv_output_size(width, block.kernel_size, block.stride, block.pad)
        if spec.pool_before_norm:
            height, width = height // block.pool, width // block.pool
            sizes.append([height, width])
        else:
            sizes.append([height, width])
            height, width = height // block.pool, width // block.pool
    return sizes
