"""An LM head cut down to the tokens a verdict can contain (``from_pretrained(..., prune_lm_head=True)``).

A verdict reads a handful of ids: ``\\n\\n``, ``safe``, ``unsafe``, ``\\n``, ``S``, the numbers, ``,`` and end of
turn. Llama Guard 3 1B's head has 128,256 rows of 2,048 (a fifth of the model's weights, read at every
forward); Meta's Llama Guard 3 1B INT4 keeps 20 of them. :class:`VerdictHead` keeps the rows it is given and
returns full-width logits with ``-inf`` elsewhere, so token ids, argmax and softmax code work unchanged.

What changes: probabilities are renormalised over the kept tokens (a well-trained guard puts almost all its mass
on them), and the model can no longer answer with a token outside them: an answer that a full head would start
with another token now starts with a kept one (still an error unless it reads as a verdict). The deviation is
measured in the tests and the README.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class VerdictHead(torch.nn.Module):
    """A linear head over ``keep`` rows of ``head``'s weight, scattered into ``vocab_size`` logits.

    Example:
        >>> head = torch.nn.Linear(8, 100, bias=False)
        >>> small = VerdictHead(head, keep=[3, 7])
        >>> logits = small(torch.randn(1, 2, 8))
        >>> logits.shape, bool(torch.isinf(logits[0, 0, 0]))
        (torch.Size([1, 2, 100]), True)
    """

    def __init__(self, head: torch.nn.Module, keep: Iterable[int]) -> None:
        super().__init__()
        rows = sorted(set(keep))
        weight = head.weight
        if weight.is_meta:
            raise ValueError("the LM head is offloaded (on the meta device); load it on a real device to prune it")
        if not rows or rows[0] < 0 or rows[-1] >= weight.shape[0]:
            raise ValueError(f"keep must name rows of the {weight.shape[0]}-row head, got {rows[:5]}...")
        self.vocab_size = weight.shape[0]
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.long), persistent=False)
        self.weight = torch.nn.Parameter(weight.detach()[self.rows].clone(), requires_grad=False)
        bias = getattr(head, "bias", None)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach()[self.rows].clone(), requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(hidden.dtype)
        kept = torch.nn.functional.linear(hidden.to(weight.device), weight, self.bias).to(hidden.device)
        out = kept.new_full((*kept.shape[:-1], self.vocab_size), float("-inf"))
        out[..., self.rows] = kept
        return out


def prune_lm_head(model: Any, keep: Iterable[int]) -> VerdictHead:
    """Replace ``model``'s output head by a :class:`VerdictHead` over ``keep``, in place; returns the new head.

    With tied embeddings the input embedding is left whole (it is still needed to read the prompt).
    """
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ValueError(f"{type(model).__name__} has no output head to prune")
    if isinstance(head, VerdictHead):
        raise ValueError("the LM head is already pruned")
    small = VerdictHead(head, keep).to(head.weight.device)
    model.set_output_embeddings(small)
    # A tied model must not tie the small head back to the embedding.
    if getattr(model.config, "tie_word_embeddings", False):
        model.config.tie_word_embeddings = False
    text_config = getattr(model.config, "text_config", None)
    if text_config is not None and getattr(text_config, "tie_word_embeddings", False):
        text_config.tie_word_embeddings = False
    return small
