"""The engine's seeded sampler: counter-based uniforms and inverse-CDF sampling.

Each row draws one uniform per step from a hash of (seed, prompt index, sample index, step)
(`row_keys`, `step_uniforms`, `uniform_table`), so completion j of prompt i depends only on those and
the logits, never on which other rows shared the batch, the batch size or the device. `sample_tokens`
turns a row's uniform into a token (temperature, top-k, top-p) and returns its log-probability.
"""

from __future__ import annotations

import torch

# ----------------------------------------------------------------------------- counter-based uniforms

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor | int, c: int) -> torch.Tensor | int:
    """(x * c) mod 2^32 for x in [0, 2^32) without int64 overflow: multiply by c's 16-bit halves."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: torch.Tensor | int) -> torch.Tensor | int:
    """A 32-bit integer finaliser (xor-shift-multiply, constants of Wellons' "lowbias32"); on a tensor
    or a Python int (per-step constants: one tensor op chain fewer per step)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _combine(h: torch.Tensor, x: torch.Tensor | int) -> torch.Tensor:
    """Hash of the pair (h, x); x is mixed first so that consecutive small integers spread."""
    if not isinstance(x, int):
        x = x.to(torch.int64)
    return _mix32(h ^ _mix32((x + 0x9E3779B9) & _MASK32))


def _unit(h: torch.Tensor) -> torch.Tensor:
    """float32 uniforms in [0, 1 - 2^-24] from 32-bit hashes h (their top 24 bits)."""
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def row_keys(seed: int, prompt_index: torch.Tensor, sample_index: torch.Tensor) -> torch.Tensor:
    """(B,) int64 per-row random keys in [0, 2^32) from (seed, prompt_index, sample_index)."""
    h = _mix32(torch.tensor(seed & _MASK32, dtype=torch.int64, device=prompt_index.device))
    h = _combine(h, (seed >> 32) & _MASK32)
    return _combine(_combine(h.expand_as(prompt_index), prompt_index), sample_index)


def step_uniforms(keys: torch.Tensor, step: int) -> torch.Tensor:
    """(B,) float32 uniforms in [0, 1 - 2^-24] for generation step `step` (0-based) of each row key.

    24 bits: a float32 holds them exactly, which is as fine as a float32 cumulative sum can resolve.
    """
    return _unit(_combine(keys, step))


def uniform_table(keys: torch.Tensor, steps: int, start: int = 0) -> torch.Tensor:
    """(B, steps) float32: column j equals `step_uniforms(keys, start + j)`, computed in one batch of
    ops (the decode loop reads a column per step instead of hashing anew, a block of steps at a time)."""
    t = torch.arange(start, start + steps, device=keys.device)[None, :]  # (1, T)
    return _unit(_combine(keys[:, None], t))


# ----------------------------------------------------------------------------- sampling


def sample_tokens(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float = 1.0,
                  top_k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row by inverse-CDF with the given uniforms.

    logits: (B, V) float32 next-token logits.
    uniforms: (B,) in [0, 1): row b takes the first token (in vocabulary order) whose cumulative
        filtered probability exceeds uniforms[b] * (1 - 2^-20) * total.
    temperature: 0 = greedy (argmax; uniforms unused).
    top_k: keep tokens whose scaled logit is >= the k-th largest (ties at the boundary are kept); 0 = off.
    top_p: then keep the smallest set of most likely tokens (renormalised after top-k) whose mass
        reaches top_p: a token is kept when the mass of the tokens ranked above it is < top_p.

    Returns (tokens (B,) int64, logprobs (B,) float32). The log-probability is that of the token under
    the temperature-scaled distribution BEFORE top-k/top-p filtering (log_softmax(logits / T); plain
    log_softmax(logits) when greedy). It is a sampling diagnostic; trainers recompute their own.

    Cost: the unfiltered path makes four passes over (B, V) (max, subtract, exp, cumsum); the
    probabilities stay unnormalised (the target scales with their total), and the log-probability
    is formed for the sampled tokens only.
    """
    if temperature <= 0:
        tokens = logits.argmax(dim=-1)  # (B,)
        lse = torch.logsumexp(logits, dim=-1)  # (B,)
        return tokens, logits.gather(1, tokens[:, None]).squeeze(1) - lse
    scaled = logits / temperature if temperature != 1.0 else logits  # (B, V)
    z = scaled - scaled.amax(dim=-1, keepdim=True)  # (B, V), max 0
    probs = z.exp()  # (B, V) unnormalised, max 1
    V = probs.shape[-1]
    filtered = False
    total = None  # (B, 1) unfiltered mass, when filtering changes the cdf's last entry
    if 0 < top_k < V:
        total = probs.sum(-1, keepdim=True)
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]  # (B, 1)
        probs = probs.masked_fill(z < kth, 0.0)
        filtered = True
    if top_p < 1.0:
        if total is None:
            total = probs.sum(-1, keepdim=True)
        # rank by descending probability (stable: ties keep vocabulary order)
        sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)  # (B, V)
        sorted_p = sorted_p / sorted_p.sum(-1, keepdim=True)
        mass_above = sorted_p.cumsum(-1) - sorted_p  # (B, V)
        drop_sorted = mass_above >= top_p
        drop_sorted[:, 0] = False
        probs = probs.masked_fill(torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted), 0.0)
        filtered = True
    cdf = probs.cumsum(dim=-1)  # (B, V)
    # the factor keeps the target strictly below the total despite float rounding, so the token found
    # always has a positive probability (cdf[i] > target >= cdf[i-1] means p_i > 0)
    target = (uniforms * (1.0 - 2.0 ** -20) * cdf[:, -1]).unsqueeze(1)  # (B, 1)
    tokens = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=V - 1)  # (B,) clamp: NaN logits
    log_total = (total if filtered else cdf[:, -1:]).log().squeeze(1)  # (B,)
    return tokens, z.gather(1, tokens[:, None]).squeeze(1) - log_total
