"""FSDP (torch's FSDP2) on two CPU processes (gloo) through the real launchers, against one process.

The runs are those of tests/test_distributed.py (its helpers launch and compare them) with the model, its
gradients and the AdamW state sharded: `parallel=fsdp` (or fsdp_shard_grad_op) under torchrun,
recipes/accelerate/fsdp.yaml under `accelerate launch`. Covered: GRPO with KL to a sharded reference (slots
whose ranks disagree on prompt sharing), an FSDP checkpoint resumed in 1 process and under SHARD_GRAD_OP and a
one-process checkpoint under FSDP, bf16 weights with fp32 masters and a ProRL reset (bitwise, resumed both
ways), LoRA with
dynamic sampling and a zero-loss padding micro-batch under accelerate (bitwise), and SFT with one-row batches
and gradient checkpointing. Each checks the strategy and world size logged in run.log; about two minutes in
all on the shared 2-core machine (two processes per run).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from aha.errors import AhaError
from aha.train import fsdp
from aha.train.distributed import World
from tests.test_distributed import (
    KL,
    REPO,
    TOL,
    assert_same_rollouts,
    assert_same_weights,
    assert_written_once,
    grpo_args,
    launch,
    metrics,
    weights,
)
from tests.test_distributed import assert_same_metrics as assert_same_plain_metrics

FSDP_LOG = "world size 2 (gloo, FSDP2 FULL_SHARD)"
# the gradient norm is computed from the shards (each rank's squared sums, then added): the same value up to
# float rounding, about 5e-7 of it here
NORM_RTOL = 1e-5


def assert_same_metrics(a: Path, b: Path, keys: tuple[str, ...]) -> None:
    """tests/test_distributed.py's check (within 1e-6), grad_norm within NORM_RTOL of its value."""
    assert_same_plain_metrics(a, b, tuple(k for k in keys if k != "grad_norm"))
    if "grad_norm" in keys:
        for ra, rb in zip(metrics(a), metrics(b)):
            assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=NORM_RTOL), ra["step"]


def launch_fsdp(n: int, args: list[str], launcher: str = "torchrun") -> None:
    """`launch` with FSDP: `parallel=fsdp` under torchrun, the shipped fsdp.yaml under accelerate."""
    if launcher == "torchrun":
        launch(n, [*args, "parallel=fsdp"])
    else:
        launch(n, args, launcher="accelerate-fsdp")


# tests/test_distributed.py's KL case with 4 prompts x 2 samples: some micro-batches of 2 rows hold one prompt
# twice (one process runs that prompt once, see aha.train.logprobs) and others two prompts, so in some slots the
# two ranks disagree and both run their rows whole (`fsdp.lockstep`): the same function, rounded otherwise. Adam
# turns those 1e-7 differences of near-zero gradient coordinates into weight differences of up to 6.4e-6 after
# 3 steps at lr 3e-3 (the runs without such slots below agree within 1e-6), hence MIXED_TOL. Checkpoints every
# step, so the resume test can start from step 1 of these very runs.
KL4 = [*KL, "batch.prompts_per_step=4", "batch.samples_per_prompt=2", "checkpoint_every=1", "keep_checkpoints=3"]
MIXED_TOL = 1e-5


def assert_close_weights(a: Path, b: Path, tol: float) -> None:
    wa, wb = weights(a), weights(b)
    assert sorted(wa) == sorted(wb)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=tol), (k, float((wa[k] - wb[k]).abs().max()))


@pytest.fixture(scope="module")
def kl_runs(tmp_path_factory, tiny_model_dir):
    """GRPO with a KL loss to a sharded frozen reference, two mini-batches: one process and two (FSDP)."""
    root = tmp_path_factory.mktemp("fsdp_kl")
    launch(1, grpo_args(tiny_model_dir, root / "one", KL4))
    launch_fsdp(2, grpo_args(tiny_model_dir, root / "two", KL4))
    return root / "one", root / "two"


@pytest.mark.slow
def test_grpo_with_kl_under_fsdp_equals_one_process(kl_runs):
    one, two = kl_runs
    assert_same_rollouts(one, two)
    assert_same_metrics(one, two, ("loss", "pg_loss", "kl", "grad_norm", "reward/total/mean", "accuracy"))
    assert_close_weights(one, two, MIXED_TOL)
    assert_written_once(one, two)
    assert FSDP_LOG in (two / "run.log").read_text()
    assert "rank 0: 2 prompts x 2 samples, rank 1: 2 prompts x 2 samples" in (two / "run.log").read_text()


def from_step_1(run: Path, to: Path) -> Path:
    """A copy of `run` as if it had stopped after step 1 (later checkpoints removed)."""
    shutil.copytree(run, to)
    for ckpt in (to / "checkpoints").iterdir():
        if ckpt.name != "step_000001":
            shutil.rmtree(ckpt)
    return to


