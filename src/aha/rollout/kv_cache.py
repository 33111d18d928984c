"""The engine's KV buffers: per-layer keys/values in preallocated slabs, as a transformers Cache.

`SlabCache` holds one `SlabLayer` per decoder layer. A step writes its keys/values in place (no
concatenation); `resize` keeps the live batch rows and grows the buffer, which the engine doubles
when full so a long cap does not reserve memory that early-finishing rows never use.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class SlabLayer(CacheLayerMixin):
    """One layer's keys/values in a preallocated (B, H_kv, capacity, D) buffer.

    `update` writes the new positions in place and returns views of the filled part, so a step costs
    no concatenation. `offset` counts positions held elsewhere (the shared prompt prefix in cascade
    mode), so that `get_seq_length` reports the true sequence length. With `keys_transposed` the keys
    buffer is (B, H_kv, D, capacity) (the compiled CPU attention reads keys column-wise) and `update`
    returns the keys in that layout.
    """

    is_compileable = False
    is_sliding = False
    is_croppable = False

    def __init__(self, capacity: int, offset: int = 0, keys_transposed: bool = False):
        super().__init__()
        self.capacity = capacity
        self.offset = offset
        self.length = 0
        self.keys_transposed = keys_transposed

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        B, H, _, D = key_states.shape
        shape = (B, H, D, self.capacity) if self.keys_transposed else (B, H, self.capacity, D)
        self.keys = key_states.new_empty(shape)  # (B, H, C, D) or (B, H, D, C)
        self.values = value_states.new_empty((B, H, self.capacity, value_states.shape[-1]))  # (B, H, C, Dv)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        end = self._reserve(key_states, value_states, key_states.shape[-2])
        if self.keys_transposed:
            self.keys[..., self.length:end] = key_states.transpose(-1, -2)
        else:
            self.keys[:, :, self.length:end] = key_states
        self.values[:, :, self.length:end] = value_states
        self.length = end
        keys = self.keys[..., :end] if self.keys_transposed else self.keys[:, :, :end]
        return keys, self.values[:, :, :end]

    def append_values(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Like `update` for one position, but stores only the values: the caller writes the keys
        (the compiled CPU attention does, into the transposed buffer). key_states give the shape."""
        self._reserve(key_states, value_states, 1)
        self.values[:, :, self.length] = value_states[:, :, 0]
        self.length += 1

    def _reserve(self, key_states: torch.Tensor, value_states: torch.Tensor, n: int) -> int:
        """The end of `n` new positions, the buffers allocated on first use (raises when they do not fit)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + n
        if end > self.capacity:
            raise RuntimeError(f"KV buffer overflow: {end} > capacity {self.capacity}")
        return end

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.offset + self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.offset + self.length

    def get_max_length(self) -> int:
        return self.offset + self.capacity

    def resize(self, rows: torch.Tensor | None, capacity: int) -> None:
        """Keep batch rows `rows` (in that order, repeats allowed; None = all) in a buffer of `capacity`."""
        if not self.is_initialized:
            self.capacity = capacity
            return
        L = self.length
        for name in ("keys", "values"):
            old = getattr(self, name)
            time_dim = 3 if name == "keys" and self.keys_transposed else 2
            shape = list(old.shape)
            shape[0] = old.shape[0] if rows is None else rows.shape[0]
            shape[time_dim] = capacity
            new = old.new_empty(shape)
            filled = old.narrow(time_dim, 0, L)
            new.narrow(time_dim, 0, L).copy_(filled if rows is None else filled.index_select(0, rows))
            setattr(self, name, new)
        self.capacity = capacity


class SlabCache(Cache):
    """A transformers Cache made of `SlabLayer`s (one per decoder layer)."""

    def __init__(self, num_layers: int, capacity: int, offset: int = 0, keys_transposed: bool = False):
        super().__init__(layers=[SlabLayer(capacity, offset, keys_transposed) for _ in range(num_layers)])

    def resize(self, rows: torch.Tensor | None, capacity: int) -> None:
        for layer in self.layers:
            layer.resize(rows, capacity)

    @classmethod
    def from_prefix(cls, keys: list[torch.Tensor], values: list[torch.Tensor], rows: torch.Tensor,
                    capacity: int) -> SlabCache:
        """A cache whose row b starts with prompt rows[b] of the per-layer (U, H, P, D) keys/values."""
        P = keys[0].shape[2]
        cache = cls(len(keys), capacity)
        for layer, k, v in zip(cache.layers, keys, values):
            layer.lazy_initialization(k[:1].expand(rows.shape[0], -1, -1, -1), v[:1].expand(rows.shape[0], -1, -1, -1))
            layer.keys[:, :, :P] = k.index_select(0, rows)
            layer.values[:, :, :P] = v.index_select(0, rows)
            layer.length = P
        return cache
