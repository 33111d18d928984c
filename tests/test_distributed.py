"""Training on two CPU processes (gloo) through the real launchers, against one process.

The end-to-end tests start `torchrun --nproc_per_node 2 -m aha.cli ...` or `accelerate launch --config_file
recipes/accelerate/ddp.yaml --num_processes 2 -m aha.cli ...` as subprocesses (OMP_NUM_THREADS=1 each) and
compare the run folder with a one-process run of the same recipe and seed: the same prompts and completions,
advantages, losses and final weights (within 1e-6 in fp32). Each checks the world size the run actually got
(`world size 2` in run.log), since accelerate can start one process where two were asked for.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aha.cli import main
from aha.errors import AhaError
from aha.rewards.base import RewardBatch, RewardOutput
from aha.runs import read_jsonl
from aha.train.distributed import (
    World,
    check_batch_divides,
    check_strategy,
    merge_reward_metrics,
    requested_processes,
)
from tests.test_grpo import vowel_share

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-6
TIMING = ("time", "seconds", "tokens_per_s")  # wall-clock figures differ run to run


def half_flat(batch: RewardBatch, **_) -> RewardOutput:
    """The vowel share for examples with an odd number, 0.5 for even ones: an even prompt's group has zero
    spread, so dynamic sampling drops it, and which rank holds it depends on the data order."""
    share = vowel_share(batch).scores
    return RewardOutput([0.5 if int(ex.id.split("-")[1]) % 2 == 0 else s for ex, s in zip(batch.examples, share)])


# ----------------------------------------------------------------------------- launching


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(n: int, args: list[str], launcher: str = "torchrun", check: bool = True) -> subprocess.CompletedProcess:
    """Run `aha ARGS` in n processes: plainly (n = 1), under torchrun, or under accelerate's launcher."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH"))
                                         if p)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    port = str(_free_port())  # other runs on the machine may hold the default 29500
    if n == 1 and launcher == "torchrun":
        cmd = [sys.executable, "-m", "aha.cli", *args]
    elif launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", port,
               "-m", "aha.cli", *args]
    else:
        accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
        assert accelerate, "accelerate's launcher is not installed"
        cmd = [accelerate, "launch", *launcher_args(launcher, n), "--main_process_port", port, "-m", "aha.cli", *args]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def launcher_args(launcher: str, n: int) -> list[str]:
    if launcher == "accelerate":
        return ["--config_file", str(REPO / "recipes" / "accelerate" / "ddp.yaml"), "--num_processes", str(n)]
    if launcher == "accelerate-fsdp":  # FSDP2 full shard (tests/test_fsdp.py)
        return ["--config_file", str(REPO / "recipes" / "accelerate" / "fsdp.yaml"), "--num_processes", str(n)]
    if launcher == "accelerate-cpu":  # the pitfall: accelerate starts one process
        return ["--cpu", "--num_processes", str(n)]
    raise ValueError(launcher)


def grpo_args(model_dir: Path, out: Path, extra: list[str]) -> list[str]:
    return ["train", f"model.path={model_dir}", "task.name=tests.toy_task:ToyTask", "task.options={count: 8}",
            "rewards=[{name: 'tests.test_grpo:vowel_share', weight: 1.0}]", "steps=3", "batch.prompts_per_step=2",
            "batch.samples_per_prompt=4", "rollout.max_new_tokens=12", "rollout.stop=[]", "optim.lr=3e-3",
            "run.progress=false", "run.seed=7", f"run.out_dir={out}", *extra]


# ----------------------------------------------------------------------------- comparing run folders


def weights(run: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted((run / "model").glob("*.safetensors")):
        out.update(load_file(str(f)))
    assert out, f"no weights in {run / 'model'}"
    return out


def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in read_jsonl(run / "metrics.jsonl")]


def assert_same_weights(a: Path, b: Path) -> None:
    """Equal within 1e-6, except the attention key biases: their gradient is zero in exact arithmetic
    (a softmax does not change when every key score of a query moves by the same amount), so what they
    get is rounding noise of about 1e-9, which Adam scales up towards lr; where the micro-batch gradients
    are added in another order (2 ranks: (m0 + m2) + (m1 + m3); 1 process: ((m0 + m1) + m2) + m3) that noise
    differs. They are held to 1e-5."""
    wa, wb = weights(a), weights(b)
    assert sorted(wa) == sorted(wb)
    for k in wa:
        tol = 1e-5 if k.endswith("k_proj.bias") else TOL
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=tol), (k, float((wa[k] - wb[k]).abs().max()))


