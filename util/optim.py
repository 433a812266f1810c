"""The optimisation step shared by every training engine: scaled backward, unscale, clip, step."""
import torch


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the run stops, the last good checkpoint stays."""


def backward(loss, scaler):
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()


def optimizer_step(model, optimizer, scaler, clip_grad, want_norm=False):
    """Unscale, clip (when asked), step, zero the gradients. Returns the gradient norm when it was
    computed (clipping, or want_norm), else None."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = None
    if clip_grad or want_norm:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad or float("inf"))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm
