from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.config import ConvBlock, ModelSpec, validate_model
from cnnlab.errors import ConfigError
from cnnlab.models import build_model, conv_output_size, feature_map_sizes, layer_table


def test_conv_output_size_matches_torch() -> None:
    conv = torch.nn.Conv2d(1, 1, 5, stride=2, padding=1)
    out = conv(torch.zeros(1, 1, 28, 28))
    assert out.shape[-1] == conv_output_size(28, 5, 2, 1)


@st.composite
def model_specs(draw: st.DrawFn) -> ModelSpec:
    blocks = []
    for _ in range(draw(st.integers(1, 3))):
        blocks.append(
            ConvBlock(
                channels=draw(st.integers(1, 6)),
                kernel_size=draw(st.integers(1, 9)),
                stride=draw(st.integers(1, 3)),
                padding=draw(st.one_of(st.none(), st.integers(0, 4))),
                pool=draw(st.sampled_from([1, 2, 3])),
                batch_norm=draw(st.booleans()),
            )
        )
    hidden = tuple(draw(st.lists(st.integers(1, 8), max_size=1)))
    return ModelSpec(
        blocks=tuple(blocks),
        hidden=hidden,
        whiten_patch=draw(st.sampled_from([0, 2, 3])),
        pool_before_norm=draw(st.booleans()),
        global_pool=draw(st.sampled_from(["none", "max", "avg"])),
        identity_init=draw(st.booleans()),
        bn_scale=draw(st.booleans()),
    )


@settings(max_examples=60, deadline=None)
@given(spec=model_specs(), size=st.sampled_from([28, 32]))
def test_shape_arithmetic_matches_model(spec: ModelSpec, size: int) -> None:
    """A spec is either rejected by validation, or the built model has the predicted shapes."""
    shape = (1, size, size)
    try:
        validate_model(spec, shape)
    except ConfigError as exc:
        assert "invalid model.blocks" in str(exc)
        return
    model = build_model(spec, shape, 10).eval()
    x = torch.zeros(2, *shape)
    maps = model.feature_maps(x)
    assert [list(m.shape[-2:]) for m in maps] == feature_map_sizes(spec, shape)
    table = layer_table(spec, shape, 10)
    assert model(x).shape == (2, 10)
    assert sum(row.params for row in table) == sum(p.numel() for p in model.parameters())
    # A block's map is its conv output, or its pooled output when pooling comes first.
    shown = {}
    for row in table:
        block = row.name.split(".")[0]
        if (row.name.endswith(".conv") and block.startswith("block")) or (
            row.name.endswith(".pool") and spec.pool_before_norm
        ):
            shown[block] = row
    for row, fmap in zip(shown.values(), maps, strict=True):
        assert list(row.output_shape) == list(fmap.shape[1:])


def test_receptive_field_of_two_3x3_convs() -> None:
    spec = ModelSpec(blocks=(ConvBlock(4), ConvBlock(4)))
    table = layer_table(spec, (1, 28, 28), 10)
    assert [row.receptive_field for row in table if row.name.endswith(".conv")] == [3, 5]


def test_receptive_field_grows_with_pool_and_stride() -> None:
    spec = ModelSpec(blocks=(ConvBlock(4, pool=2), ConvBlock(4, stride=2), ConvBlock(4)))
    table = layer_table(spec, (1, 28, 28), 10)
    fields = {row.name: row.receptive_field for row in table}
    assert fields["block1.conv"] == 3
    assert fields["block1.pool"] == 4
    assert fields["block2.conv"] == 8
    assert fields["block3.conv"] == 16


def test_conv_flops_count_multiply_adds_twice() -> None:
    spec = ModelSpec(blocks=(ConvBlock(2, kernel_size=3, batch_norm=False),))
    table = layer_table(spec, (1, 4, 4), 10)
    conv = table[1]
    assert conv.output_shape == (2, 4, 4)
    assert conv.flops == 2 * (2 * 1 * 9 * 16)
    assert conv.params == 2 * 9 + 2