def assert_same_metrics(a: Path, b: Path, keys: tuple[str, ...]) -> None:
    ma, mb = metrics(a), metrics(b)
    assert [r["step"] for r in ma] == [r["step"] for r in mb]
    for ra, rb in zip(ma, mb):
        for k in keys:
            if k not in ra and k not in rb:
                continue  # e.g. val/loss outside validation steps
            assert ra[k] == pytest.approx(rb[k], abs=TOL), (ra["step"], k)


def assert_same_rollouts(a: Path, b: Path) -> None:
    """The same prompts, completions, rewards and advantages in every step (dropped groups included)."""
    files = sorted(p.name for p in (a / "rollouts").glob("*.jsonl"))
    assert files and files == sorted(p.name for p in (b / "rollouts").glob("*.jsonl"))
    for name in files:
        ra, rb = read_jsonl(a / "rollouts" / name), read_jsonl(b / "rollouts" / name)
        assert [(r["id"], r["group"], r["sample"], r["completion"], r["kept"]) for r in ra] == \
            [(r["id"], r["group"], r["sample"], r["completion"], r["kept"]) for r in rb]
        for x, y in zip(ra, rb):
            assert x["reward"] == pytest.approx(y["reward"], abs=TOL)
            assert x["advantage"] == pytest.approx(y["advantage"], abs=TOL)


def assert_written_once(one: Path, two: Path) -> None:
    """Rank 0 alone wrote the run: the same files as one process wrote, each log line once, and the
    world size the launcher really gave."""
    files = sorted(str(p.relative_to(one)) for p in one.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(two)) for p in two.rglob("*") if p.is_file())
    assert len(read_jsonl(two / "metrics.jsonl")) == len(read_jsonl(one / "metrics.jsonl"))
    log = (two / "run.log").read_text()
    assert log.count("done:") == 1 and log.count("run directory:") == 1
    assert "world size 2" in log and "world size" not in (one / "run.log").read_text()


# ----------------------------------------------------------------------------- GRPO

# validation at step 3 (the end): 5 held-out prompts, split 3 + 2 over the ranks
KL = ["algo.kl_coef=0.04", "batch.mini_batches=2", "batch.micro_batch_size=2", "val_every=3", "val_size=5",
      "val_temperature=1.0"]


@pytest.fixture(scope="module")
def kl_runs(tmp_path_factory, tiny_model_dir):
    """GRPO with a KL loss to a frozen reference, two mini-batches: one process and two (torchrun)."""
    root = tmp_path_factory.mktemp("kl")
    launch(1, grpo_args(tiny_model_dir, root / "one", KL))
    launch(2, grpo_args(tiny_model_dir, root / "two", KL))
    return root / "one", root / "two"


@pytest.mark.slow
def test_grpo_with_kl_on_two_processes_equals_one(kl_runs):
    one, two = kl_runs
    assert_same_rollouts(one, two)
    assert_same_metrics(one, two, ("loss", "pg_loss", "kl", "grad_norm", "reward/total/mean", "accuracy"))
    assert_same_weights(one, two)
    assert_written_once(one, two)
    assert read_jsonl(one / "eval" / "val_step_00003.jsonl") == read_jsonl(two / "eval" / "val_step_00003.jsonl")
    assert metrics(one)[-1]["val/accuracy"] == metrics(two)[-1]["val/accuracy"]
    assert "rank 0: 1 prompts x 4 samples, rank 1: 1 prompts x 4 samples" in (two / "run.log").read_text()


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_and_in_two_processes(kl_runs, tiny_model_dir, tmp_path):
    one, _ = kl_runs
    first = tmp_path / "first"
    launch(2, grpo_args(tiny_model_dir, first, [*KL, "max_seconds=0.001"]))  # stops after step 1, checkpointed
    assert [p.name for p in (first / "checkpoints").iterdir()] == ["step_000001"]
    for n in (1, 2):
        run = tmp_path / f"resumed_in_{n}"
        shutil.copytree(first, run)
        launch(n, grpo_args(tiny_model_dir, run, [*KL, f"resume={run}", "max_seconds=0"]))
        assert_same_metrics(one, run, ("loss", "pg_loss", "kl", "grad_norm", "reward/total/mean"))
        assert_same_weights(one, run)