@pytest.mark.slow
def test_an_fsdp_checkpoint_resumes_in_one_process_and_under_fsdp(kl_runs, tiny_model_dir, tmp_path):
    one, two = kl_runs
    # rank 0 wrote the one-process format: the same files, the optimizer state keyed by parameter index
    ckpt, ref = two / "checkpoints" / "step_000001", one / "checkpoints" / "step_000001"
    assert sorted(p.name for p in ckpt.rglob("*")) == sorted(p.name for p in ref.rglob("*"))
    a, b = torch.load(ckpt / "optimizer.pt"), torch.load(ref / "optimizer.pt")
    assert sorted(a["state"]) == sorted(b["state"]) and a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.allclose(a["state"][i][key], b["state"][i][key], rtol=0, atol=1e-6), (i, key)
    # in 2 processes under SHARD_GRAD_OP: the same sums as FULL_SHARD (only when weights are freed differs)
    for n, extra in ((1, []), (2, ["parallel=fsdp_shard_grad_op"])):
        run = from_step_1(two, tmp_path / f"resumed_in_{n}")
        launch(n, grpo_args(tiny_model_dir, run, [*KL4, f"resume={run}", *extra]))
        assert "resumed from" in (run / "run.log").read_text()
        assert n == 1 or "world size 2 (gloo, FSDP2 SHARD_GRAD_OP)" in (run / "run.log").read_text()
        assert_same_metrics(two if n == 2 else one, run, ("loss", "pg_loss", "kl", "grad_norm", "reward/total/mean"))
        assert_close_weights(two, run, TOL if n == 2 else MIXED_TOL)  # FSDP resumed exactly; 1 process as above
    run = from_step_1(one, tmp_path / "plain_resumed_under_fsdp")  # a one-process checkpoint under FSDP
    launch_fsdp(2, grpo_args(tiny_model_dir, run, [*KL4, f"resume={run}"]))
    assert "resumed from" in (run / "run.log").read_text()
    assert_close_weights(one, run, MIXED_TOL)  # steps 2-3 ran under FSDP


@pytest.mark.slow
def test_bf16_masters_and_a_prorl_reset_under_fsdp_equal_one_process_and_resume_across(tiny_model_dir, tmp_path):
    # bf16 weights stepped through fp32 master copies: one process runs MasterWeightAdamW, FSDP keeps the fp32
    # masters as the shards and gathers them in bf16 (MixedPrecisionPolicy), reducing the gradients in bf16 as
    # one process accumulates them; one micro-batch per rank. A ProRL hard reset after step 1 (full
    # fine-tuning: the sharded reference loads the sharded policy, AdamW is rebuilt over the shards).
    # Clipping is off: one process takes the norm of the bf16 gradients in bf16, FSDP of their fp32 shards
    # (the grad_norm metrics differ by ~3e-3; in fp32 the norm's rounding, see NORM_RTOL, gone through the
    # fresh AdamW after a reset, moves weights by up to 4.8e-6)
    extra = [*KL, "model.dtype=bfloat16", "optim.max_grad_norm=0", "reset.at_steps=[1]", "checkpoint_every=1",
             "keep_checkpoints=3"]
    launch(1, grpo_args(tiny_model_dir, tmp_path / "one", extra))
    launch_fsdp(2, grpo_args(tiny_model_dir, tmp_path / "two", extra))
    one, two = tmp_path / "one", tmp_path / "two"
    assert [r.get("reset/count") for r in metrics(two)] == [0, 1, 1]
    assert_same_rollouts(one, two)
    assert_same_plain_metrics(one, two, ("loss", "pg_loss", "kl", "reward/total/mean"))
    assert_close_weights(one, two, 0.0)
    assert all(w.dtype == torch.bfloat16 for w in weights(two).values())
    assert '"dtype": "bfloat16"' in (two / "model" / "config.json").read_text()
    # rank 0 wrote what one process writes: the masters in optimizer.pt, the reset reference (step 2)
    from safetensors.torch import load_file

    for r in ("step_000001", "step_000002"):
        masters, ref = (torch.load(run / "checkpoints" / r / "optimizer.pt")["master_weights"] for run in (two, one))
        assert len(masters) == len(ref) and all(torch.equal(a, b) for a, b in zip(masters, ref))
    a, b = (load_file(str(run / "checkpoints" / "step_000002" / "reference.safetensors")) for run in (one, two))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    # FSDP's step-2 checkpoint (after the reset) in one process, one process's step-1 checkpoint under FSDP
    for source, keep, n, how in ((two, "step_000002", 1, launch), (one, "step_000001", 2, launch_fsdp)):
        run = tmp_path / f"resumed_in_{n}"
        shutil.copytree(source, run)
        for ckpt in (run / "checkpoints").iterdir():
            if ckpt.name > keep:
                shutil.rmtree(ckpt)
        how(n, grpo_args(tiny_model_dir, run, [*extra, f"resume={run}"]))
        assert f"resumed from {run / 'checkpoints' / keep}" in (run / "run.log").read_text()
        assert_close_weights(one, run, 0.0)


