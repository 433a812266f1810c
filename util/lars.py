# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""LARS (You et al., 2017, "Large Batch Training of Convolutional Networks"), the optimizer of
MAE's linear probing."""
import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio.

    For a weight with more than one dimension, the step direction is g + weight_decay * w scaled by
    trust_coefficient * ||w|| / ||g + weight_decay * w|| (unscaled when either norm is zero);
    biases and other 1-D parameters take the plain gradient, without weight decay. Then
    momentum: mu = momentum * mu + direction; w -= lr * mu.
    """

    def __init__(self, params, lr=0., weight_decay=0., momentum=0.9, trust_coefficient=0.001):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p, group):
        direction = p.grad
        if p.ndim > 1:
            direction = direction.add(p, alpha=group["weight_decay"])
            w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(direction)
            ratio = torch.where((w_norm > 0) & (d_norm > 0), group["trust_coefficient"] * w_norm / d_norm,
                                torch.ones_like(w_norm))
            direction = direction.mul(ratio)
        state = self.state[p]
        if "mu" not in state:
            state["mu"] = torch.zeros_like(p)
        mu = state["mu"]
        mu.mul_(group["momentum"]).add_(direction)
        p.add_(mu, alpha=-group["lr"])