@pytest.mark.slow
def test_dynamic_sampling_with_unequal_drops_per_rank_equals_one_process(tiny_model_dir, tmp_path):
    # REINFORCE++ whitens over the whole batch and the KL is in the reward: both need every rank's rows
    extra = ["rewards=[{name: 'tests.test_distributed:half_flat', weight: 1.0}]", "batch.prompts_per_step=4",
             "algo.dynamic_sampling=true", "algo.max_resample_rounds=2", "algo.loss_agg=token_mean",
             "algo.kl_coef=0.05", "algo.kl_in_reward=true", "algo.advantage=reinforce_pp", "algo.num_iterations=2",
             "batch.micro_batch_size=4"]
    launch(1, grpo_args(tiny_model_dir, tmp_path / "one", extra))
    launch(2, grpo_args(tiny_model_dir, tmp_path / "two", extra))
    one, two = tmp_path / "one", tmp_path / "two"
    # in the first round groups 0-1 are rank 0's and 2-3 rank 1's: some step drops more on one rank
    unequal = False
    for f in sorted((two / "rollouts").glob("*.jsonl")):
        dropped = {r["group"] for r in read_jsonl(f) if r["group"] < 4 and not r["kept"]}
        unequal |= sum(g < 2 for g in dropped) != sum(g >= 2 for g in dropped)
    assert unequal, "no step dropped groups on one rank only; change the seed"
    assert_same_rollouts(one, two)
    assert_same_metrics(one, two, ("loss", "pg_loss", "kl_in_reward", "groups/kept", "reward/total/mean"))
    assert_same_weights(one, two)
    assert_written_once(one, two)


@pytest.mark.slow
def test_lora_under_accelerate_launch_equals_one_process(tiny_model_dir, tmp_path):
    # without dropout: N ranks draw other dropout masks than one process (see World.seed_dropout). One
    # micro-batch per rank: at lr 1e-2 Adam turns the rounding of another gradient summation order in the
    # adapter's near-zero gradients (lora_B starts at 0) into differences of 1e-5 (see assert_same_weights)
    extra = ["lora.enabled=true", "lora.r=4", "lora.dropout=0", "algo.kl_coef=0.1", "algo.advantage=dr_grpo",
             "algo.loss_agg=seq_mean_token_sum_norm", "batch.micro_batch_size=4", "optim.lr=1e-2"]
    launch(1, grpo_args(tiny_model_dir, tmp_path / "one", extra))
    launch(2, grpo_args(tiny_model_dir, tmp_path / "two", extra), launcher="accelerate")
    one, two = tmp_path / "one", tmp_path / "two"
    assert (two / "model" / "adapter_model.safetensors").is_file()
    assert_same_rollouts(one, two)
    assert_same_metrics(one, two, ("loss", "kl", "grad_norm"))
    assert_same_weights(one, two)
    assert_written_once(one, two)


@pytest.mark.slow
def test_accelerate_cpu_mode_that_starts_one_process_is_refused(tiny_model_dir, tmp_path):
    proc = launch(2, grpo_args(tiny_model_dir, tmp_path / "r", []), launcher="accelerate-cpu", check=False)
    assert proc.returncode != 0
    assert "accelerate was asked for 2 processes but started only this one" in proc.stderr
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- SFT


@pytest.mark.slow
def test_sft_on_two_processes_equals_one(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"What is {i % 7} + {i % 5}?", "response": f"<answer>{i % 7 + i % 5}</answer>"}
            for i in range(40)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def args(out: Path) -> list[str]:
        return ["sft", f"model.path={tiny_model_dir}", f"data.files=[{data}]", "steps=3", "optim.lr=3e-3",
                "optim.warmup_steps=2", "val_every=2", "data.val_fraction=0.1", "batch_tokens=256",
                "run.progress=false", f"run.out_dir={out}"]

    launch(1, args(tmp_path / "one"))
    launch(2, args(tmp_path / "two"))
    one, two = tmp_path / "one", tmp_path / "two"
    assert_same_metrics(one, two, ("train/loss", "val/loss", "grad_norm", "response_tokens"))
    assert_same_weights(one, two)
    files = sorted(str(p.relative_to(one)) for p in one.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(two)) for p in two.rglob("*") if p.is_file())
    assert "world size 2" in (two / "run.log").read_text()


