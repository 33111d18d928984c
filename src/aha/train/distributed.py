"""Training on N processes (`torchrun`, `accelerate launch`): who this process is and what it shares.

Launch:

    torchrun --nproc_per_node N -m aha.cli train RECIPE [key=value ...]
    accelerate launch --config_file recipes/accelerate/ddp.yaml --num_processes N -m aha.cli train RECIPE
    torchrun --nproc_per_node N -m aha.cli train RECIPE parallel=fsdp            (sharded: aha.train.fsdp)
    accelerate launch --config_file recipes/accelerate/fsdp.yaml --num_processes N -m aha.cli train RECIPE

Both launchers start N copies of the command with RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT set;
`init_world` joins them through accelerate's `PartialState` (gloo on CPU, nccl on GPUs). Without those
variables the run is one process and nothing here talks to anyone (`World.single()`), so a one-process
run computes exactly what it did before any of this existed.

The rules the trainers follow on N ranks (see README "Multi-process training"):

- RL, collect: the global batch of a step is the one a single process would take. Each round of the
  collect stage needs k prompts from the global data position; rank r samples and scores the contiguous
  share `share(k)` of them as whole groups (a prompt and all its samples on one rank), seeded by their
  index in the round (`SamplingParams.index_offset`), so the sampled tokens do not depend on N. Dynamic
  sampling sums the kept groups over the ranks after every round, so all ranks run the same rounds
  however unequally they drop. Then `whole_step` gives every rank every rank's rollouts (token ids,
  rewards; small next to the model), in the order one process keeps them.
- RL, log-probs and update: every rank then plans the same micro-batches as one process (same
  length-sorted rows, same mini-batch permutation, the whole mini-batch's loss divisors) and runs every
  N-th of them (`World.part`); the log-probs each rank computes are shared (`share_logprobs`), so the
  advantages (REINFORCE++ whitening included) and KL penalties are computed on identical data. Each
  micro-batch's forward and backward is then the single-process one, and the runs differ only in the
  order the micro-batch gradients are added (and in dropout masks, see `World.seed_dropout`).
- Gradients: each rank accumulates its micro-batches, then the trainable parameters' gradients are
  summed over the ranks once per optimizer step (`sync_gradients`, 64 MiB buckets), before clipping: the
  reduction DDP performs when micro-batches accumulate under `no_sync`. It runs once per optimizer step
  instead of in DDP's backward hooks because ranks can hold different numbers of micro-batches (a
  mini-batch of 3 micro-batches on 2 ranks), and DDP would hang on the rank with one backward fewer; a
  rank with none joins the sum with zeros. Every rank runs the same optimizer steps on the same sum,
  so the replicas stay identical. The forwards run on the plain model (no wrapper), so the prompt-sharing
  cache, LoRA's disabled-adapter reference and the generation engine work unchanged.
- SFT: the global token-budget batch of a step (the one a single process would train on) is cut into N
  contiguous row shares, one per rank; the loss is each rank's summed token cross-entropy divided by the
  global response-token count, and the gradients are summed as above.
- I/O: rank 0 alone writes the run folder (config, logs, metrics, rollouts, validation files, plots,
  checkpoints, the final model); the other ranks get a `FollowerRun` that logs warnings to stderr and
  writes nothing. Validation is split by `share` and gathered (`gather_completions`), so every rank has
  the same figures and ProRL reset triggers agree. Every rank reads a checkpoint on resume; it holds
  nothing rank-specific (the replicas are identical), so a run resumes with any N that divides its
  batch, 1 included.

That is the DDP-style strategy (`parallel=ddp`, the default; recipes/accelerate/ddp.yaml). FSDP
(`parallel=fsdp` under torchrun, recipes/accelerate/fsdp.yaml or fsdp_shard_grad_op.yaml under accelerate)
keeps these rules and shards the model, its gradients and the optimizer state with torch's FSDP2; what
changes (every rank runs as many update forwards, padded with zero-loss copies; generation and the
log-prob passes run on weights gathered once per stage; gradients reduce-scattered as sums in the
backward instead of `sync_gradients`; checkpoints gathered to rank 0 in the same format) is in
`aha.train.fsdp`. DeepSpeed ZeRO configs (zero2/zero3.yaml) are refused at start with the fix
(`check_strategy`).
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from aha.errors import AhaError

_LAUNCH_FIX = ("launch with `torchrun --nproc_per_node N -m aha.cli ...` or with `accelerate launch --config_file "
               "recipes/accelerate/ddp.yaml --num_processes N -m aha.cli ...` (multi_gpu, which also runs on CPU)")


@dataclasses.dataclass
class World:
    """This process's place among the training processes (rank 0 of 1 when not launched by a launcher)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def single(cls) -> World:
        return cls()

    @property
    def main(self) -> bool:
        """Whether this process writes the run folder."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    # ------------------------------------------------------------------- shares

    def share(self, n: int, rank: int | None = None) -> range:
        """The contiguous part of n items that `rank` (default this one) takes: the first n % size
        ranks take one more. One process takes range(n)."""
        r = self.rank if rank is None else rank
        base, extra = divmod(n, self.size)
        start = r * base + min(r, extra)
        return range(start, start + base + (1 if r < extra else 0))

    # ------------------------------------------------------------------- collectives (no-ops on one process)

    def sum(self, values: list[float]) -> list[float]:
        """Elementwise sums over the ranks (float64, so counts up to 2^53 stay exact)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        torch.distributed.all_reduce(t)
        return t.tolist()

    def max(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())

    def any(self, flag: bool) -> bool:
        """True when any rank's `flag` is: a decision every rank must take together (stop, time out)."""
        return self.max(1.0 if flag else 0.0) > 0 if self.distributed else bool(flag)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (pickled between this job's own processes)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(out, obj)
        return out

    def from_main(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box = [obj if self.main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def finish(self) -> None:
        """A command's last collective: every rank waits until all are done (the model folder is
        complete), and from then on no rank takes part in a collective, so `close_world` may tear the
        process group down at exit."""
        global _FINISHED
        if self.distributed:
            torch.distributed.barrier()
            _FINISHED = True

    def sync_gradients(self, params: list[torch.Tensor]) -> None:
        """Sum the gradients of `params` over the ranks, in flat all-reduces of up to `_BUCKET` values
        (DDP's buckets; one copy of the whole gradient at once would double its memory).

        A parameter that got no gradient on any rank keeps `grad = None` (AdamW then skips it, as on
        one process); one that got a gradient somewhere gets the sum, zeros counted for the others."""
        if not self.distributed or not params:
            return
        had = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
        torch.distributed.all_reduce(had)
        bucket: list[torch.Tensor] = []
        size = 0
        for p, got in zip(params, had.tolist()):
            if got == 0:
                p.grad = None
                continue
            bucket.append(p)
            size += p.numel()
            if size >= _BUCKET:
                _sum_bucket(bucket)
                bucket, size = [], 0
        if bucket:
            _sum_bucket(bucket)

    def seed_dropout(self, seed: int) -> None:
        """On N ranks, reseed the torch RNG (which only dropout draws from once the model is built) from
        (seed, rank) at the start of a step's forward passes: the ranks draw different masks, and a
        resumed run draws what the straight one did. One process: nothing (its RNG runs on as before).
        With dropout active (LoRA's default lora.dropout=0.05) N ranks therefore draw other masks than
        one process does: the runs agree in distribution, not number by number."""
        if self.distributed:
            torch.manual_seed((seed * 1_000_003 + self.rank * 7_919) % 2**31)

    def part(self, items: list[Any]) -> list[Any]:
        """This rank's items of a list every rank holds (round robin: items r, r + N, ...), e.g. the
        micro-batches of a step's forward passes. One process: all of them."""
        return items[self.rank::self.size] if self.distributed else items


# values per gradient all-reduce (64 MiB of fp32)
_BUCKET = 1 << 24


def _sum_bucket(params: list[torch.Tensor]) -> None:
    """All-reduce (sum) the gradients of `params` as one flat fp32 buffer; a missing gradient counts as zeros."""
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                      for p in params])  # (sum of numels,)
    torch.distributed.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype).clone()
        offset += n


