"""The native decode step: a lean prefill and decode step of Llama-family models over their own weights.

`NativeDecoder` (Llama/Mistral/Qwen2/Qwen3, plain or with plain LoRA adapters merged into the step's
weight copies at each call, see `_linear_parts`) skips transformers' per-module overhead. Its decode
step uses the shared-prompt attention (`aha.rollout.cascade`); for float32 on CPU the linear layers
go through oneDNN (`_lin`) and the attention and RMSNorm through the compiled kernels when the
machine can build them (`aha.rollout.cpu_kernels`).
"""

from __future__ import annotations

from typing import Any

import torch

from aha.errors import AhaError
from aha.models import hf_model
from aha.rollout.cascade import SharedPrefix, cascade_core
from aha.rollout.cpu_kernels import CascadeKernels, cascade_kernels
from aha.rollout.kv_cache import SlabCache

# architectures whose decoder layer is exactly: RMSNorm -> q/k/v (optional per-head q/k RMSNorm) ->
# rotary -> attention -> o_proj -> residual -> RMSNorm -> down(silu(gate) * up) -> residual
_NATIVE_TYPES = ("llama", "mistral", "qwen2", "qwen3")
# fusing q/k/v and gate/up into one matmul each saves calls but copies the weights at every
# generate call; worth it only while the copies are small
_FUSE_MAX_PARAMS = 50_000_000