# ----------------------------------------------------------------------------- the rules, in one process


@pytest.mark.parametrize(("n", "size", "shares"), [
    (4, 2, [range(0, 2), range(2, 4)]),  # even split: whole groups, contiguous global positions
    (3, 2, [range(0, 2), range(2, 3)]),  # a resampling round of 3 prompts: rank 0 takes the extra one
    (1, 2, [range(0, 1), range(1, 1)]),  # one prompt left: rank 1 samples nothing this round
    (5, 1, [range(0, 5)]),  # one process takes everything
])
def test_each_rank_takes_a_contiguous_share(n, size, shares):
    world = World(rank=0, size=size)
    assert [world.share(n, r) for r in range(size)] == shares


def test_part_deals_micro_batches_round_robin():
    assert World(rank=1, size=2).part(["a", "b", "c", "d", "e"]) == ["b", "d"]
    assert World().part(["a", "b"]) == ["a", "b"]


@pytest.mark.parametrize(("argv", "asked"), [
    (["/usr/bin/accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "aha.cli"], 2),  # the pitfall
    (["python", "/x/bin/accelerate", "launch", "--num_processes=4", "x.py"], 4),  # a script-run accelerate
    (["accelerate", "launch", "x.py"], 1),  # nothing asked
    (["torchrun", "--nproc_per_node", "2", "x.py"], 1),  # not accelerate: torchrun sets WORLD_SIZE
    ([], 1),  # no parent command line (not Linux)
])
def test_requested_processes_reads_the_accelerate_command_line(argv, asked):
    assert requested_processes(argv) == asked


def test_requested_processes_reads_the_config_file(tmp_path):
    config = tmp_path / "multi_cpu.yaml"
    config.write_text("distributed_type: MULTI_CPU\nnum_processes: 2\n")  # no MPI: accelerate starts one
    assert requested_processes(["accelerate", "launch", "--config_file", str(config), "x.py"]) == 2


def test_prompts_that_do_not_divide_across_the_launched_processes_fail_at_config_load(monkeypatch, capsys,
                                                                                      tiny_model_dir, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"batch.prompts_per_step=3 does not divide across the 2 launched processes"
                                         r".*multiple of 2 \(2 or 4\), or launch 1 or 3 processes"):
        check_batch_divides(3)
    check_batch_divides(4)
    assert main(grpo_args(tiny_model_dir, tmp_path / "r", ["batch.prompts_per_step=3"])) == 2
    assert "does not divide across the 2 launched processes" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


class _R:
    """A rollout as merge_reward_metrics reads it."""

    def __init__(self, reward, comps):
        self.reward, self.components = reward, comps


def test_reward_metrics_of_the_ranks_merge_into_the_whole_batch_figures():
    # rank 0 scored rewards 1, 0 (component a: 1, None); rank 1 scored 1, 1 (a: 0, 1)
    rollouts = [_R(1.0, {"a": 1.0}), _R(0.0, {"a": None}), _R(1.0, {"a": 0.0}), _R(1.0, {"a": 1.0})]
    per_rank = [({"reward/total/mean": 0.5, "reward/a/mean": 1.0, "reward/a/applicable": 0.5, "reward/a/errors": 1.0,
                  "reward/a/seconds": 0.2, "reward/a/extra": 4.0}, 2),
                ({"reward/total/mean": 1.0, "reward/a/mean": 0.5, "reward/a/applicable": 1.0, "reward/a/errors": 0.0,
                  "reward/a/seconds": 0.5, "reward/a/extra": 2.0}, 2)]
    got = merge_reward_metrics(per_rank, rollouts)
    assert got["reward/total/mean"] == 0.75  # (1 + 0 + 1 + 1) / 4
    assert got["reward/a/mean"] == pytest.approx(2 / 3)  # the three applicable scores 1, 0, 1
    assert got["reward/a/applicable"] == 0.75  # 3 of 4
    assert got["reward/a/errors"] == 1.0  # summed
    assert got["reward/a/seconds"] == 0.5  # the slowest rank
    assert got["reward/a/extra"] == 3.0  # a reward's own figure: weighted by rollouts, (4 * 2 + 2 * 2) / 4


def test_commands_that_run_in_one_process_refuse_a_launcher(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["eval", "--model", "m", "--task", "arithmetic"]) == 2
    assert "runs in one process; under torchrun or accelerate launch only `aha train` and `aha sft` do" in \
        capsys.readouterr().err


def _sync_gradients_on_rank(rank: int, port: int) -> None:
    """One of two gloo processes: rank 0 has gradients [1, 2] and [5]; rank 1 has [10, 20] and none for the
    second parameter; neither has one for the third."""
    import torch.distributed as dist

    import aha.train.distributed as distributed

    distributed._BUCKET = 2  # a bucket per parameter here: the split path too
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        params = [torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True),
                  torch.zeros(3, requires_grad=True)]
        params[0].grad = torch.tensor([1.0, 2.0]) if rank == 0 else torch.tensor([10.0, 20.0])
        params[1].grad = torch.tensor([5.0]) if rank == 0 else None
        world = World(rank=rank, size=2)
        world.sync_gradients(params)
        assert params[0].grad.tolist() == [11.0, 22.0]  # summed: 1 + 10, 2 + 20
        assert params[1].grad.tolist() == [5.0]  # a rank without a gradient counts as zeros
        assert params[2].grad is None  # no rank had one: AdamW skips it, as in one process
        assert world.sum([1.0, rank]) == [2.0, 1.0]
        assert world.any(rank == 1) and not world.any(False)
        assert world.gather(rank) == [0, 1] and world.from_main(f"r{rank}") == "r0"
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gradients_are_summed_over_two_gloo_processes():
    torch.multiprocessing.spawn(_sync_gradients_on_rank, args=(_free_port(),), nprocs=2)


def _close_world_on_rank(rank: int, port: int) -> None:
    """One of two processes joined the way a launcher's are (the environment, then `init_world`), then torn
    down by `close_world`, the handler `init_world` registers with atexit."""
    import torch.distributed as dist

    import aha.train.distributed as distributed

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    world = distributed.init_world()
    assert (world.rank, world.size) == (rank, 2)
    work = dist.all_reduce(torch.ones(4), async_op=True)  # async work on gloo's threads, as FSDP2's
    work.wait()
    distributed.close_world()  # before the command finished (an error exit): the group is left alone
    assert dist.is_initialized()
    world.finish()
    distributed.close_world()
    assert not dist.is_initialized() and distributed._WORLD is None
    distributed.close_world()  # twice (an explicit call, then atexit's) is harmless


@pytest.mark.slow
def test_the_process_group_is_torn_down_before_interpreter_exit():
    torch.multiprocessing.spawn(_close_world_on_rank, args=(_free_port(),), nprocs=2)


@pytest.mark.parametrize(("variable", "message"), [
    # (fsdp.yaml runs: tests/test_fsdp.py)
    # zero2/zero3.yaml; DeepSpeed is not installed here, so the install command comes first
    ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed, which is not installed: `pip install deepspeed`"),
])
def test_sharded_strategies_are_refused_with_the_fix(monkeypatch, variable, message):
    if variable == "ACCELERATE_USE_DEEPSPEED" and importlib.util.find_spec("deepspeed"):
        message = "DeepSpeed ZeRO is not supported"
    monkeypatch.setenv(variable, "true")
    with pytest.raises(AhaError, match=re.escape(message)):
        check_strategy()


@pytest.mark.parametrize(("name", "kind", "setting"), [
    ("ddp", "MULTI_GPU", None),  # also starts N processes on CPU (gloo); the one aha trains with
    ("fsdp", "FSDP", ("fsdp_config", "fsdp_sharding_strategy", "FULL_SHARD")),
    ("zero2", "DEEPSPEED", ("deepspeed_config", "zero_stage", 2)),
    ("zero3", "DEEPSPEED", ("deepspeed_config", "zero_stage", 3)),
])
def test_shipped_accelerate_configs(name, kind, setting):
    import yaml

    config = yaml.safe_load((REPO / "recipes" / "accelerate" / f"{name}.yaml").read_text())
    assert config["distributed_type"] == kind and config["use_cpu"] is False
    if setting is not None:
        section, key, value = setting
        assert config[section][key] == value
