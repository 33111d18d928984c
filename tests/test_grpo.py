"""RL trainer end to end on a tiny model: artefacts, learning on a toy reward, exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from aha.cli import main
from aha.errors import AhaError
from aha.models import load_model
from aha.rewards.base import RewardBatch, RewardOutput
from aha.runs import read_jsonl


def vowel_share(batch: RewardBatch, **_) -> RewardOutput:
    """Toy reward a random tiny model can learn fast: the share of vowels among the letters it writes."""
    scores = []
    for text in batch.completions:
        letters = [c for c in text.lower() if c.isalpha()]
        scores.append(sum(c in "aeiou" for c in letters) / len(letters) if letters else 0.0)
    return RewardOutput(scores)


def base_args(model_dir, out, steps, extra=()):
    return ["train", f"model.path={model_dir}", "task.name=tests.toy_task:ToyTask", "task.options={count: 8}",
            "rewards=[{name: 'tests.test_grpo:vowel_share', weight: 1.0}]", f"steps={steps}",
            "batch.prompts_per_step=2", "batch.samples_per_prompt=4", "batch.micro_batch_size=4",
            "rollout.max_new_tokens=12", "rollout.stop=[]", "optim.lr=3e-3", f"run.out_dir={out}",
            "run.progress=false", *extra]


def test_three_steps_write_every_artefact_and_change_weights(tmp_path, tiny_model_dir):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    assert main(base_args(tiny_model_dir, out, 3, ["val_every=3", "val_size=4", "algo.kl_coef=0.04",
                                                  "algo.num_iterations=2"])) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ["reward/total/mean", "accuracy", "format_rate", "groups/zero_spread", "response_length/mean",
                "response_length/min", "response_length/max", "truncated_share", "clip_frac", "kl", "entropy",
                "loss", "grad_norm", "lr", "time/generation", "time/scoring", "time/update", "tokens_per_s"]:
        assert key in rows[0], key
    assert "val/accuracy" in rows[-1] and "val/bucket/even" in rows[-1]
    rollout = [json.loads(line) for line in (out / "rollouts" / "step_00001.jsonl").read_text().splitlines()]
    assert len(rollout) == 8 and {"completion", "advantage", "reward", "rewards", "correct"} <= set(rollout[0])
    assert (out / "config.yaml").is_file() and (out / "run.log").is_file()
    assert (out / "checkpoints" / "step_000003" / "optimizer.pt").is_file()
    before = load_model(tiny_model_dir, device="cpu").state_dict()
    after = load_model(out / "model", device="cpu").state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before)  # every trainable tensor moved


def test_mean_reward_rises_on_a_learnable_toy_reward(tmp_path, tiny_model_dir):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    assert main(base_args(tiny_model_dir, out, 16, ["batch.prompts_per_step=4", "batch.micro_batch_size=16",
                                                   "algo.num_iterations=2", "optim.lr=1e-2"])) == 0
    rewards = [r["reward/total/mean"] for r in read_jsonl(out / "metrics.jsonl")]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.15, rewards


def test_resume_gives_identical_metrics(tmp_path, tiny_model_dir):
    torch.set_num_threads(1)
    straight = tmp_path / "straight"
    assert main(base_args(tiny_model_dir, straight, 4)) == 0
    split = tmp_path / "split"
    assert main(base_args(tiny_model_dir, split, 4, ["max_seconds=0.001"])) == 0  # stops after step 1
    first_part = [r["step"] for r in read_jsonl(split / "metrics.jsonl")]
    assert first_part == [1]
    assert main(base_args(tiny_model_dir, split, 4, ["max_seconds=0.001", f"resume={split}"])) == 0
    assert main(base_args(tiny_model_dir, split, 4, [f"resume={split}", "max_seconds=0"])) == 0

    def strip(rows):
        timing = ("time", "seconds", "tokens_per_s")  # wall-clock figures differ run to run
        return [{k: v for k, v in r.items() if not any(t in k for t in timing)} for r in rows]

    assert strip(read_jsonl(split / "metrics.jsonl")) == strip(read_jsonl(straight / "metrics.jsonl"))


def test_old_logprobs_from_the_first_pass_equal_a_separate_forward(tmp_path, tiny_model_dir, monkeypatch):
    # num_iterations=2 with one mini-batch: the first pass's log-probs replace the separate no-grad
    # forward; the run must be the same as with that forward (same metrics, same final weights)
    import aha.train.grpo as grpo

    torch.set_num_threads(1)
    extra = ["algo.num_iterations=2", "batch.micro_batch_size=4", "optim.lr=1e-2"]
    assert main(base_args(tiny_model_dir, tmp_path / "reuse", 3, extra)) == 0
    monkeypatch.setattr(grpo, "_OLD_FROM_FIRST_PASS", False)
    assert main(base_args(tiny_model_dir, tmp_path / "separate", 3, extra)) == 0

    def strip(rows):
        return [{k: v for k, v in r.items() if not any(t in k for t in ("time", "seconds", "tokens_per_s"))}
                for r in rows]

    reuse, separate = (strip(read_jsonl(tmp_path / d / "metrics.jsonl")) for d in ("reuse", "separate"))
    assert [r["clip_frac"] for r in reuse] == pytest.approx([r["clip_frac"] for r in separate])
    for a, b in zip(reuse, separate):
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
    wa = load_model(tmp_path / "reuse" / "model").state_dict()
    wb = load_model(tmp_path / "separate" / "model").state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def _shared_vs_whole(model, pad, monkeypatch):
    """Run completion_logprobs with and without prompt sharing on 3 prompts of different lengths x 4
    completions (lengths 1..9, mixed order); returns both results and how often the shared path ran."""
    import aha.train.logprobs as logprobs

    calls = []
    real = logprobs.shared_prompt_logits
    monkeypatch.setattr(logprobs, "shared_prompt_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    g = torch.Generator().manual_seed(0)
    distinct = [torch.randint(5, 300, (n,), generator=g).tolist() for n in (5, 12, 8)]
    prompts = [distinct[i % 3] for i in range(12)]
    completions = [torch.randint(5, 300, (1 + (i * 5) % 9,), generator=g).tolist() for i in range(12)]

    def run(share):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        lp, ent, mask = logprobs.completion_logprobs(model, prompts, completions, pad, 0.9, with_entropy=True,
                                                     share_prompts=share)
        (lp * torch.linspace(0.5, 1.5, lp.shape[1])).sum().backward()  # weights make every position count
        return lp.detach(), ent, mask, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    shared = run(True)
    shared_calls = len(calls)
    whole = run(False)
    assert shared[2].sum(1).tolist() == [len(c) for c in completions]
    return shared, whole, shared_calls


@pytest.mark.parametrize("full_prompt_logits", [
    True,  # small U x Lp x V: every prompt position is projected
    False,  # over the size limit: only each prompt's last position (logits_to_keep)
])
def test_shared_prompt_logprobs_equal_running_each_row_whole(tiny_model_dir, monkeypatch, full_prompt_logits):
    # running each distinct prompt once and reusing its cache must give the same log-probs,
    # entropies and gradients as running every row whole
    import aha.train.logprobs as logprobs
    from aha.models import load_tokenizer

    if not full_prompt_logits:
        monkeypatch.setattr(logprobs, "FULL_PROMPT_LOGITS", 0)
    torch.set_num_threads(1)
    model = load_model(tiny_model_dir, trainable=True).train()
    shared, whole, calls = _shared_vs_whole(model, load_tokenizer(tiny_model_dir).pad_token_id, monkeypatch)
    assert calls == 1  # the shared path did run
    assert torch.equal(shared[2], whole[2])
    assert torch.allclose(shared[0], whole[0], atol=1e-5)
    assert torch.allclose(shared[1], whole[1], atol=1e-5)
    assert (shared[0][~shared[2]] == 0).all()  # padding positions carry nothing
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(shared[3], whole[3]))


@pytest.mark.parametrize("kind", [
    "mistral_window",  # a sliding window of 6 tokens: a shared cache would shift short prompts' windows
    "attention_dropout",  # one dropout draw would be shared by a group's rows
    "lora_dropout",  # LoRA's dropout modules, same reason
])
def test_prompt_sharing_falls_back_to_whole_rows_where_it_would_not_be_exact(kind, monkeypatch):
    import transformers

    from aha.config import LoraConfig
    from aha.train.common import attach_lora

    torch.set_num_threads(1)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=320)
    if kind == "mistral_window":
        config = transformers.MistralConfig(sliding_window=6, **small)
    else:
        config = transformers.Qwen2Config(attention_dropout=0.3 if kind == "attention_dropout" else 0.0, **small)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    if kind == "lora_dropout":
        model = attach_lora(model, LoraConfig(enabled=True, r=4, alpha=8, dropout=0.2))
    model.train()
    shared, whole, calls = _shared_vs_whole(model, 0, monkeypatch)
    assert calls == 0
    assert torch.allclose(shared[0], whole[0], atol=1e-6)  # same path and seed: same numbers


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean"])
def test_micro_batch_split_does_not_change_training(tmp_path, tiny_model_dir, agg):
    # the loss divisors are the mini-batch's, so 8 rollouts in micro-batches of 2 (sorted by length)
    # train exactly as one micro-batch of 8
    torch.set_num_threads(1)
    runs = {}
    for micro in (2, 8):
        out = tmp_path / f"micro{micro}"
        assert main(base_args(tiny_model_dir, out, 2, [f"batch.micro_batch_size={micro}", f"algo.loss_agg={agg}",
                                                       "optim.lr=1e-2"])) == 0
        runs[micro] = (read_jsonl(out / "metrics.jsonl"), load_model(out / "model").state_dict())
    (m2, w2), (m8, w8) = runs[2], runs[8]
    assert [r["loss"] for r in m2] == pytest.approx([r["loss"] for r in m8], rel=1e-4, abs=1e-6)
    assert [r["reward/total/mean"] for r in m2] == [r["reward/total/mean"] for r in m8]
    # two Adam steps at lr 1e-2 move weights by up to 2e-2; summation order alone leaves ~1e-5
    assert all(torch.allclose(w2[k], w8[k], atol=1e-4) for k in w2)


def test_micro_token_mean_divides_by_the_micro_batch_count(tmp_path, tiny_model_dir):
    # REA-RL's parity mode. Every completion here runs to the 12-token cap, so each micro-batch of 2
    # holds 24 tokens and the mean of the 4 micro-batch means, each over 4 micro-batches, is the token
    # mean: the same gradient. Without the 1/4 the gradient norm would be 4 times larger.
    torch.set_num_threads(1)
    rows = {}
    for agg in ("token_mean", "micro_token_mean"):
        out = tmp_path / agg
        assert main(base_args(tiny_model_dir, out, 1, ["batch.micro_batch_size=2", f"algo.loss_agg={agg}"])) == 0
        rows[agg] = read_jsonl(out / "metrics.jsonl")[0]
    assert rows["token_mean"]["response_length/mean"] == 12.0
    assert rows["micro_token_mean"]["grad_norm"] == pytest.approx(rows["token_mean"]["grad_norm"], rel=1e-5)
    assert rows["micro_token_mean"]["grad_norm"] > 0


def test_resume_refuses_a_changed_config(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    assert main(base_args(tiny_model_dir, out, 1)) == 0
    assert main(base_args(tiny_model_dir, out, 2, [f"resume={out}", "optim.lr=1e-4"])) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_inconsistent_batch_sizes_fail_at_start_with_the_fix(tmp_path, tiny_model_dir, capsys):
    assert main(base_args(tiny_model_dir, tmp_path / "r", 1, ["batch.mini_batches=3"])) == 2
    assert "divisible by mini_batches" in capsys.readouterr().err
    with pytest.raises(AhaError):
        from aha.config import load_config
        from aha.train.config import TrainConfig

        load_config(TrainConfig, None, ["batch.samples_per_prompt=1"])


@pytest.mark.parametrize(
    "extra",
    [
        ["algo.dynamic_sampling=true", "algo.max_resample_rounds=2"],  # DAPO dynamic sampling
        ["algo.kl_coef=0.1", "algo.kl_in_reward=true", "algo.kl_estimator=k1"],  # KL as a reward penalty
        ["algo.mask_truncated=true", "algo.advantage=dr_grpo", "algo.loss_agg=seq_mean_token_sum_norm"],  # Dr. GRPO
        ["algo.advantage=reinforce_pp", "algo.advantage_options={group_baseline: true}", "algo.entropy_coef=0.01"],
        ["lora.enabled=true", "lora.r=4", "algo.kl_coef=0.05", "optim.schedule=cosine", "optim.warmup_steps=1"],
        ["rollout.backend=hf", "batch.mini_batches=2", "algo.clip_high=0.28"],  # two optimizer steps per step
    ],
)
def test_variants_run_and_log(tmp_path, tiny_model_dir, extra):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    assert main(base_args(tiny_model_dir, out, 2, extra)) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert len(rows) == 2 and all(r["grad_norm"] >= 0 for r in rows)
    if "lora.enabled=true" in extra:
        assert (out / "model" / "adapter_config.json").is_file()
        assert rows[0]["kl"] >= 0
    if "algo.kl_in_reward=true" in extra:
        assert "kl_in_reward" in rows[0]


def test_micro_batch_order_is_total():
    # the reference pass and the update sort the same rollouts arriving in different orders: ties in
    # completion and prompt length are broken by group, then sample, so both form the same micro-batches
    import random

    from aha.rollout.base import Completion
    from aha.tasks.base import Example, Verdict
    from aha.train.grpo import Rollout, by_length

    ex = Example(id="e", prompt=[{"role": "user", "content": "q"}], answer="a")
    rollouts = [Rollout(ex, group, [1] * plen, Completion(group, sample, [5] * clen, "", "eos"), Verdict())
                for group, sample, plen, clen in [(0, 0, 3, 2), (0, 1, 3, 2), (1, 0, 3, 2), (1, 1, 2, 2),
                                                  (2, 0, 4, 1), (2, 1, 4, 2)]]
    want = [(2, 0), (1, 1), (0, 0), (0, 1), (1, 0), (2, 1)]  # (1, 1) first: shorter prompt
    for seed in range(5):
        shuffled = list(rollouts)
        random.Random(seed).shuffle(shuffled)
        assert [(r.group, r.completion.sample_index) for r in by_length(shuffled)] == want


def test_resume_accepts_a_config_written_before_a_key_existed(tmp_path, tiny_model_dir):
    # a run's config.yaml from before algo.policy_loss / algo.kl_clamp existed resumes: the missing
    # keys ran with what are now their defaults
    import yaml

    out = tmp_path / "run"
    assert main(base_args(tiny_model_dir, out, 2, ["max_seconds=0.001"])) == 0  # stops after step 1
    saved = yaml.safe_load((out / "config.yaml").read_text())
    for key in ("policy_loss", "kl_clamp", "clip_ratio_c"):
        del saved["algo"][key]
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(base_args(tiny_model_dir, out, 2, [f"resume={out}"])) == 0
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]


def test_validation_on_the_training_examples_is_refused(tmp_path, tiny_model_dir, capsys):
    # the published-setup recipes validated on their training file (a single data file serves every
    # split): a held-out split is required when validation is on
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(6)))
    args = ["train", f"model.path={tiny_model_dir}", "task.name=gsm8k", f"task.options={{data: [{data}]}}",
            "steps=1", "val_every=1", "val_size=4", f"run.out_dir={tmp_path / 'run'}", "run.progress=false"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds training examples only" in err and "test_data" in err