def _collective_device() -> torch.device:
    """Where collective tensors live: the current CUDA device under nccl, else the CPU (gloo)."""
    if torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------------- start


def launched_world_size() -> int:
    """The world size the launcher's environment announces (1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise AhaError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; {_LAUNCH_FIX}") from None


_WORLD: World | None = None
_FINISHED = False  # set by `World.finish`: every rank is past its last collective


def init_world() -> World:
    """Join the launcher's processes (once per process) and return this process's `World`.

    Refuses the case accelerate gets silently wrong: `accelerate launch --cpu --num_processes N` and a
    MULTI_CPU config without MPI start one process that believes it is alone (see
    `requested_processes`)."""
    global _WORLD, _FINISHED
    _FINISHED = False  # a command starts (a pipeline runs several in one process)
    if _WORLD is not None:
        return _WORLD
    check_strategy()
    size = launched_world_size()
    if size == 1:
        asked = requested_processes()
        if asked > 1:
            raise AhaError(f"accelerate was asked for {asked} processes but started only this one (its --cpu mode and "
                           f"MULTI_CPU configs without MPI run a single process); {_LAUNCH_FIX}")
        _WORLD = World.single()
        return _WORLD
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # before the process group: nccl needs it
    from accelerate import PartialState  # initialises torch.distributed from the launcher's variables

    state = PartialState(cpu=not torch.cuda.is_available())
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() != size:
        got = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        raise AhaError(f"WORLD_SIZE is {size} but the process group has {got} process(es) "
                       f"({state.distributed_type}); {_LAUNCH_FIX}")
    _WORLD = World(rank=torch.distributed.get_rank(), size=size, local_rank=int(state.local_process_index))
    atexit.register(close_world)
    return _WORLD


def close_world() -> None:
    """After a finished command (`World.finish`), tear the process group down while the interpreter is
    still whole (registered with atexit by `init_world`). Left to interpreter finalization, gloo's
    worker threads can still hold the tensors of finished async work (FSDP2's reduce-scatters), and
    freeing them then aborts the process (SIGABRT, "terminate called without an active exception")
    after the run itself has finished: torchrun then reports the job failed.

    A rank that exits on an error leaves the group alone: the others may be inside a collective, and
    tearing down an nccl group under them can hang this rank instead of letting it exit (the launcher
    then stops the rest). Safe to call twice."""
    global _WORLD, _FINISHED
    if not _FINISHED:
        return
    _WORLD, _FINISHED = None, False
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def current_world() -> World:
    """The world `init_world` joined (one process before that)."""
    return _WORLD if _WORLD is not None else World.single()


def check_strategy() -> None:
    """Refuse DeepSpeed, which this loop does not implement (FSDP is `aha.train.fsdp`): the message first
    names its install command when the package is missing."""
    if _env_true("ACCELERATE_USE_DEEPSPEED"):
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise AhaError("this accelerate config uses DeepSpeed, which is not installed: `pip install deepspeed` "
                           "(or launch with recipes/accelerate/fsdp.yaml to shard, or ddp.yaml)") from None
        raise AhaError("DeepSpeed ZeRO is not supported by aha's trainers yet; to shard weights, gradients and "
                       "optimizer state launch with recipes/accelerate/fsdp.yaml (FSDP2, like ZeRO-3) or "
                       "fsdp_shard_grad_op.yaml (like ZeRO-2), or with ddp.yaml for a full replica per process")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def requested_processes(parent_cmdline: list[str] | None = None) -> int:
    """How many processes an `accelerate launch` parent asked for (1 when the parent is not accelerate).

    Read from the parent's command line (`--num_processes N`, or `num_processes` in its --config_file);
    accelerate sets no variable for it in the --cpu mode, which is what makes that mode's single process
    look like a deliberate one-process run."""
    argv = parent_cmdline if parent_cmdline is not None else _parent_cmdline()
    if not argv or not any(Path(a).name.startswith("accelerate") for a in argv[:2]) or "launch" not in argv:
        return 1
    asked = _flag(argv, "--num_processes") or _flag(argv, "--num-processes")
    if asked is None:
        config = _flag(argv, "--config_file") or _flag(argv, "--config-file")
        if config:
            try:
                import yaml

                asked = str(yaml.safe_load(Path(config).read_text(encoding="utf-8")).get("num_processes", 1))
            except (OSError, ValueError, AttributeError, yaml.YAMLError):
                return 1
    try:
        return int(asked) if asked is not None else 1
    except ValueError:
        return 1


def _flag(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _parent_cmdline() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


# ----------------------------------------------------------------------------- the RL step on N ranks


def share_logprobs(world: World, rollouts: list[Any], computed: list[Any],
                   names: tuple[str, ...] = ("old_logprobs", "ref_logprobs")) -> None:
    """Give every rank the log-prob tensors (`names`) that each rank computed for its share of the step's
    rollouts. `rollouts` is the whole step, in the same order on every rank (`whole_step`); `computed`
    the ones this rank filled in."""
    if not world.distributed:
        return
    where = {id(r): i for i, r in enumerate(rollouts)}
    mine = {where[id(r)]: {n: getattr(r, n).detach().cpu() for n in names if getattr(r, n) is not None}
            for r in computed}
    device = _collective_device()
    for part in world.gather(mine):
        for i, tensors in part.items():
            for n, t in tensors.items():
                setattr(rollouts[i], n, t.to(device))


def gather_completions(world: World, completions: list[Any], verdicts: list[Any], first: int
                       ) -> tuple[list[Any], list[Any]]:
    """Every rank's (completion, verdict) pairs of a request split by `share`, on every rank, in prompt
    order, each completion's prompt_index made global (this rank's request began at prompt `first`).
    One process: the lists as they are."""
    if not world.distributed:
        return completions, verdicts
    mine = [(dataclasses.replace(c, prompt_index=first + c.prompt_index), v) for c, v in zip(completions, verdicts)]
    pairs = sorted((pair for part in world.gather(mine) for pair in part),
                   key=lambda cv: (cv[0].prompt_index, cv[0].sample_index))
    return [c for c, _ in pairs], [v for _, v in pairs]


def sum_update_metrics(world: World, sums: dict[str, float], n_micro: int) -> tuple[dict[str, float], int]:
    """The update's metric sums and micro-batch count over every rank (the loss shares add up to the
    mini-batch losses; the per-micro-batch means become means over every rank's micro-batches)."""
    if not world.distributed:
        return sums, n_micro
    total: dict[str, float] = {}
    count = 0
    for part, n in world.gather((sums, n_micro)):
        for k, v in part.items():
            total[k] = total.get(k, 0.0) + v
        count += n
    return total, count


