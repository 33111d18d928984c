"""Shared-prompt ("cascade") attention: the n samples of a prompt read its keys/values once.

The prompt's prefilled keys/values are kept once per distinct prompt (`SharedPrefix`); each row's own
cache holds its generated tokens only. `cascade_core` computes a decode step's attention over
[prompt ; generated] for all rows with one batched matmul over the prompts and one over the rows;
`cascade_attention` plugs it into a transformers model's forward through the AttentionInterface
(`register_cascade`), and the native decode step calls `cascade_core` directly.
"""

from __future__ import annotations

from typing import Any

import torch


class SharedPrefix:
    """The shared prompt prefix that cascade attention reads, one copy per distinct prompt.

    keys/values: per layer (U, H_kv, P, D), the prefilled prompt cache.
    bias: (U, 1, 1, P) additive mask (0 or -inf) for left padding, or None when no prompt is padded.
    slot: (B,) position of each batch row in the (U * group) query grid: u * group + rank in group.
    group: the largest number of live rows sharing one prompt.
    dense: True when the rows fill the grid in order (slot == arange(U * group)): every prompt has
        `group` live rows, consecutive in the batch; then rows and grid differ by a reshape only.
    row_prompt: (B,) int64 prompt index of each batch row.
    keys_t: with `transposed_keys`, per layer (U, H_kv, D, P) contiguous (the compiled kernel's
        layout; `keys` is then unused and empty); bias2d: then the bias as (U, P) float32, or None.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], bias: torch.Tensor | None,
                 transposed_keys: bool = False):
        self.values, self.bias = values, bias
        self.keys_t = [k.transpose(-1, -2).contiguous() for k in keys] if transposed_keys else []
        self.keys = [] if transposed_keys else keys
        self.bias2d = bias.reshape(bias.shape[0], bias.shape[-1]).float().contiguous() \
            if bias is not None and transposed_keys else None
        self.slot = torch.zeros(0, dtype=torch.long)
        self.row_prompt = torch.zeros(0, dtype=torch.long)
        self.group = 1
        self.dense = False

    def assign(self, row_unique: list[int], device: torch.device) -> None:
        """Lay out the live rows (their prompt index in 0..U-1, in batch order) on the query grid."""
        rank: dict[int, int] = {}
        ranks = []
        for u in row_unique:
            ranks.append(rank.get(u, 0))
            rank[u] = ranks[-1] + 1
        self.group = max(rank.values())
        slots = [u * self.group + r for u, r in zip(row_unique, ranks)]
        self.slot = torch.tensor(slots, device=device)
        self.row_prompt = torch.tensor(row_unique, dtype=torch.long, device=device)
        U = self.values[0].shape[0]
        self.dense = len(slots) == U * self.group and slots == list(range(len(slots)))

    def select(self, groups: torch.Tensor) -> None:
        """Keep only prompts `groups` (U',) (the others have no live rows left)."""
        self.keys = [k.index_select(0, groups) for k in self.keys]
        self.keys_t = [k.index_select(0, groups) for k in self.keys_t]
        self.values = [v.index_select(0, groups) for v in self.values]
        if self.bias is not None:
            self.bias = self.bias.index_select(0, groups)
        if self.bias2d is not None:
            self.bias2d = self.bias2d.index_select(0, groups)

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Hk, G, c) per-row tensor -> (U, Hk, S*G, c) on the query grid (zeros where no row)."""
        B, Hk, G, c = x.shape
        U, S = self.values[0].shape[0], self.group
        if not self.dense:
            x = x.new_zeros((U * S, Hk, G, c)).index_copy_(0, self.slot, x)  # (U*S, Hk, G, c)
        return x.view(U, S, Hk, G, c).transpose(1, 2).reshape(U, Hk, S * G, c)

    def to_rows(self, y: torch.Tensor, G: int) -> torch.Tensor:
        """(U, Hk, S*G, c) on the grid -> (B, Hk, G, c) per row."""
        U, Hk, SG, c = y.shape
        S = SG // G
        y = y.view(U, Hk, S, G, c).transpose(1, 2).reshape(U * S, Hk, G, c)
        return y if self.dense else y.index_select(0, self.slot)


def cascade_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                      aha_prefix: SharedPrefix | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Decode-step attention over a shared prefix and per-row suffixes (transformers' interface).

    query: (B, Hq, 1, D). key/value: (B, H_kv, T, D), the generated part (T >= 1: the current token).
    aha_prefix: the shared prefix; without it (or for several query positions) this is plain SDPA.
    Returns ((B, 1, Hq, D), None) like transformers' attention functions.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if aha_prefix is None or query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    B, Hq, _, D = query.shape
    scale = scaling if scaling is not None else D ** -0.5
    out = cascade_core(query.reshape(B, key.shape[1], -1, D) * scale, key, value, aha_prefix, module.layer_idx)
    return out.reshape(B, 1, Hq, D), None


def cascade_core(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, prefix: SharedPrefix,
                 layer: int) -> torch.Tensor:
    """Attention of one new query per row over its prompt (shared) and its generated keys.

    The n samples of a prompt attend to the same prompt keys, so those are read once per prompt for
    all its rows: the queries are laid out on a (prompt, row of the prompt) grid and one batched
    matmul over all prompts and KV heads gives every row's prompt scores; each row's own generated
    keys are scored by one batched matmul over rows. The two score blocks are concatenated per row
    and go through one softmax (so the result is plain attention over [prompt ; generated], exact up
    to float rounding); the weights are split again for the two value matmuls, whose outputs add.

    q: (B, H_kv, G, D) queries, already scaled; head h = kv_head * G + g reads KV head h // G.
    key/value: (B, H_kv, T, D) the rows' generated keys/values, the current token included.
    prefix: the prompts' keys/values and the rows' places on the query grid.
    Returns (B, H_kv, G, D) in the values' dtype.
    """
    G = q.shape[2]
    pk, pv = prefix.keys[layer], prefix.values[layer]  # (U, Hk, P, D)
    P = pk.shape[2]
    sp = torch.matmul(prefix.to_grid(q), pk.transpose(-1, -2))  # (U, Hk, S*G, P)
    if prefix.bias is not None:
        sp = sp + prefix.bias
    ss = torch.matmul(q, key.transpose(-1, -2))  # (B, Hk, G, T)
    scores = torch.cat([prefix.to_rows(sp, G), ss], dim=-1)  # (B, Hk, G, P + T)
    if scores.dtype == value.dtype == torch.float32:
        w = torch.softmax(scores, dim=-1)  # (B, Hk, G, P + T)
    else:  # low-precision models: softmax in float32, weights back in the values' dtype
        w = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    op = prefix.to_rows(torch.matmul(prefix.to_grid(w[..., :P]), pv), G)  # (B, Hk, G, D)
    return op + torch.matmul(w[..., P:], value)  # (B, Hk, G, D)


# the name `cascade_attention` is registered under in transformers' AttentionInterface
CASCADE_ATTENTION = "aha_cascade"


def register_cascade() -> None:
    """Make `cascade_attention` available to models as attention implementation CASCADE_ATTENTION."""
    from transformers import AttentionInterface

    AttentionInterface.register(CASCADE_ATTENTION, cascade_attention)
