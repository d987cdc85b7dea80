"""Dropout that draws its random mask cheaply on CPUs: the same distribution, a fraction of the cost.

PyTorch's CPU dropout draws one Bernoulli sample per element; profiling a MiniLM proxy training
step here showed ``aten::bernoulli_`` at 18% of the step (attention probabilities are the largest
dropped tensors), plus the safe-softmax checks of the SDPA fallback that runs whenever attention
dropout is on. Here one uniform 64-bit draw gives four 16-bit lanes, one per element, each
compared with a threshold: an element is kept with probability ``1 - p`` (``p`` rounded to a
multiple of 2**-16, at most 7.7e-6 away) and scaled by ``1 / (1 - p)``, as ``torch.nn.Dropout``
does. Off CPUs (GPUs draw masks fast), in evaluation, and for ``p == 0`` it is plain PyTorch.

:func:`use_fast_dropout` swaps a model's ``nn.Dropout`` modules and, for SDPA attention, its
attention function (:func:`sdpa_attention`: eager attention with this dropout while training on a
CPU, transformers' SDPA otherwise).
"""

from __future__ import annotations

import torch

LANES = 1 << 16
"""Values of one 16-bit lane: an element is kept when its lane is among the top ``(1 - p) * LANES``."""
ATTENTION = "autopeft_sdpa"
"""Name under which :func:`sdpa_attention` is registered with transformers."""


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero each element of ``x`` with probability ``p`` and scale the rest by ``1 / (1 - p)`` (training).

    Args:
        x: the input (any shape).
        p: drop probability in [0, 1).
    """
    if p <= 0.0:
        return x
    count = x.numel()
    draws = torch.empty((count + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    lanes = draws.view(torch.int16)[:count].view(x.shape)  # four uniform 16-bit lanes per draw
    scale = (lanes >= round(p * LANES) - LANES // 2).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * scale  # autograd keeps ``scale`` for the backward pass, as dropout keeps its mask


class FastDropout(torch.nn.Dropout):
    """``torch.nn.Dropout`` with :func:`fast_dropout` while training on a CPU."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (torch's argument name)
        if self.training and self.p > 0 and input.device.type == "cpu":
            return fast_dropout(input, self.p)
        return super().forward(input)


def sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Transformers' SDPA attention, except that training with dropout on a CPU uses :func:`fast_dropout`.

    PyTorch's fused CPU kernel has no dropout, so SDPA falls back to its math path there anyway;
    this path is that math (scores, mask, softmax, dropout, weighted values) with the cheap mask.

    Args:
        module: the attention module.
        query: ``[batch, heads, q_len, head_dim]``.
        key: ``[batch, heads, kv_len, head_dim]``.
        value: ``[batch, heads, kv_len, head_dim]``.
        attention_mask: boolean (true: attend) or additive mask broadcastable to the scores, or ``None``.
        dropout: dropout on the attention probabilities.
        scaling: score scale (default ``head_dim ** -0.5``).
        kwargs: passed on to transformers' SDPA attention.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = kwargs.get("is_causal")
    if causal is None:
        causal = getattr(module, "is_causal", True)  # transformers' SDPA assumes causal when a module does not say
    plain = query.device.type != "cpu" or dropout <= 0.0 or causal or kwargs.get("position_bias") is not None
    if plain or key.shape[1] != query.shape[1]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)  # fmt: skip
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probabilities = fast_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), None


def register_attention() -> None:
    """Make :func:`sdpa_attention` known to transformers as ``autopeft_sdpa`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTENTION, sdpa_attention)
    AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def use_fast_dropout(model: torch.nn.Module) -> int:
    """Give a model :class:`FastDropout` modules and, where it uses SDPA attention, :func:`sdpa_attention`.

    The swap changes no parameter and no module path (state dicts and exports are unchanged).

    Args:
        model: a transformers model (others get the module swap only).

    Returns:
        The number of dropout modules swapped.
    """
    swapped = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout:
            module.__class__ = FastDropout
            swapped += 1
    config = getattr(model, "config", None)
    settable = getattr(model, "_can_set_attn_implementation", lambda: False)  # models on AttentionInterface
    if getattr(config, "_attn_implementation", None) == "sdpa" and settable():
        register_attention()
        model.set_attn_implementation(ATTENTION)
    return swapped
