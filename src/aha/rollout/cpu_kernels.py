"""The engine's compiled CPU kernels (decode-step attention, RMSNorm): built with the machine's C
compiler on first use.

On a CPU, the decode step's attention (one query per row over a shared prompt and the row's own
generated keys) is dozens of tiny batched matmuls and layout copies per step when written in PyTorch;
`csrc/cascade_attention.c` does it in two OpenMP loops that stream each row's keys and values once
(README "Performance" has the benchmark with and without `AHA_CPU_KERNELS=0`). The softmax between
them stays in PyTorch.

The kernel is optional. `cascade_kernels()` compiles the source once per machine into a cache
directory (`$AHA_CACHE_DIR`, else `$XDG_CACHE_HOME/aha`, else `~/.cache/aha`; the file name hashes
the source, compiler, flags and CPU features, so a shared home directory never runs a binary built
for another CPU), loads it, checks it against PyTorch on random inputs, and returns None (after one
warning saying why) when any of that fails: no C compiler, no OpenMP, a non-x86/ARM toolchain quirk.
The engine then uses its PyTorch path. `AHA_CPU_KERNELS=0` turns the kernel off; `CC` picks the
compiler (default `cc`, then `gcc`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("csrc") / "cascade_attention.c"
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c99"]
_STATE: dict[str, CascadeKernels | None] = {}


class CascadeKernels:
    """ctypes bindings of the two kernels (layouts in csrc/cascade_attention.c)."""

    def __init__(self, lib: ctypes.CDLL):
        ptr, i64 = ctypes.c_void_p, ctypes.c_int64
        self._scores = lib.aha_cascade_scores
        self._scores.argtypes = [ptr, i64, ptr, ptr, ptr, ptr, ptr, i64, ptr] + [i64] * 8
        self._scores.restype = ctypes.c_int
        self._values = lib.aha_cascade_values
        self._values.argtypes = [ptr] * 5 + [i64] * 7
        self._values.restype = None
        self._rms = lib.aha_rms_norm
        self._rms.argtypes = [ptr, i64, ptr, ctypes.c_double, ptr, i64, i64]
        self._rms.restype = None

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """weight * x / sqrt(mean(x^2, -1) + eps) for float32 x (N, H) with contiguous rows (any row
        stride) and weight (H,) contiguous; returns (N, H) contiguous."""
        N, H = x.shape
        _require(_cpu_f32(x, weight) and (x.stride(1) == 1 or H == 1) and weight.shape == (H,)
                 and weight.is_contiguous(), "rms kernel: unexpected tensor layout, dtype or device")
        out = x.new_empty((N, H))
        self._rms(x.data_ptr(), x.stride(0), weight.data_ptr(), eps, out.data_ptr(), N, H)
        return out

    def attention(self, q: torch.Tensor, prompt_keys_t: torch.Tensor, prompt_values: torch.Tensor,
                  bias: torch.Tensor | None, row_prompt: torch.Tensor, keys_t: torch.Tensor,
                  values: torch.Tensor, T: int, new_keys: torch.Tensor | None = None) -> torch.Tensor:
        """softmax([q . prompt keys + bias ; q . own keys]) @ [prompt values ; own values], per row.

        q: (B, Hk, G, D) float32 queries, scaled; any row stride, the rest contiguous.
        prompt_keys_t: (U, Hk, D, P) and prompt_values: (U, Hk, P, D), contiguous.
        bias: (U, P) additive mask (0 / -inf) contiguous, or None.
        row_prompt: (B,) int64, the prompt index of each row.
        keys_t: (B, Hk, D, cap) and values: (B, Hk, cap, D) contiguous buffers; the first T generated
            positions are filled (T >= 0), except the keys of position T - 1 when new_keys is given.
        new_keys: (B, Hk, D) (any row stride) this step's keys, written into keys_t[..., T - 1] by the
            kernel as it reads them (a transposed write touches a cache line per element; done here,
            those lines are the ones about to be read).
        Returns (B, Hk, G, D) float32.
        """
        B, Hk, G, D = q.shape
        U, _, P, _ = prompt_values.shape
        cap = values.shape[2]
        # the C code trusts these (raw pointers): a wrong caller must fail here, not write out of bounds
        dense = [prompt_keys_t, prompt_values, keys_t, values] + ([bias] if bias is not None else [])
        _require(_cpu_f32(q, *dense, *([new_keys] if new_keys is not None else []))
                 and all(t.is_contiguous() for t in dense) and _strides_ok(q, 1, (G * D, D, 1)),
                 "cascade kernel: unexpected tensor layout, dtype or device")
        _require(prompt_keys_t.shape == (U, Hk, D, P) and keys_t.shape == (B, Hk, D, cap)
                 and values.shape == (B, Hk, cap, D) and (bias is None or bias.shape == (U, P))
                 and 0 <= T <= cap, "cascade kernel: shapes do not agree")
        _require(row_prompt.dtype == torch.int64 and row_prompt.device.type == "cpu" and row_prompt.shape == (B,)
                 and row_prompt.is_contiguous(), "cascade kernel: row_prompt must be (B,) int64 on the CPU")
        if new_keys is not None:
            _require(new_keys.shape == (B, Hk, D) and _strides_ok(new_keys, 1, (D, 1)) and T >= 1,
                     "cascade kernel: new_keys must be (B, Hk, D) with contiguous heads, and T >= 1")
        scores = q.new_empty((B, Hk, G, P + T))  # (B, Hk, G, P + T)
        bad = self._scores(q.data_ptr(), q.stride(0), prompt_keys_t.data_ptr(),
                           bias.data_ptr() if bias is not None else None, row_prompt.data_ptr(), keys_t.data_ptr(),
                           new_keys.data_ptr() if new_keys is not None else None,
                           new_keys.stride(0) if new_keys is not None else 0, scores.data_ptr(),
                           B, Hk, G, D, U, P, T, cap)
        _require(bad == 0, f"cascade kernel: row_prompt holds a prompt index outside 0..{U - 1}")
        weights = torch.softmax(scores, dim=-1)  # (B, Hk, G, P + T)
        out = q.new_empty((B, Hk, G, D))  # (B, Hk, G, D)
        self._values(weights.data_ptr(), prompt_values.data_ptr(), row_prompt.data_ptr(), values.data_ptr(),
                     out.data_ptr(), B, Hk, G, D, P, T, cap)
        return out


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _cpu_f32(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def _strides_ok(t: torch.Tensor, first: int, strides: tuple[int, ...]) -> bool:
    """Dims first.. of t have these strides (dims of size 1 may have any: they are never stepped)."""
    return all(size == 1 or stride == want
               for size, stride, want in zip(t.shape[first:], t.stride()[first:], strides))


def cascade_kernels() -> CascadeKernels | None:
    """The compiled kernels, or None when they are turned off or cannot be built here (warned once)."""
    if "kernels" not in _STATE:
        kernels = None
        if os.environ.get("AHA_CPU_KERNELS", "1") != "0":
            try:
                kernels = CascadeKernels(_load())
                _self_check(kernels)
            except Exception as exc:  # noqa: BLE001 - any failure means: use the PyTorch path
                kernels = None
                warnings.warn(f"aha: the compiled CPU attention kernel is unavailable ({exc}); the rollout "
                              "engine uses its PyTorch path (slower on CPU). Set AHA_CPU_KERNELS=0 to silence.",
                              RuntimeWarning, stacklevel=2)
        _STATE["kernels"] = kernels
    return _STATE["kernels"]


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    root = os.environ.get("AHA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "aha")
    return Path(root) / "kernels"


def _cpu_features() -> str:
    """The CPU's feature flags (what -march=native compiles for), so binaries are per CPU type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> list[str]:
    compiler = shlex.split(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "")
    if not compiler:
        raise RuntimeError("no C compiler found (set CC)")
    return compiler