def whole_step(world: World, batch: Any) -> Any:
    """The step as one process would report it: every rank's sampled rollouts (without their log-prob
    tensors) and kept groups in group order, on every rank, with the reward metrics of the last sampling
    round recomputed over all of them (`merge_reward_metrics`). One process: the batch itself."""
    if not world.distributed:
        return batch
    light = [dataclasses.replace(r, old_logprobs=None, ref_logprobs=None) for r in batch.sampled]
    last = [r for r in batch.sampled if r.group >= batch.last_round_first_group]
    parts = world.gather((light, [g[0].group for g in batch.groups], batch.reward_metrics, len(last),
                          batch.gen_seconds, batch.score_seconds, batch.gen_tokens))
    sampled = sorted((r for p in parts for r in p[0]), key=lambda r: (r.group, r.completion.sample_index))
    kept = {n for p in parts for n in p[1]}
    by_group: dict[int, list[Any]] = {}
    for r in sampled:
        if r.group in kept:
            by_group.setdefault(r.group, []).append(r)
    last_all = [r for r in sampled if r.group >= batch.last_round_first_group]
    metrics = merge_reward_metrics([(p[2], p[3]) for p in parts], last_all)
    return dataclasses.replace(batch, groups=[by_group[n] for n in sorted(by_group)], sampled=sampled,
                               reward_metrics=metrics, gen_seconds=max(p[4] for p in parts),
                               score_seconds=max(p[5] for p in parts), gen_tokens=sum(p[6] for p in parts))


