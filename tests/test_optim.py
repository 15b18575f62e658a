"""Muon: the orthogonalizing step on filters and the SGD step on everything else."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cnnlab.config import default_study, validate_study
from cnnlab.errors import ConfigError
from cnnlab.models import build_model, conv_filters, norm_biases, penalized_weights
from cnnlab.optim import Muon, orthogonalize
from cnnlab.study import plan_study
from cnnlab.train import make_optimizer, penalty_weights

CIFAR = default_study("cifar10")
MUON = dataclasses.replace(CIFAR.train, optimizer="muon")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(8, 40), (40, 8), (16, 16)])
def test_orthogonalize_brings_singular_values_near_one(
    shape: tuple[int, int], dtype: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(0)
    # Singular values over two orders of magnitude.
    u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=generator))
    v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1], generator=generator))
    k = min(shape)
    sigma = torch.logspace(-1, 1, k)
    matrix = u[:, :k] @ torch.diag(sigma) @ v[:, :k].T
    result = orthogonalize(matrix, steps=5, dtype=dtype).float()
    assert result.shape == matrix.shape
    singular = torch.linalg.svdvals(result)
    assert singular.min() > 0.5
    assert singular.max() < 1.3
    # The singular vectors stay: the result's column space is the matrix's.
    projected = u[:, :k] @ (u[:, :k].T @ result)
    assert torch.allclose(projected, result, atol=1e-4 if dtype == torch.float32 else 5e-2)


def test_plain_groups_step_like_nesterov_sgd() -> None:
    generator = torch.Generator().manual_seed(1)
    start = torch.randn(5, 3, generator=generator)
    grads = [torch.randn(5, 3, generator=generator) for _ in range(3)]
    ours = torch.nn.Parameter(start.clone())
    reference = torch.nn.Parameter(start.clone())
    muon = Muon([ours], lr=0.1, momentum=0.85)
    sgd = torch.optim.SGD([reference], lr=0.1, momentum=0.85, nesterov=True)
    for grad in grads:
        ours.grad, reference.grad = grad.clone(), grad.clone()
        muon.step()
        sgd.step()
    assert torch.allclose(ours, reference, atol=1e-6)


def test_orthogonalized_group_fixes_the_norm_and_steps_evenly() -> None:
    generator = torch.Generator().manual_seed(2)
    weight = torch.nn.Parameter(3.0 * torch.randn(6, 4, 3, 3, generator=generator))
    direction = weight.detach() / weight.detach().norm()
    muon = Muon([{"params": [weight], "orthogonalize": True}], lr=0.0, momentum=0.6)
    weight.grad = torch.randn(weight.shape, generator=generator)
    muon.step()
    # Rescaled to norm sqrt(6 output channels), direction kept.
    assert weight.norm().item() == pytest.approx(6**0.5, rel=1e-5)
    assert torch.allclose(weight / weight.norm(), direction, atol=1e-6)
    before = weight.detach().clone()
    muon.param_groups[0]["lr"] = 0.01
    muon.step()
    step = (before - weight.detach()).reshape(6, -1)
    singular = torch.linalg.svdvals(step) / 0.01
    assert singular.min() > 0.3
    assert singular.max() < 1.3


def test_muon_groups_cover_each_trained_parameter_once() -> None:
    model = build_model(CIFAR.model, (3, 32, 32), 10)
    optimizer, _ = make_optimizer(model, MUON, steps=10)
    main, biases, filters = optimizer.param_groups
    assert not main["orthogonalize"]
    assert not biases["orthogonalize"]
    assert filters["orthogonalize"]
    assert {id(p) for p in filters["params"]} == {id(p) for p in conv_filters(model)}
    assert model.stem is not None
    expected = [*norm_biases(model), model.stem[0].bias]
    assert {id(p) for p in biases["params"]} == {id(p) for p in expected}
    assert [p.shape for p in main["params"]] == [(10, 256), (10,)]  # the classifier
    assert (filters["initial_lr"], filters["momentum"]) == (MUON.muon_lr, MUON.muon_momentum)
    assert biases["initial_lr"] == pytest.approx(MUON.lr * MUON.bias_lr_scale)
    every = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_muon_penalty_leaves_out_the_filters() -> None:
    model = build_model(CIFAR.model, (3, 32, 32), 10)
    assert len(penalty_weights(model, CIFAR.train)) == len(penalized_weights(model)) > 1
    assert [w.shape for w in penalty_weights(model, MUON)] == [(10, 256)]


def test_muon_settings_are_checked() -> None:
    validate_study(dataclasses.replace(CIFAR, train=MUON), (3, 32, 32))
    for field, value in [("muon_lr", 0.0), ("muon_momentum", 1.0)]:
        bad = dataclasses.replace(CIFAR, train=dataclasses.replace(MUON, **{field: value}))
        with pytest.raises(ConfigError, match=f"train.{field}"):
            validate_study(bad, (3, 32, 32))


def test_unused_muon_settings_keep_the_run_key() -> None:
    plain = plan_study(CIFAR, "cpu")
    changed = dataclasses.replace(CIFAR, train=dataclasses.replace(CIFAR.train, muon_lr=0.5))
    assert list(plan_study(changed, "cpu").runs) == list(plain.runs)
    muon = dataclasses.replace(CIFAR, train=MUON)
    assert (
        plan_study(muon, "cpu").sections["baseline"]["runs"] != plain.sections["baseline"]["runs"]
    )
