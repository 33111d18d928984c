"""The compiled CPU attention of the rollout engine: against PyTorch, by hand, and when it cannot build."""

from __future__ import annotations

import math

import pytest
import torch

from aha.rollout import cpu_kernels
from aha.rollout.cpu_kernels import cascade_kernels, reference_attention


@pytest.fixture(scope="module")
def kernels():
    k = cascade_kernels()
    if k is None:  # no C compiler on this machine: the engine's PyTorch path is tested elsewhere
        pytest.skip("the compiled CPU kernel is unavailable here")
    return k


def run(kernels, q, pk, pv, bias, rows, k, v, T, new_keys=False):
    """Call the kernel with the layouts the engine keeps (transposed key buffers)."""
    kt = k.transpose(-1, -2).clone(memory_format=torch.contiguous_format)  # a copy even where cap == 1
    if new_keys:
        kt[..., T - 1] = float("nan")  # the kernel must overwrite it
        return kernels.attention(q, pk.transpose(-1, -2).contiguous(), pv, bias, rows, kt, v, T,
                                 new_keys=k[:, :, T - 1].contiguous())
    return kernels.attention(q, pk.transpose(-1, -2).contiguous(), pv, bias, rows, kt, v, T)


@pytest.mark.parametrize("B,Hk,G,D,U,P,T,cap", [
    (64, 2, 2, 64, 8, 129, 64, 128),  # the benchmark's shapes: 64-wide key blocks and tails
    (3, 1, 1, 16, 2, 1, 1, 1),        # one prompt token, one generated token, a full buffer
    (5, 2, 3, 20, 3, 17, 9, 12),      # odd group size; head size not a multiple of 16 (scalar loops)
    (4, 4, 1, 128, 1, 40, 33, 40),    # no grouping; wide heads (two 64-lane passes)
    (2, 2, 2, 32, 2, 70, 0, 4),       # no generated keys yet
])
@pytest.mark.parametrize("padded", [False, True])
def test_kernel_equals_pytorch_attention(kernels, B, Hk, G, D, U, P, T, cap, padded):
    g = torch.Generator().manual_seed(B * 1000 + D)
    q = torch.randn(B, Hk, G, D, generator=g) * D ** -0.5
    pk, pv = torch.randn(U, Hk, P, D, generator=g), torch.randn(U, Hk, P, D, generator=g)
    k, v = torch.randn(B, Hk, cap, D, generator=g), torch.randn(B, Hk, cap, D, generator=g)
    rows = torch.randint(0, U, (B,), generator=g)  # rows in any prompt order, prompts repeated
    bias = None
    if padded:
        bias = torch.zeros(U, P)
        bias[:, : P // 3] = float("-inf")  # left padding (a prompt keeps at least one key)
    want = reference_attention(q, pk, pv, bias, rows, k[:, :, :T], v[:, :, :T])
    torch.testing.assert_close(run(kernels, q, pk, pv, bias, rows, k, v, T), want, rtol=1e-5, atol=1e-5)
    if T:
        torch.testing.assert_close(run(kernels, q, pk, pv, bias, rows, k, v, T, new_keys=True), want,
                                   rtol=1e-5, atol=1e-5)


def test_kernel_by_hand(kernels):
    # one row, one head, D = 2: scores [0, ln 3, 0] -> weights [1/5, 3/5, 1/5];
    # values [1, 0], [0, 1] (prompt) and [10, 10] (generated) -> [0.2 + 2, 0.6 + 2]
    q = torch.tensor([[[[1.0, 0.0]]]])
    pk = torch.tensor([[[[0.0, 0.0], [math.log(3.0), 0.0]]]])
    pv = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    k = torch.tensor([[[[0.0, 5.0]]]])
    v = torch.tensor([[[[10.0, 10.0]]]])
    rows = torch.tensor([0])
    out = run(kernels, q, pk, pv, None, rows, k, v, 1)
    torch.testing.assert_close(out.flatten(), torch.tensor([2.2, 2.6]))
    # masking the first prompt key: weights [0, 3/4, 1/4] -> [2.5, 3.25]
    out = run(kernels, q, pk, pv, torch.tensor([[float("-inf"), 0.0]]), rows, k, v, 1)
    torch.testing.assert_close(out.flatten(), torch.tensor([2.5, 3.25]))


def test_kernel_reads_queries_with_a_row_stride(kernels):
    # the engine passes q as a view into its fused q/k projection: rows are further apart than G * D
    g = torch.Generator().manual_seed(7)
    qk = torch.randn(6, 2 * 2 + 2, 16, generator=g)  # (B, Hq + Hk, D)
    q = qk[:, :4].view(6, 2, 2, 16)
    pk, pv = torch.randn(2, 2, 5, 16, generator=g), torch.randn(2, 2, 5, 16, generator=g)
    k, v = torch.randn(6, 2, 3, 16, generator=g), torch.randn(6, 2, 3, 16, generator=g)
    rows = torch.tensor([0, 0, 0, 1, 1, 1])
    want = reference_attention(q.contiguous(), pk, pv, None, rows, k, v)
    torch.testing.assert_close(run(kernels, q, pk, pv, None, rows, k, v, 3), want, rtol=1e-5, atol=1e-5)


def test_kernel_refuses_what_it_cannot_read(kernels):
    # the C code trusts raw pointers, so every mismatch must be a clear error before it runs
    B, Hk, G, D, U, P, cap = 2, 1, 2, 4, 2, 3, 5
    good = dict(q=torch.randn(B, Hk, G, D), prompt_keys_t=torch.randn(U, Hk, D, P),
                prompt_values=torch.randn(U, Hk, P, D), bias=None, row_prompt=torch.tensor([0, 1]),
                keys_t=torch.randn(B, Hk, D, cap), values=torch.randn(B, Hk, cap, D), T=2)
    kernels.attention(**good)
    cases = [
        (dict(q=torch.randn(B, Hk, D, G).transpose(-1, -2)), "layout"),         # queries not row-major
        (dict(q=good["q"].double()), "dtype"),                                 # float64
        (dict(values=torch.randn(B, Hk, cap, D).bfloat16()), "dtype"),         # low precision
        (dict(T=cap + 1), "shapes"),                                           # beyond the buffer
        (dict(keys_t=torch.randn(B, Hk, D, cap - 1)), "shapes"),               # buffers disagree
        (dict(bias=torch.zeros(U, P + 1)), "shapes"),                          # mask of another prompt length
        (dict(row_prompt=torch.tensor([0, 2])), "outside"),                    # no prompt 2
        (dict(row_prompt=torch.tensor([0, 1], dtype=torch.int32)), "int64"),   # would be read as int64
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            kernels.attention(**{**good, **change})
    with pytest.raises(ValueError, match="new_keys"):
        kernels.attention(**good, new_keys=torch.randn(B, Hk, 2 * D)[..., ::2])  # every other float


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    """No kernel loaded yet in this process, and an empty kernel cache."""
    monkeypatch.setattr(cpu_kernels, "_STATE", {})
    monkeypatch.setenv("AHA_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_no_compiler_means_none_and_one_warning(fresh_state, monkeypatch):
    monkeypatch.setenv("CC", str(fresh_state / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="unavailable"):
        assert cascade_kernels() is None
    assert cascade_kernels() is None  # decided once per process: no second warning, no retry


def test_turned_off_by_environment(fresh_state, monkeypatch, recwarn):
    monkeypatch.setenv("AHA_CPU_KERNELS", "0")
    assert cascade_kernels() is None
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_compiled_once_into_the_cache_dir(fresh_state, kernels):
    assert cascade_kernels() is not None
    built = list((fresh_state / "kernels").glob("cascade_attention-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    cpu_kernels._STATE.clear()
    assert cascade_kernels() is not None  # loaded from the cache, not rebuilt
    assert built[0].stat().st_mtime_ns == stamp


@pytest.mark.parametrize("N,H,stride", [(64, 256, 256), (3, 20, 20), (5, 64, 192), (1, 7, 7)])
def test_rms_norm_equals_the_engine_formula(kernels, N, H, stride):
    from aha.rollout.native import _rms

    g = torch.Generator().manual_seed(N + H)
    x = torch.randn(N, stride, generator=g)[:, :H] * 3.0  # rows further apart than H where stride > H
    weight = torch.randn(H, generator=g)
    torch.testing.assert_close(kernels.rms_norm(x, weight, 1e-6), _rms(x, weight, 1e-6), rtol=1e-5, atol=1e-6)


def test_rms_norm_by_hand(kernels):
    # x = [3, 4]: mean of squares 12.5 -> x / sqrt(12.5) = [0.8485, 1.1314]; weight [1, 2]
    out = kernels.rms_norm(torch.tensor([[3.0, 4.0]]), torch.tensor([1.0, 2.0]), 0.0)
    torch.testing.assert_close(out, torch.tensor([[3.0 / 12.5 ** 0.5, 8.0 / 12.5 ** 0.5]]))
    with pytest.raises(ValueError, match="layout"):
        kernels.rms_norm(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0.0)


def test_a_damaged_cached_file_is_rebuilt(fresh_state, kernels):
    target = cpu_kernels.kernel_path()
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a shared library")  # e.g. a copy cut short by a full disk
    assert cascade_kernels() is not None
    assert target.read_bytes()[:4] == b"\x7fELF"