@pytest.mark.slow
def test_lora_with_padding_micro_batches_under_accelerate_fsdp_equals_one_process(tiny_model_dir, tmp_path):
    # LoRA without dropout (as tests/test_distributed.py's case), launched with recipes/accelerate/fsdp.yaml;
    # the reference is the sharded model with its adapter off. Dynamic sampling drops unequally per rank; 12
    # kept rows in micro-batches of 4 make 3 micro-batches, so rank 1 runs a zero-loss copy in the second
    # slot (and the gradients still add up in the one-process order, (m0 + m1) + m2); mu = 2 on one
    # mini-batch takes the old log-probs from the first pass, which the copy must not store
    extra = ["lora.enabled=true", "lora.r=4", "lora.dropout=0", "algo.kl_coef=0.1", "algo.advantage=dr_grpo",
             "algo.loss_agg=seq_mean_token_sum_norm", "optim.lr=1e-2", "batch.prompts_per_step=4",
             "batch.samples_per_prompt=3", "batch.micro_batch_size=4", "algo.num_iterations=2",
             "rewards=[{name: 'tests.test_distributed:half_flat', weight: 1.0}]", "algo.dynamic_sampling=true",
             "algo.max_resample_rounds=2"]
    launch(1, grpo_args(tiny_model_dir, tmp_path / "one", extra))
    launch_fsdp(2, grpo_args(tiny_model_dir, tmp_path / "two", extra), launcher="accelerate")
    one, two = tmp_path / "one", tmp_path / "two"
    assert (two / "model" / "adapter_model.safetensors").is_file()
    assert_same_rollouts(one, two)
    assert_same_metrics(one, two, ("loss", "pg_loss", "kl", "grad_norm", "groups/kept", "reward/total/mean"))
    assert_same_weights(one, two)
    assert_written_once(one, two)
    assert FSDP_LOG in (two / "run.log").read_text()


@pytest.mark.slow
def test_sft_under_fsdp_equals_one_process(tiny_model_dir, tmp_path):
    import json

    # rows of 25-41 tokens in batches of at most 64: step 1's batch has 2 rows (one per rank), steps 2 and 3
    # have 1, so rank 1 runs the zero-loss stand-in (every FSDP forward and backward is a collective); with
    # transformers' gradient checkpointing, whose recomputed forwards run inside FSDP's backward
    rows = [{"prompt": f"What is {i % 7} + {i % 5}?", "response": f"<answer>{i % 7 + i % 5}</answer>" + " x" * (i % 9)}
            for i in range(40)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def args(out: Path) -> list[str]:
        return ["sft", f"model.path={tiny_model_dir}", f"data.files=[{data}]", "steps=3", "optim.lr=3e-3",
                "optim.warmup_steps=2", "val_every=2", "data.val_fraction=0.1", "batch_tokens=64",
                "run.progress=false", f"run.out_dir={out}", "model.gradient_checkpointing=true"]

    launch(1, args(tmp_path / "one"))
    launch_fsdp(2, args(tmp_path / "two"))
    one, two = tmp_path / "one", tmp_path / "two"
    assert_same_metrics(one, two, ("train/loss", "val/loss", "grad_norm", "response_tokens"))
    assert_same_weights(one, two)
    files = sorted(str(p.relative_to(one)) for p in one.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(two)) for p in two.rglob("*") if p.is_file())
    assert "world size 2 (FSDP2 FULL_SHARD)" in (two / "run.log").read_text()
    assert sorted(weights(one)) == sorted(weights(two))


# ----------------------------------------------------------------------------- the rules, in one process


class _Row:
    def __init__(self, prompt):
        self.prompt = prompt


@pytest.mark.parametrize(("rank", "chunks", "expect"), [
    # 3 micro-batches on 2 ranks: rank 1 pads the second slot with a copy of micro-batch 2 (rank 0's)
    (1, [["a", "a"], ["b", "b"], ["c", "c"]], [(1, False, True), (2, True, True)]),
    (0, [["a", "a"], ["b", "b"], ["c", "c"]], [(0, False, True), (2, False, True)]),
    # a slot where one micro-batch repeats a prompt and the other does not: neither shares
    (0, [["a", "a"], ["b", "c"]], [(0, False, False)]),
    (1, [["a", "a"], ["b", "c"]], [(1, False, False)]),
])
def test_lockstep_pads_and_agrees_on_prompt_sharing(rank, chunks, expect):
    rows = [[_Row(p) for p in c] for c in chunks]
    slots = fsdp.lockstep(World(rank=rank, size=2), rows, lambda r: [ord(r.prompt)])
    assert [(rows.index(s.items), s.padding, s.share_prompts) for s in slots] == expect