def kernel_path(compiler: list[str] | None = None) -> Path:
    """The cached library's path for this source, compiler, flags and CPU."""
    compiler = compiler or _compiler()
    key = hashlib.sha256(b"\0".join([_SOURCE.read_bytes(), " ".join(compiler).encode(), " ".join(_FLAGS).encode(),
                                     _cpu_features().encode(), platform.machine().encode()])).hexdigest()[:20]
    return cache_dir() / f"cascade_attention-{key}.so"


def check_trusted(path: Path) -> None:
    """RuntimeError unless `path` and every folder above it are safe to load code from: owned by this
    user (folders: or by root) and writable by no one else. A world-writable folder with the sticky
    bit (/tmp) is accepted, as others cannot rename or replace what is in it. Without it, another
    user who could write the cache path could plant a library that the next run loads."""
    import stat

    if not hasattr(os, "getuid"):
        return  # no POSIX owners here (Windows)
    uid = os.getuid()
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
        raise RuntimeError(f"{path} is not a file only this user can write (owner uid {st.st_uid}, mode "
                           f"{stat.S_IMODE(st.st_mode):o}); delete it or set AHA_CACHE_DIR to a private folder")
    for folder in path.resolve().parents:
        st = folder.stat()
        writable_by_others = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
        if st.st_uid not in (uid, 0) or writable_by_others:
            raise RuntimeError(f"the kernel cache folder {folder} can be written by other users (owner uid "
                               f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); run `chmod go-w {folder}` or "
                               "set AHA_CACHE_DIR to a private folder")


