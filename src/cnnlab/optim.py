"""Muon for convolution filters, with Nesterov SGD for every other parameter.

Muon replaces a filter tensor's momentum by a nearby matrix whose singular
values are all close to one, so the update moves every direction at a similar
rate. K. Jordan's airbench94_muon.py (github.com/KellerJordan/cifar10-airbench,
2024) reports 94.01% on CIFAR-10 after 8 epochs with it, where airbench94's SGD
with Lookahead trains 9.9. PyTorch's ``torch.optim.Muon`` takes 2-D parameters
only, so a convolution's 4-D filters are treated here as the matrix of output
channels by input channels x kernel positions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

# Quintic Newton-Schulz coefficients from airbench94_muon.py. They push small
# singular values up fast and leave them spread around one rather than at one,
# which that source found to train as well as the exact orthogonal factor.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 3


def orthogonalize(
    matrix: torch.Tensor, steps: int = NS_STEPS, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Return ``matrix`` with its singular values moved close to one, computed in ``dtype``.

    The iteration tolerates bfloat16, which halves its time on a CPU with bf16
    matrix products.
    """
    a, b, c = NS_COEFFICIENTS
    x = matrix.to(dtype)
    x = x / (x.norm() + 1e-7)  # the largest singular value is now at most one
    wide = x.shape[0] <= x.shape[1]
    if not wide:
        x = x.T  # iterate on the smaller Gram matrix
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


class Muon(torch.optim.Optimizer):
    """Muon on groups with ``orthogonalize=True``, Nesterov momentum SGD on the rest.

    An orthogonalized group's tensors are first rescaled to a norm of
    sqrt(output channels), because batch norm makes the loss blind to that scale,
    then step by lr times the orthogonalized Nesterov momentum of their gradient.
    The other groups take plain SGD steps, as ``torch.optim.SGD`` with
    ``nesterov=True`` and no dampening does.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float,
        *,
        matrix_dtype: torch.dtype = torch.float32,
    ) -> None:
        if lr < 0 or not 0 <= momentum < 1:
            raise ValueError(
                f"invalid Muon lr {lr} or momentum {momentum}: need lr >= 0, 0 <= momentum < 1"
            )
        super().__init__(params, {"lr": lr, "momentum": momentum, "orthogonalize": False})
        self.matrix_dtype = matrix_dtype

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param.grad)
                buffer = state["momentum_buffer"]
                buffer.mul_(momentum).add_(param.grad)
                update = param.grad.add(buffer, alpha=momentum)
                if group["orthogonalize"]:
                    param.mul_(math.sqrt(param.shape[0]) / (param.norm() + 1e-12))
                    flat = update.reshape(param.shape[0], -1)
                    update = orthogonalize(flat, dtype=self.matrix_dtype)
                    update = update.view_as(param).to(param.dtype)
                param.add_(update, alpha=-lr)
        return loss