@pytest.mark.parametrize(("env", "parallel", "size", "expect"), [
    ({}, "ddp", 2, ("ddp", True)),  # the default: a full replica per process
    ({}, "fsdp", 2, ("fsdp", True)),  # torchrun with parallel=fsdp: full shard
    ({}, "fsdp_shard_grad_op", 2, ("fsdp", False)),
    ({}, "fsdp", 1, ("ddp", True)),  # one process: nothing to shard, the recipe still runs
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "FULL_SHARD"}, "ddp", 2, ("fsdp", True)),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"}, "ddp", 2, ("fsdp", False)),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "1"}, "ddp", 2, ("fsdp", True)),  # FSDP1 enum
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_RESHARD_AFTER_FORWARD": "false"}, "ddp", 2,
     ("fsdp", False)),
])
def test_the_strategy_comes_from_accelerate_or_the_config(monkeypatch, env, parallel, size, expect):
    for key in ("ACCELERATE_USE_FSDP", "FSDP_SHARDING_STRATEGY", "FSDP_VERSION", "FSDP_RESHARD_AFTER_FORWARD",
                "FSDP_OFFLOAD_PARAMS", "FSDP_ACTIVATION_CHECKPOINTING"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    got = fsdp.resolve_strategy(parallel, size)
    assert (got.name, got.reshard_after_forward) == expect


@pytest.mark.parametrize(("env", "message"), [
    ({"FSDP_OFFLOAD_PARAMS": "true"}, "FSDP CPU offload (fsdp_offload_params: true) is not supported"),
    ({"FSDP_ACTIVATION_CHECKPOINTING": "true"}, "fsdp_activation_checkpointing is not supported"),
    ({"FSDP_SHARDING_STRATEGY": "HYBRID_SHARD"}, "FSDP sharding strategy HYBRID_SHARD is not supported"),
    ({"FSDP_SHARDING_STRATEGY": "NO_SHARD"}, "to fsdp_sharding_strategy: FULL_SHARD"),
])
def test_unsupported_fsdp_settings_are_refused_with_the_fix(monkeypatch, env, message):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(AhaError, match=re.escape(message)):
        fsdp.resolve_strategy("ddp", 2)


def test_deepspeed_is_refused_naming_the_fsdp_configs(monkeypatch):
    import importlib.util

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    from aha.train.distributed import check_strategy

    expected = "recipes/accelerate/fsdp.yaml" if not importlib.util.find_spec("deepspeed") else "fsdp.yaml (FSDP2"
    with pytest.raises(AhaError, match=re.escape(expected)):
        check_strategy()


@pytest.mark.parametrize(("name", "strategy"), [("fsdp", "FULL_SHARD"), ("fsdp_shard_grad_op", "SHARD_GRAD_OP")])
def test_shipped_fsdp_configs(name, strategy):
    import yaml

    config = yaml.safe_load((REPO / "recipes" / "accelerate" / f"{name}.yaml").read_text())
    assert config["distributed_type"] == "FSDP" and config["fsdp_config"]["fsdp_sharding_strategy"] == strategy
    # the precision is aha's model.dtype; offload and accelerate's activation checkpointing are refused
    assert config["mixed_precision"] == "no" and config["fsdp_config"]["fsdp_offload_params"] is False
    assert config["fsdp_config"]["fsdp_activation_checkpointing"] is False


@pytest.mark.parametrize(("overrides", "message"), [
    (["rollout.backend=vllm"], "the vllm backend is not supported under FSDP"),
    (["reset.every=2", "lora.enabled=true"], "ProRL resets with LoRA are not supported under FSDP yet"),
])
def test_what_fsdp_does_not_cover_is_refused_before_the_run(overrides, message):
    from aha.config import load_config
    from aha.train.config import TrainConfig

    cfg = load_config(TrainConfig, None, ["model.path=m", "task.name=arithmetic", *overrides])
    fsdp.check_supported(cfg, fsdp.PLAIN)  # DDP-style and one process: all of it runs
    with pytest.raises(AhaError, match=re.escape(message)):
        fsdp.check_supported(cfg, fsdp.Strategy("fsdp"))


def test_every_precision_runs_under_fsdp():
    from aha.config import load_config
    from aha.train.config import TrainConfig

    for extra in (["model.dtype=bfloat16"], ["model.dtype=bfloat16", "optim.master_weights=false"],
                  ["model.dtype=float32"], ["model.gradient_checkpointing=true"], ["reset.every=2"]):
        fsdp.check_supported(load_config(TrainConfig, None, ["model.path=m", "task.name=arithmetic", *extra]),
                             fsdp.Strategy("fsdp"))
