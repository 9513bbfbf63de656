"""ADMM state for structured sparsity, in scaled form.

    minimise loss(W) + sum_i rho/2 ||W_i - Z_i + U_i||^2
    Z = Proj_S(W + U)        (structured-sparse projection under the global budget)
    U = U + W - Z

Z and U are buffers (so they are checkpointed with the model and load with ``weights_only=True``).
The projection is passed in as a function, so this class knows nothing of heads or budgets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

Projector = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def _key(name: str) -> str:
    return name.replace(".", "__")


class _Penalty(torch.autograd.Function):
    """rho/2 * sum ||W - Z + U||^2 with its gradient rho * (W - Z + U) written by hand.

    The ADMM stage adds this to every training step, so it must cost little next to the step: the
    differences are made once with fused foreach kernels (one weight-sized temporary) and scaled in
    place into the gradient, where autograd's own graph of sub/add/norm made three temporaries and
    twice the memory traffic.
    """

    @staticmethod
    def forward(
        ctx: Any, rho: torch.Tensor, z: list[torch.Tensor], u: list[torch.Tensor], *weights: torch.Tensor
    ) -> torch.Tensor:
        diffs = torch._foreach_sub(list(weights), z)
        torch._foreach_add_(diffs, u)
        squares = torch.stack(torch._foreach_norm(diffs)).pow(2)
        rho = rho.to(squares)
        ctx.diffs, ctx.rho = diffs, rho
        return 0.5 * rho * squares.sum()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.diffs is None:
            raise RuntimeError(
                "AdmmState.penalty supports one backward pass per call (its gradient buffers are reused)"
            )
        diffs, ctx.diffs = ctx.diffs, None
        torch._foreach_mul_(diffs, grad * ctx.rho)
        return None, None, None, *(d if need else None for d, need in zip(diffs, ctx.needs_input_grad[3:], strict=True))


class AdmmState(nn.Module):
    """Z and U for a fixed set of named weights, plus the penalty weight rho."""

    def __init__(self, weights: dict[str, torch.Tensor], rho: float) -> None:
        super().__init__()
        if rho <= 0:
            raise ValueError(f"admm.rho must be > 0, got {rho}")
        self.names = list(weights)
        for name, w in weights.items():
            self.register_buffer(f"z__{_key(name)}", w.detach().clone())
            self.register_buffer(f"u__{_key(name)}", torch.zeros_like(w, memory_format=torch.contiguous_format))
        self.register_buffer("rho", torch.tensor(float(rho), dtype=torch.float64))
        self.register_buffer("updates", torch.tensor(0, dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(False))

    def z(self, name: str) -> torch.Tensor:
        return getattr(self, f"z__{_key(name)}")

    def u(self, name: str) -> torch.Tensor:
        return getattr(self, f"u__{_key(name)}")

    def penalty(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """rho/2 * sum ||W - Z + U||^2, differentiable (once) in W."""
        z = [self.z(n) for n in self.names]
        u = [self.u(n) for n in self.names]
        return _Penalty.apply(self.rho, z, u, *(weights[n] for n in self.names))

    @torch.no_grad()
    def update(self, weights: dict[str, torch.Tensor], project: Projector) -> None:
        """One Z-step and U-step from the current weights."""
        shifted = {n: weights[n].detach() + self.u(n) for n in self.names}
        projected = project(shifted)
        for n in self.names:
            self.z(n).copy_(projected[n])
            self.u(n).add_(weights[n].detach() - projected[n])
        self.updates += 1

    @torch.no_grad()
    def reset(self, weights: dict[str, torch.Tensor], project: Projector) -> None:
        """Start of a stage: Z = Proj(W), U = 0."""
        for n in self.names:
            self.u(n).zero_()
        projected = project({n: weights[n].detach() for n in self.names})
        for n in self.names:
            self.z(n).copy_(projected[n])
        self.initialized.fill_(True)

    @torch.no_grad()
    def primal_residual(self, weights: dict[str, torch.Tensor]) -> float:
        """||W - Z|| / ||W||: how far the weights still are from the sparse set."""
        num = sum(float((weights[n].detach() - self.z(n)).pow(2).sum()) for n in self.names)
        den = sum(float(weights[n].detach().pow(2).sum()) for n in self.names)
        return (num / max(den, 1e-30)) ** 0.5

    def scale_rho(self, factor: float, limit: float) -> None:
        """Grow rho (optional schedule); U is rescaled so that rho*U, the unscaled dual, is unchanged."""
        new = min(float(self.rho) * factor, limit)
        ratio = float(self.rho) / new
        for n in self.names:
            self.u(n).mul_(ratio)
        self.rho.fill_(new)
