"""CNN built from a declarative ModelSpec, and its shape, parameter and FLOP arithmetic."""

from __future__ import annotations

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
    """Conv, batch norm, activation, max pool and dropout of one ConvBlock."""

    def __init__(self, in_channels: int, block: ConvBlock) -> None:
        layers: dict[str, nn.Module] = {
            # A bias before batch norm is cancelled by its mean subtraction.
            "conv": nn.Conv2d(
                in_channels,
                block.channels,
                block.kernel_size,
                stride=block.stride,
                padding=block.pad,
                bias=not block.batch_norm,
            )
        }
        if block.batch_norm:
            layers["bn"] = nn.BatchNorm2d(block.channels)
        layers["act"] = _activation(block.activation)
        if block.pool > 1:
            layers["pool"] = nn.MaxPool2d(block.pool)
        if block.dropout > 0:
            layers["drop"] = nn.Dropout2d(block.dropout)
        super().__init__(OrderedDict(layers))


class CNN(nn.Module):
    def __init__(
        self, spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int
    ) -> None:
        super().__init__()
        self.spec = spec
        channels, height, width = input_shape
        units = []
        for block in spec.blocks:
            units.append(ConvUnit(channels, block))
            channels = block.channels
            height = conv_output_size(height, block.kernel_size, block.stride, block.pad)
            width = conv_output_size(width, block.kernel_size, block.stride, block.pad)
            height, width = height // block.pool, width // block.pool
        self.features = nn.ModuleList(units)
        head: list[nn.Module] = [nn.Flatten()]
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
        for unit in self.features:
            x = unit(x)
        logits: torch.Tensor = self.head(x)
        return logits

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return each conv block's output after activation, before pooling and dropout."""
        maps = []
        for unit in self.features:
            layers = dict(unit.named_children())
            for name, layer in layers.items():
                if name not in ("pool", "drop"):
                    x = layer(x)
            maps.append(x)
            if "pool" in layers:
                x = layers["pool"](x)
        return maps


def build_model(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> CNN:
    return CNN(spec, input_shape, num_classes)


def penalized_weights(model: nn.Module) -> list[torch.Tensor]:
    """Return the conv and linear weight tensors that the L2 penalty covers (no biases, no BN)."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


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
    """Return [H, W] of each conv block's output before pooling."""
    _, height, width = input_shape
    sizes = []
    for block in spec.blocks:
        height = conv_output_size(height, block.kernel_size, block.stride, block.pad)
        width = conv_output_size(width, block.kernel_size, block.stride, block.pad)
        sizes.append([height, width])
        height, width = height // block.pool, width // block.pool
    return sizes