def _make_private_dirs(folder: Path) -> None:
    """mkdir -p, the folders it creates writable by this user only (whatever the umask)."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for p in missing:
        try:
            os.chmod(p, 0o755)
        except OSError:
            pass


def _load() -> ctypes.CDLL:
    """Load the compiled kernels, building them first when this machine has no cached copy. A cached
    file, or a cache folder, that someone else could have written is refused (`check_trusted`)."""
    compiler = _compiler()
    target = kernel_path(compiler)
    _make_private_dirs(target.parent)
    if target.exists():
        check_trusted(target)
        try:
            return ctypes.CDLL(str(target))
        except OSError:  # a damaged file (a full disk, a crash mid-copy): build it again
            target.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([*compiler, *_FLAGS, str(_SOURCE), "-o", tmp, "-lm"], capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(compiler)} failed: {done.stderr.strip()[-400:]}")
        os.chmod(tmp, 0o755)  # mkstemp makes it private; other users of a shared cache dir load it too
        os.replace(tmp, target)  # atomic: concurrent processes never load a half-written file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    check_trusted(target)
    return ctypes.CDLL(str(target))


def reference_attention(q: torch.Tensor, prompt_keys: torch.Tensor, prompt_values: torch.Tensor,
                        bias: torch.Tensor | None, row_prompt: torch.Tensor, keys: torch.Tensor,
                        values: torch.Tensor) -> torch.Tensor:
    """The same attention in plain PyTorch, row by row (for checks): prompt_keys (U, Hk, P, D),
    keys/values (B, Hk, T, D) (the filled part only); returns (B, Hk, G, D)."""
    pk = prompt_keys.index_select(0, row_prompt)  # (B, Hk, P, D)
    pv = prompt_values.index_select(0, row_prompt)  # (B, Hk, P, D)
    k = torch.cat([pk, keys], dim=2)  # (B, Hk, P + T, D)
    v = torch.cat([pv, values], dim=2)  # (B, Hk, P + T, D)
    scores = torch.matmul(q, k.transpose(-1, -2))  # (B, Hk, G, P + T)
    if bias is not None:
        pad = bias.index_select(0, row_prompt)[:, None, None, :]  # (B, 1, 1, P)
        scores[..., :pad.shape[-1]] += pad
    return torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, Hk, G, D)


def _self_check(kernels: CascadeKernels) -> None:
    """Raise unless the kernels agree with PyTorch on shapes that exercise every code path."""
    g = torch.Generator().manual_seed(0)
    for B, Hk, G, D, P, T, cap in ((3, 2, 2, 64, 70, 5, 8), (2, 1, 3, 20, 17, 0, 4)):
        U = 2
        q = torch.randn(B, Hk, G, D, generator=g)
        pk = torch.randn(U, Hk, P, D, generator=g)
        pv = torch.randn(U, Hk, P, D, generator=g)
        k = torch.randn(B, Hk, cap, D, generator=g)
        v = torch.randn(B, Hk, cap, D, generator=g)
        bias = torch.zeros(U, P)
        bias[1, :3] = float("-inf")
        rows = torch.tensor([1, 0, 1][:B])
        want = reference_attention(q, pk, pv, bias, rows, k[:, :, :T], v[:, :, :T])
        kt = k.transpose(-1, -2).contiguous()
        got = kernels.attention(q, pk.transpose(-1, -2).contiguous(), pv, bias, rows, kt, v, T)
        if T:
            kt[..., T - 1] = 0.0
            got2 = kernels.attention(q, pk.transpose(-1, -2).contiguous(), pv, bias, rows, kt, v, T,
                                     new_keys=k[:, :, T - 1].contiguous())
            got = torch.cat([got, got2])
            want = torch.cat([want, want])
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            raise RuntimeError(f"self-check failed (max error {(got - want).abs().max().item():.2e})")
    x, w = torch.randn(5, 40, generator=g), torch.randn(40, generator=g)
    want = w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    if not torch.allclose(kernels.rms_norm(x, w, 1e-6), want, rtol=1e-4, atol=1e-5):
        raise RuntimeError("self-check of the RMSNorm kernel failed")
