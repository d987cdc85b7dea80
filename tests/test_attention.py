"""Cheap CPU dropout: the distribution of torch's dropout, the same outputs where no dropout applies."""

from __future__ import annotations

import pytest
import torch

from autopeft.attention import ATTENTION, FastDropout, fast_dropout, sdpa_attention, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keeps_one_minus_p_of_the_elements_scaled_to_keep_the_mean(p):
    torch.manual_seed(0)
    x = torch.full((400_000,), 2.0)
    y = fast_dropout(x, p)
    kept = y != 0
    rate = kept.float().mean().item()
    assert abs(rate - (1 - p)) < 5 * (p * (1 - p) / x.numel()) ** 0.5
    assert torch.allclose(y[kept], torch.tensor(2.0 / (1 - p)))
    assert abs(y.mean().item() - 2.0) < 0.02


def test_no_dropout_is_the_identity_and_masks_follow_the_seed():
    x = torch.randn(3, 5)
    assert fast_dropout(x, 0.0) is x
    torch.manual_seed(1)
    first = fast_dropout(x, 0.3)
    torch.manual_seed(1)
    assert torch.equal(first, fast_dropout(x, 0.3))
    assert not torch.equal(first, fast_dropout(x, 0.3))


def test_the_gradient_passes_through_the_kept_elements_only():
    torch.manual_seed(0)
    x = torch.randn(7, 11, requires_grad=True)
    y = fast_dropout(x, 0.4)
    y.sum().backward()
    expected = (y.detach() != 0).float() / 0.6
    assert torch.allclose(x.grad, expected)


def test_dropout_modules_are_plain_dropout_outside_training():
    module = FastDropout(0.5)
    x = torch.randn(4, 4)
    assert torch.equal(module.eval()(x), x)
    assert (module.train()(torch.ones(10_000)) == 0).any()


def test_attention_applies_the_mask_then_drops_probabilities():
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 3, 5, 4) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[0, :, :, 3:] = False  # padding keys of the first example
    module = torch.nn.Module()
    module.is_causal = False  # an encoder's self-attention
    torch.manual_seed(7)
    output, _ = sdpa_attention(module, query, key, value, mask, dropout=0.2)
    torch.manual_seed(7)
    scale = fast_dropout(torch.ones(2, 3, 5, 5), 0.2)  # the same draw
    scores = (query @ key.transpose(-2, -1) / 2).masked_fill(~mask, float("-inf"))
    expected = ((scores.softmax(-1) * scale) @ value).transpose(1, 2)
    assert output.shape == (2, 5, 3, 4)
    assert torch.allclose(output, expected, atol=1e-6)
    plain, _ = sdpa_attention(module, query, key, value, mask, dropout=0.0)
    assert torch.allclose(plain, (scores.softmax(-1) @ value).transpose(1, 2), atol=1e-6)


def test_a_swapped_model_keeps_its_weights_and_evaluation_outputs(tiny_model):
    import copy

    from autopeft.models import load_model

    reference = load_model(tiny_model, 2)  # its head is fresh (the checkpoint has none): compare with a copy
    swapped = copy.deepcopy(reference)
    dropouts = sum(type(m) is torch.nn.Dropout for m in swapped.modules())
    assert use_fast_dropout(swapped) == dropouts > 0
    assert swapped.config._attn_implementation == ATTENTION
    assert all(type(m) is not torch.nn.Dropout for m in swapped.modules())
    assert swapped.state_dict().keys() == reference.state_dict().keys()
    batch = {"input_ids": torch.randint(1000, 2000, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    batch["attention_mask"][0, 5:] = 0
    with torch.no_grad():
        assert torch.allclose(swapped.eval()(**batch).logits, reference.eval()(**batch).logits, atol=1e-6)
    swapped.train()
    loss = swapped(**batch, labels=torch.tensor([0, 1, 1])).loss
    loss.backward()
    assert torch.isfinite(loss)
