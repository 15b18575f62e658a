"""The fast-training parts: whitening stem, identity init, Lookahead, alternating flip, TTA."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from cnnlab.config import ConvBlock, ModelSpec, Preprocess, RunConfig, default_study
from cnnlab.data import DatasetSplits
from cnnlab.models import WhiteningStem, build_model, layer_table, norm_biases, penalized_weights
from cnnlab.preprocess import augment
from cnnlab.train import Lookahead, evaluate, make_optimizer, train_run, tta_logits
from conftest import make_splits

# The default CIFAR-10 model and recipe, shrunk to three narrow blocks and batches of
# 32 so that a run on tiny synthetic data takes seconds.
CIFAR = default_study("cifar10")
FAST_MODEL = dataclasses.replace(
    CIFAR.model,
    blocks=(
        ConvBlock(8, pool=2, activation="gelu"),
        ConvBlock(8, activation="gelu"),
        ConvBlock(16, pool=2, activation="gelu"),
    ),
)


def fast_run(**train_overrides: object) -> RunConfig:
    train = dataclasses.replace(
        CIFAR.train,
        epochs=3,
        batch_size=32,
        lr=0.5,
        l2=5e-4,
        bias_lr_scale=8.0,
        lookahead_every=2,
        precision="fp32",
    )
    return RunConfig(
        "cifar10",
        FAST_MODEL,
        dataclasses.replace(train, **train_overrides),
        CIFAR.preprocess,
        seed=0,
        device="cpu",
    )


@pytest.fixture(scope="module")
def colour_data() -> DatasetSplits:
    """Classes that differ in colour, which survives flips, shifts and global pooling."""
    splits = make_splits(channels=3, size=32)
    generator = torch.Generator().manual_seed(5)
    palette = torch.randint(40, 216, (10, 3), generator=generator)

    def paint(labels: torch.Tensor) -> torch.Tensor:
        noise = torch.randint(-30, 31, (len(labels), 3, 32, 32), generator=generator)
        return (palette[labels][:, :, None, None] + noise).clamp(0, 255).to(torch.uint8)

    return dataclasses.replace(
        splits,
        train_images=paint(splits.train_labels),
        val_images=paint(splits.val_labels),
        test_images=paint(splits.test_labels),
    )


def test_whitening_stem_decorrelates_patches() -> None:
    generator = torch.Generator().manual_seed(0)
    # Correlated channels: the second and third are noisy copies of the first.
    base = torch.randn(200, 1, 12, 12, generator=generator)
    images = torch.cat(
        [base, base + 0.1 * torch.randn(base.shape, generator=generator), 2 * base], dim=1
    )
    stem = WhiteningStem(3, 2)
    stem.fit(images)
    with torch.no_grad():
        conv = stem[0]
        out = conv(images) - conv.bias[:, None, None]
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = torch.cov(half.T)
    # Whitened directions have unit variance, up to the epsilon that damps tiny eigenvalues.
    strong = torch.diagonal(cov) > 0.5
    assert strong.sum() >= 4
    ones = torch.ones(int(strong.sum()), dtype=torch.double)
    assert torch.allclose(torch.diagonal(cov)[strong], ones, atol=0.1)
    off = cov - torch.diag(torch.diagonal(cov))
    assert off.abs().max() < 0.05
    # The second half of the filters is the negation of the first.
    assert torch.equal(conv.weight[12:], -conv.weight[:12])
    assert not conv.weight.requires_grad


def test_identity_init_passes_input_channels_through() -> None:
    spec = ModelSpec(
        blocks=(ConvBlock(6, batch_norm=False, activation="none"),), identity_init=True
    )
    model = build_model(spec, (3, 8, 8), 10)
    conv = model.features[0].conv
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        out = conv(x) - conv.bias[:, None, None]
    assert torch.allclose(out[:, :3], x, atol=1e-6)
    assert out[:, 3:].abs().sum() > 0  # the other filters keep their random start


def test_frozen_bn_scale_and_bias_learning_rate() -> None:
    model = build_model(FAST_MODEL, (3, 32, 32), 10)
    for bn in [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
        assert not bn.weight.requires_grad
        assert bn.momentum == 0.4
    optimizer, _ = make_optimizer(model, fast_run().train, steps=10)
    main, biases = optimizer.param_groups
    assert biases["lr"] == pytest.approx(8.0 * main["lr"])
    assert {id(p) for p in biases["params"]} == {id(p) for p in norm_biases(model)}
    trained = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == trained


def test_layer_table_counts_stem_and_global_pool() -> None:
    table = layer_table(FAST_MODEL, (3, 32, 32), 10)
    model = build_model(FAST_MODEL, (3, 32, 32), 10)
    assert table[1].name == "stem.conv"
    assert table[1].output_shape == (24, 31, 31)
    assert any(row.name == "global_pool" and row.output_shape == (16, 1, 1) for row in table)
    assert sum(row.params for row in table) == sum(p.numel() for p in model.parameters())


def test_lookahead_pull_and_finish() -> None:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ahead = Lookahead(model, every=1, total_steps=1, state=None)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ahead.step()  # t/T = 1: decay 0.95, so the slow copy moves 5% of the way
    assert torch.allclose(model.weight, torch.full((1, 2), 1.1))
    with torch.no_grad():
        model.weight.fill_(5.0)
    ahead.finish()  # training ends on the slow weights, whatever the live ones did
    assert torch.allclose(model.weight, torch.full((1, 2), 1.1))


def test_lookahead_disabled_changes_nothing() -> None:
    model = torch.nn.Linear(2, 1)
    before = model.weight.detach().clone()
    ahead = Lookahead(model, every=0, total_steps=5, state=None)
    ahead.step()
    ahead.finish()
    assert torch.equal(model.weight, before)
    assert ahead.state() is None


def test_alternate_flip_follows_the_mask() -> None:
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3)
    mask = torch.tensor([True, False])
    out = augment(x, Preprocess(flip=True), torch.Generator(), flip_mask=mask)
    assert torch.equal(out[0], x[0].flip(2))
    assert torch.equal(out[1], x[1])


def test_alternate_flip_inverts_each_epoch(
    colour_data: DatasetSplits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every image is flipped in exactly one of two consecutive epochs."""
    seen: list[torch.Tensor] = []
    import cnnlab.train as train_module

    real = train_module.augment

    def spy(
        x: torch.Tensor, pre: Preprocess, generator: torch.Generator, **kw: object
    ) -> torch.Tensor:
        seen.append(kw["flip_mask"])  # type: ignore[arg-type]
        return real(x, pre, generator, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "augment", spy)
    config = fast_run(epochs=2, batch_size=len(colour_data.train_images))
    train_run(config, colour_data, progress=False)
    first, second = seen
    assert first.dtype == torch.bool
    assert 0.3 < first.float().mean() < 0.7
    # The batches come in different random orders, so compare image counts.
    assert int(first.sum()) + int(second.sum()) == len(first)