def merge_reward_metrics(per_rank: list[tuple[dict[str, float], int]], rollouts: list[Any]) -> dict[str, float]:
    """The reward composer's metrics for the union of the ranks' last-round rollouts: means, standard
    deviations and applicable shares recomputed from the rollouts' rewards (exactly what one call
    of the composer on all of them reports), errors summed, seconds the slowest rank's, and a reward's own
    extra figures averaged over the ranks weighted by their rollouts."""
    weights = {i: n for i, (_, n) in enumerate(per_rank) if n}
    keys = [k for i in weights for k in per_rank[i][0]]
    out: dict[str, float] = {}
    for key in dict.fromkeys(keys):
        values = [(per_rank[i][0][key], weights[i]) for i in weights if key in per_rank[i][0]]
        label, _, suffix = key[len("reward/"):].rpartition("/") if key.startswith("reward/") else ("", "", "")
        scores = ([float(r.reward) for r in rollouts] if label == "total" else
                  [r.components.get(label) for r in rollouts])
        applied = [float(x) for x in scores if x is not None]
        if suffix in ("mean", "std") and applied:
            mean = sum(applied) / len(applied)
            out[key] = mean if suffix == "mean" else math.sqrt(sum((x - mean) ** 2 for x in applied) / len(applied))
        elif suffix == "applicable" and rollouts:
            out[key] = len(applied) / len(rollouts)
        elif suffix == "errors":
            out[key] = sum(v for v, _ in values)
        elif suffix == "seconds":
            out[key] = max(v for v, _ in values)
        else:
            out[key] = sum(v * n for v, n in values) / sum(n for _, n in values)
    return out