class NativeDecoder:
    """The decode step of Llama-family models written directly over the model's weights.

    For small models most of a transformers forward is Python and tiny kernels (module calls,
    RMSNorm in 8 ops, mask plumbing); this step does the same arithmetic with fewer, larger calls,
    reading the model's current parameters, so training updates are always seen. Only models of
    `_NATIVE_TYPES` whose every module it reproduces qualify (`supports`: plain, or plain LoRA).
    `prefill` runs the prompts (SDPA attention), `step` one token per row (cascade attention).
    """

    def __init__(self, model: Any):
        model = hf_model(model)  # LoRA layers stay inside it; `_linear_parts` merges them
        self.model = model
        base = model.model
        self.layers = list(base.layers)
        self.rotary = base.rotary_emb
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.fuse = sum(p.numel() for p in model.parameters()) <= _FUSE_MAX_PARAMS
        self._weights: list[dict[str, Any]] | None = None
        self.kernels: CascadeKernels | None = None

    @staticmethod
    def supports(model: Any) -> bool:
        """True when `model` is a Llama-family causal LM this step reproduces: plain, or with plain LoRA
        adapters on its attention/MLP projections (merged into the step's weight copies), when small
        enough for those copies."""
        wrapped, model = model, hf_model(model)
        cfg = getattr(model, "config", None)
        if getattr(cfg, "model_type", None) not in _NATIVE_TYPES:
            return False
        if wrapped is not model and sum(p.numel() for p in model.parameters()) > _FUSE_MAX_PARAMS:
            return False  # merged copies of every adapted weight at each call: only for small models
        base = getattr(model, "model", None)
        if base is None or not isinstance(getattr(model, "lm_head", None), torch.nn.Linear) \
                or not hasattr(base, "rotary_emb") or type(base.embed_tokens) is not torch.nn.Embedding:
            return False
        if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "attn_logit_softcapping", None):
            return False
        norms = [base.norm]
        for layer in base.layers:
            attn, mlp = layer.self_attn, getattr(layer, "mlp", None)
            linears = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")] + \
                [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
            if any(_linear_parts(x) is None for x in linears):
                return False
            if type(getattr(mlp, "act_fn", None)).__name__ not in ("SiLU", "SiLUActivation"):
                return False
            if abs(getattr(attn, "scaling", 0.0) - attn.head_dim ** -0.5) > 1e-12:
                return False
            norms += [layer.input_layernorm, layer.post_attention_layernorm]
            norms += [getattr(attn, n) for n in ("q_norm", "k_norm") if hasattr(attn, n)]
            extra = {n for n, _ in attn.named_children()} - {"q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"}
            if extra:
                return False
        return all(type(n).__name__.endswith("RMSNorm") and hasattr(n, "variance_epsilon") for n in norms)

    def refresh(self) -> None:
        """Take the model's current weights (fused copies are rebuilt: training changes them)."""
        weights = []
        pack = self.fuse and _onednn_usable(self.model.lm_head.weight)
        for layer in self.layers:
            a, m = layer.self_attn, layer.mlp
            w: dict[str, Any] = {
                "ln1": (layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon),
                "ln2": (layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon),
                "o": _lin_spec(*_linear_parts(a.o_proj), pack),
                "down": _lin_spec(*_linear_parts(m.down_proj), pack),
                "q_norm": (a.q_norm.weight, a.q_norm.variance_epsilon) if hasattr(a, "q_norm") else None,
                "k_norm": (a.k_norm.weight, a.k_norm.variance_epsilon) if hasattr(a, "k_norm") else None,
                "head_dim": a.head_dim,
            }
            qkv = [_linear_parts(x) for x in (a.q_proj, a.k_proj, a.v_proj)]
            gu = [_linear_parts(x) for x in (m.gate_proj, m.up_proj)]
            if self.fuse:
                w["qkv"] = [_lin_spec(torch.cat([wt for wt, _ in qkv]), _cat_bias(qkv), pack)]
                w["gu"] = [_lin_spec(torch.cat([wt for wt, _ in gu]), _cat_bias(gu), pack)]
            else:
                w["qkv"] = [_lin_spec(wt, b, False) for wt, b in qkv]
                w["gu"] = [_lin_spec(wt, b, False) for wt, b in gu]
            weights.append(w)
        self._weights = weights
        self._head = _lin_spec(self.model.lm_head.weight, self.model.lm_head.bias, pack)
        self.packed = pack
        # the compiled kernels read raw float32 CPU buffers: every parameter must be one
        cpu_f32 = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in self.model.parameters())
        self.kernels = cascade_kernels() if cpu_f32 else None

    def _norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """RMSNorm of (N, H) rows: one compiled pass where the CPU kernels are in use, else `_rms`."""
        if self.kernels is not None:
            return self.kernels.rms_norm(x, weight, eps)
        return _rms(x, weight, eps)

    def prefill(self, ids: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor | None
                ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The prompts' forward: last-position logits (U, V) float32 and per-layer keys/values.

        ids, positions: (U, P) left-padded prompt ids and their position ids.
        allowed: (U, 1, P, P) bool attention mask (causal and padding), or None: plain causal.
        Returns logits (U, V) and per layer keys, values (U, H_kv, P, D) (contiguous).
        """
        assert self._weights is not None
        F = torch.nn.functional
        model = self.model
        Hq, Hk = self.heads, self.kv_heads
        U, P = ids.shape
        x = F.embedding(ids, model.model.embed_tokens.weight)  # (U, P, H)
        cos, sin = self.rotary(x, positions)  # (U, P, D) each
        D = cos.shape[-1]
        sin = _signed_sin(sin)[:, :, None, :]  # (U, P, 1, D)
        cos = cos[:, :, None, :]
        x = x.reshape(U * P, -1)  # (U*P, H)
        keys, values = [], []
        for w in self._weights:
            h = self._norm(x, *w["ln1"])
            if len(w["qkv"]) == 1:
                qkv = _lin(h, w["qkv"][0]).view(U, P, Hq + 2 * Hk, D)
                q, k, v = qkv[:, :, :Hq], qkv[:, :, Hq:Hq + Hk], qkv[:, :, Hq + Hk:]
            else:
                q, k, v = (_lin(h, spec).view(U, P, -1, D) for spec in w["qkv"])
            q, k = _qk_norm(q, k, w)
            q, k = _rotary(q, cos, sin), _rotary(k, cos, sin)  # (U, P, Hq, D), (U, P, Hk, D)
            k = k.transpose(1, 2).contiguous()  # (U, Hk, P, D)
            v = v.transpose(1, 2).contiguous()  # (U, Hk, P, D)
            keys.append(k)
            values.append(v)
            attn = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=allowed,
                                                  is_causal=allowed is None, enable_gqa=Hq != Hk)  # (U, Hq, P, D)
            x = self._attn_out_and_mlp(x, attn.transpose(1, 2).reshape(U * P, Hq * D), w)
        return self._logits(x.view(U, P, -1)[:, -1]), keys, values

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: SlabCache,
             prefix: SharedPrefix) -> torch.Tensor:
        """Logits (B, V) float32 for one new token per row.

        tokens, positions: (B,) the tokens to feed and their positions.
        cache: per-row generated keys/values (the new ones are written into it).
        prefix: the shared prompt keys/values (cascade attention).
        """
        assert self._weights is not None
        F = torch.nn.functional
        model = self.model
        Hq, Hk = self.heads, self.kv_heads
        x = F.embedding(tokens, model.model.embed_tokens.weight)  # (B, H)
        B = x.shape[0]
        cos, sin = self.rotary(x[:, None, :], positions[:, None])  # (B, 1, D) each
        D = cos.shape[-1]
        # rotary for q and k heads in one pass: x * cos + swap_halves(x) * sin_signed, where
        # swap_halves(x) * sin_signed == rotate_half(x) * sin; the q rows also carry the attention
        # scale (exact when it is a power of two, as for D = 64 or 256)
        scale = D ** -0.5
        sin = _signed_sin(sin)  # (B, 1, D)
        cos_qk = torch.cat([(cos * scale).expand(B, Hq, D), cos.expand(B, Hk, D)], 1)  # (B, Hq+Hk, D)
        sin_qk = torch.cat([(sin * scale).expand(B, Hq, D), sin.expand(B, Hk, D)], 1)  # (B, Hq+Hk, D)
        for i, w in enumerate(self._weights):
            if w["head_dim"] != D:
                raise AhaError(f"native step: layer {i} has head_dim {w['head_dim']}, rotary gives {D}")
            h = self._norm(x, *w["ln1"])
            if len(w["qkv"]) == 1:
                qkv = _lin(h, w["qkv"][0])  # (B, (Hq + 2 Hk) D)
                v = qkv[:, (Hq + Hk) * D:].view(B, Hk, D)
                if w["q_norm"] is None:
                    qk = qkv[:, :(Hq + Hk) * D].view(B, Hq + Hk, D)
                else:
                    qk = torch.cat([_rms(qkv[:, :Hq * D].view(B, Hq, D), *w["q_norm"]),
                                    _rms(qkv[:, Hq * D:(Hq + Hk) * D].view(B, Hk, D), *w["k_norm"])], 1)
            else:
                q, k, v = (_lin(h, spec) for spec in w["qkv"])
                q, k = _qk_norm(q.view(B, Hq, D), k.view(B, Hk, D), w)
                v = v.view(B, Hk, D)
                qk = torch.cat([q, k], 1)  # (B, Hq + Hk, D)
            qk = _rotary(qk, cos_qk, sin_qk)
            layer = cache.layers[i]
            q = qk[:, :Hq].view(B, Hk, Hq // Hk, D)  # (B, Hk, G, D)
            if self.kernels is not None:  # the kernel stores this step's keys itself
                layer.append_values(qk[:, Hq:, None, :], v[:, :, None, :])
                attn = self.kernels.attention(q, prefix.keys_t[i], prefix.values[i], prefix.bias2d, prefix.row_prompt,
                                              layer.keys, layer.values, layer.length,
                                              new_keys=qk[:, Hq:])  # (B, Hk, G, D)
            else:
                keys, values = layer.update(qk[:, Hq:, None, :], v[:, :, None, :])
                attn = cascade_core(q, keys, values, prefix, i)  # (B, Hk, G, D)
            x = self._attn_out_and_mlp(x, attn.reshape(B, Hq * D), w)
        return self._logits(x)  # (B, V)

    def _attn_out_and_mlp(self, x: torch.Tensor, attn: torch.Tensor, w: dict[str, Any]) -> torch.Tensor:
        """The rest of a layer on residual rows x (N, H): attention output (N, Hq * D) projected and
        added, then the MLP on the normed sum added."""
        x = x + _lin(attn, w["o"])
        return x + _mlp(self._norm(x, *w["ln2"]), w)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, V) float32 logits of the last hidden states x (N, H): final norm, then the LM head."""
        norm = self.model.model.norm
        return _lin(self._norm(x, norm.weight, norm.variance_epsilon), self._head).float()


# ----------------------------------------------------------------------------- linear layers via oneDNN
#
# On CPU, PyTorch runs F.linear through MKL, which on some CPUs (AMD ones among them) takes a code path
# well below the oneDNN kernels PyTorch also ships (the ones torch.compile's CPU backend uses) on a
# decode step's small shapes. The native step therefore packs its (small) weight copies for oneDNN
# once per generate call and calls them through `mkldnn._linear_pointwise`, after checking once per
# process that the op exists and agrees with F.linear.

_ONEDNN_STATE: dict[str, bool] = {}


def _onednn_usable(weight: torch.Tensor) -> bool:
    """True when float32 CPU linears can go through oneDNN's packed-weight op (checked once)."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return False
    if "ok" not in _ONEDNN_STATE:
        _ONEDNN_STATE["ok"] = _onednn_self_check()
    return _ONEDNN_STATE["ok"]


def _onednn_self_check() -> bool:
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        w = torch.randn(24, 16, generator=g)
        b = torch.randn(24, generator=g)
        x = torch.randn(5, 16, generator=g)
        packed = torch.ops.mkldnn._reorder_linear_weight(w)
        y = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
        y0 = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        ref = torch.nn.functional.linear(x, w, b)
        return bool(torch.allclose(y, ref, rtol=1e-4, atol=1e-4)
                    and torch.allclose(y0 + b, ref, rtol=1e-4, atol=1e-4))
    except Exception:  # noqa: BLE001 - any failure (op missing, build without oneDNN) means: use F.linear
        return False


def _lin_spec(weight: torch.Tensor, bias: torch.Tensor | None, pack: bool) -> tuple:
    """A linear layer for `_lin`: (weight, bias, None), or (None, bias, packed weight) for oneDNN."""
    if pack:
        return None, bias, torch.ops.mkldnn._reorder_linear_weight(weight.detach())
    return weight, bias, None


def _lin(x: torch.Tensor, spec: tuple) -> torch.Tensor:
    """F.linear(x, weight, bias), through oneDNN when the spec holds a packed weight."""
    weight, bias, packed = spec
    if packed is not None:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return torch.nn.functional.linear(x, weight, bias)


def _cat_bias(parts: list[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor | None:
    """The biases of (weight, bias) pairs concatenated (zeros where one has none), or None if none has."""
    if all(b is None for _, b in parts):
        return None
    return torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in parts])


def _linear_parts(module: Any) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight, bias) of the linear map `module` computes in eval mode, or None if it is not one the
    native step can reproduce.

    A plain nn.Linear gives its own parameters. A peft LoRA layer over an nn.Linear gives its base
    weight plus, for each active unmerged adapter, the adapter's delta (B @ A * scaling, peft's own
    get_delta_weight): the same function as base(x) + B(A(x)) * scaling up to float rounding, since
    dropout is off in eval mode. Adapter variants (DoRA and the like) and adapters with a bias are
    refused (None).
    """
    if type(module) is torch.nn.Linear:
        return module.weight, module.bias
    base = getattr(module, "base_layer", None)
    lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
    if type(base) is not torch.nn.Linear or lora_a is None or lora_b is None or not hasattr(module, "get_delta_weight"):
        return None
    if module.disable_adapters or module.merged:
        return base.weight, base.bias
    weight = base.weight
    for name in module.active_adapters:
        if name not in lora_a:
            continue
        if name in getattr(module, "lora_variant", {}) or getattr(module, "use_dora", {}).get(name) \
                or lora_b[name].bias is not None:
            return None
        weight = weight + module.get_delta_weight(name).to(weight.dtype)
    return weight, base.bias


def _signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin (..., D) with its first half negated: swap_halves(x) * _signed_sin(sin) == rotate_half(x) * sin."""
    D = sin.shape[-1]
    return torch.cat([-sin[..., : D // 2], sin[..., D // 2:]], -1)


def _rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (..., D): x * cos + swap_halves(x) * signed_sin (see `_signed_sin`)."""
    D = x.shape[-1]
    return x * cos + x.unflatten(-1, (2, D // 2)).flip(-2).flatten(-2) * signed_sin


def _qk_norm(q: torch.Tensor, k: torch.Tensor, w: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k through the layer's per-head RMSNorms (Qwen3), unchanged where it has none."""
    if w["q_norm"] is None:
        return q, k
    return _rms(q, *w["q_norm"]), _rms(k, *w["k_norm"])


def _mlp(h: torch.Tensor, w: dict[str, Any]) -> torch.Tensor:
    """The gated MLP of one layer (weights as `NativeDecoder.refresh` lays them out) on normed input h."""
    if len(w["gu"]) == 1:
        gate, up = _lin(h, w["gu"][0]).chunk(2, -1)
    else:
        gate, up = (_lin(h, spec) for spec in w["gu"])
    return _lin(torch.nn.functional.silu(gate) * up, w["down"])


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as transformers computes it: statistics in float32, scaled in the input dtype."""
    if x.dtype == torch.float32:  # the same arithmetic without the two no-op casts
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