def test_tta_on_symmetric_image_matches_single_view() -> None:
    """A constant image equals its mirror and its shifted crops, so every view agrees."""
    model = build_model(FAST_MODEL, (3, 32, 32), 10).eval()
    x = torch.full((2, 3, 32, 32), 0.3)
    with torch.no_grad():
        plain = tta_logits(model, x, "none")
        for mode in ("flip", "multicrop", "shift"):
            assert torch.allclose(tta_logits(model, x, mode), plain, atol=1e-5)


def test_tta_averages_mirror_views() -> None:
    model = build_model(FAST_MODEL, (3, 32, 32), 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = 0.5 * (model(x) + model(x.flip(3)))
        assert torch.allclose(tta_logits(model, x, "flip"), expected, atol=1e-5)


def test_tta_shift_uses_no_mirror() -> None:
    """Shifted views are weighted 1/2, 1/4, 1/4 and no view is mirrored."""
    model = build_model(FAST_MODEL, (3, 32, 32), 10).eval()
    x = torch.randn(2, 3, 32, 32)
    padded = torch.nn.functional.pad(x, [1, 1, 1, 1], mode="reflect")
    with torch.no_grad():
        expected = (
            0.5 * model(x)
            + 0.25 * model(padded[:, :, :32, :32])
            + 0.25 * model(padded[:, :, 2:, 2:])
        )
        assert torch.allclose(tta_logits(model, x, "shift"), expected, atol=1e-5)


def test_fast_recipe_learns_and_records_tta(colour_data: DatasetSplits) -> None:
    record = train_run(fast_run(epochs=4), colour_data, progress=False)
    final = record["final"]
    assert record["status"] == "completed"
    assert final["tta"] == "multicrop"
    assert final["test_accuracy"] > 0.5
    assert "test_accuracy_single_view" in final
    model = build_model(FAST_MODEL, (3, 32, 32), 10)
    assert record["final"]["params"] == sum(p.numel() for p in model.parameters())


def test_fast_recipe_resume_matches_uninterrupted(
    colour_data: DatasetSplits, tmp_path: Path
) -> None:
    """The Lookahead weights travel in the checkpoint, so a resumed run ends identically."""
    full = train_run(fast_run(), colour_data, progress=False)
    checkpoint = tmp_path / "ckpt.pt"
    train_run(fast_run(), colour_data, progress=False, checkpoint=checkpoint, stop_after=2)
    state = torch.load(checkpoint, weights_only=True)
    assert isinstance(state["lookahead"], dict)
    resumed = train_run(fast_run(), colour_data, progress=False, checkpoint=checkpoint)
    assert resumed["final"]["test_accuracy"] == full["final"]["test_accuracy"]
    assert resumed["history"][-1]["train_loss"] == full["history"][-1]["train_loss"]
    assert resumed["confusion"] == full["confusion"]


def test_muon_recipe_learns_and_resumes(colour_data: DatasetSplits, tmp_path: Path) -> None:
    """Muon's momentum buffers travel in the checkpoint, so a resumed run ends identically."""
    config = fast_run(optimizer="muon", muon_lr=0.1, lookahead_every=0, whiten_bias_epochs=1)
    full = train_run(config, colour_data, progress=False)
    assert full["status"] == "completed"
    assert full["final"]["test_accuracy"] > 0.5
    checkpoint = tmp_path / "ckpt.pt"
    train_run(config, colour_data, progress=False, checkpoint=checkpoint, stop_after=2)
    resumed = train_run(config, colour_data, progress=False, checkpoint=checkpoint)
    assert resumed["history"] == [
        {**row, "epoch_time_s": ours["epoch_time_s"], "eval_time_s": ours["eval_time_s"]}
        for row, ours in zip(full["history"], resumed["history"], strict=True)
    ]
    assert resumed["confusion"] == full["confusion"]

    # The recorded norm covers the filters, which Muon's penalty leaves out.
    weights = tmp_path / "weights.pt"
    train_run(config, colour_data, progress=False, weights_out=weights)
    model = build_model(FAST_MODEL, (3, 32, 32), 10)
    model.load_state_dict(torch.load(weights, weights_only=True))
    expected = sum(float(w.detach().pow(2).sum()) for w in penalized_weights(model))
    assert full["history"][-1]["weight_norm_sq"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("bias_epochs", [0, 1])
def test_whitening_bias_trains_only_in_its_epochs(
    colour_data: DatasetSplits, tmp_path: Path, bias_epochs: int
) -> None:
    """With whiten_bias_epochs = 1 the stem's bias stops changing after epoch 1, and 0 trains it on."""
    config = fast_run(whiten_bias_epochs=bias_epochs, lookahead_every=0)
    checkpoint, weights = tmp_path / "ckpt.pt", tmp_path / "weights.pt"
    train_run(config, colour_data, progress=False, checkpoint=checkpoint, stop_after=1)
    after_one = torch.load(checkpoint, weights_only=True)["model"]["stem.conv.bias"]
    assert after_one.abs().sum() > 0  # it starts at zero, so it trained in epoch 1
    train_run(config, colour_data, progress=False, checkpoint=checkpoint, weights_out=weights)
    final = torch.load(weights, weights_only=True)["stem.conv.bias"]
    assert torch.equal(final, after_one) == (bias_epochs == 1)


def test_checkpoint_without_lookahead_state_is_retrained(
    colour_data: DatasetSplits, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "ckpt.pt"
    train_run(fast_run(), colour_data, progress=False, checkpoint=checkpoint, stop_after=1)
    state = torch.load(checkpoint, weights_only=True)
    del state["lookahead"]
    torch.save(state, checkpoint)
    full = train_run(fast_run(), colour_data, progress=False)
    again = train_run(fast_run(), colour_data, progress=False, checkpoint=checkpoint)
    assert len(again["history"]) == 3
    assert again["final"]["test_accuracy"] == full["final"]["test_accuracy"]


def test_evaluate_with_tta_returns_valid_predictions(colour_data: DatasetSplits) -> None:
    model = build_model(FAST_MODEL, (3, 32, 32), 10)
    x = colour_data.test_images.float() / 255
    loss, accuracy, pred, conf = evaluate(
        model, x, colour_data.test_labels, "cpu", "fp32", "multicrop"
    )
    assert loss > 0
    assert 0 <= accuracy <= 1
    assert pred.shape == colour_data.test_labels.shape
    assert ((conf > 0) & (conf <= 1)).all()


@pytest.mark.slow
# torch.compile imports torch.jit code that warns about its own deprecation (torch 2.13).
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compiled_training_stores_plain_weights(colour_data: DatasetSplits, tmp_path: Path) -> None:
    """torch.compile wraps only the training step; the stored weights load into a plain model."""
    weights = tmp_path / "weights.pt"
    record = train_run(
        fast_run(epochs=1, compile=True, tta="none"),
        colour_data,
        progress=False,
        weights_out=weights,
    )
    assert record["status"] == "completed"
    state = torch.load(weights, weights_only=True)
    assert not any(key.startswith("_orig_mod") for key in state)
    build_model(FAST_MODEL, (3, 32, 32), 10).load_state_dict(state)