# ----------------------------------------------------------------------------- config checks


def check_batch_divides(prompts_per_step: int, what: str = "batch.prompts_per_step") -> None:
    """At config load: the step's prompts must split into whole groups across the launched processes."""
    size = launched_world_size()
    if size > 1 and prompts_per_step % size:
        lower = prompts_per_step - prompts_per_step % size
        raise ValueError(f"{what}={prompts_per_step} does not divide across the {size} launched processes (each takes "
                         f"whole groups); set {what} to a multiple of {size} ({lower or size} or "
                         f"{lower + size}), or launch {_divisors(prompts_per_step)} processes")


def _divisors(n: int) -> str:
    ds = [d for d in range(1, n + 1) if n % d == 0]
    return ", ".join(map(str, ds[:-1])) + (" or " if len(ds) > 1 else "") + str(ds[-1])


# ----------------------------------------------------------------------------- the run folder on other ranks


class _NullMetrics:
    """What a non-zero rank has instead of a metrics writer."""

    start = 0.0

    def write(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return metrics

    def close(self) -> None:
        pass


class FollowerRun:
    """The run folder as seen by ranks > 0: the same path, nothing written; warnings go to stderr."""

    def __init__(self, path: Path, rank: int):
        import logging

        self.path = Path(path)
        self.metrics = _NullMetrics()
        self.log = logging.getLogger(f"aha.rank{rank}")
        if not self.log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s %(message)s"))
            self.log.addHandler(handler)
            self.log.setLevel(logging.WARNING)
            self.log.propagate = False

    def write_config(self, cfg: Any) -> Path:
        return self.path / "config.yaml"

    def subdir(self, name: str) -> Path:
        return self.path / name


def open_run(world: World, create: Any) -> Any:
    """The run folder: `create()` (a RunDir) on rank 0, a `FollowerRun` at its path on the others. A
    failure to create it on rank 0 reaches every rank, so none waits for it forever."""
    run, error = None, None
    if world.main:
        try:
            run = create()
        except AhaError as exc:
            error = str(exc)
    path, error = world.from_main((str(run.path) if run is not None else None, error))
    if error is not None:
        raise AhaError(error)
    return run if world.main else FollowerRun(Path(path), world.rank)


def world_summary(world: World, prompts_per_step: int, group: int, strategy: str = "") -> str:
    """The line a run logs at start: the world size, the strategy and each rank's share of a step."""
    each = ", ".join(f"rank {r}: {len(world.share(prompts_per_step, r))} prompts x {group} samples"
                     for r in range(world.size))
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
    how = f", {strategy}" if strategy else ""
    return (f"world size {world.size} ({backend}{how}); {each} per step (dynamic sampling rounds split the "
            "same way)")
