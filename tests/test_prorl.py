"""ProRL hard resets and phases: the trigger rules, the config checks, the exactness of a reset (LoRA
and full weights), phase overrides, checkpoints and resume across resets, the final merged model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import aha.train.resets as resets
from aha.algo.kl import kl_estimate
from aha.algo.resets import periodic_reset_due, plateau_reached, scheduled_reset_due
from aha.cli import main
from aha.config import load_config
from aha.errors import AhaError
from aha.models import load_model
from aha.runs import read_jsonl
from aha.train.config import TrainConfig, phase_at, phase_config
from aha.train.logprobs import completion_logprobs, reference_logprobs

from .test_grpo import base_args

TIMING = ("time", "seconds", "tokens_per_s")  # wall-clock figures differ run to run

# LoRA with a reset every 2 steps and two phases: the first shortens completions, the second
# samples more per prompt with a wider adapter
LORA_PHASES = ["lora.enabled=true", "lora.r=4", "lora.dropout=0.0", "algo.kl_coef=0.1", "reset.every=2",
               "phases=[{after_reset: 1, rollout: {max_new_tokens: 8}}, "
               "{after_reset: 2, batch: {samples_per_prompt: 6}, lora: {r: 8, target_modules: [q_proj, v_proj]}}]"]


def strip(rows):
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


# ----------------------------------------------------------------------------- the rules (aha.algo.resets)


@pytest.mark.parametrize("values, patience, min_delta, mode, fires", [
    ([0.1, 0.2, 0.3, 0.4], 2, 0.0, "max", False),    # improving every time: the last 2 beat 0.2
    ([0.4, 0.4, 0.4], 2, 0.0, "max", True),          # flat: 0.4 does not beat 0.4
    ([0.5, 0.4, 0.3], 2, 0.0, "max", True),          # degrading: best recent 0.4 < 0.5
    ([0.5, 0.4, 0.6], 2, 0.0, "max", False),         # the last one beats 0.5
    ([0.5, 0.4, 0.52], 2, 0.05, "max", True),        # 0.52 beats 0.5 by less than min_delta 0.05
    ([0.5, 0.4, 0.56], 2, 0.05, "max", False),       # 0.56 > 0.5 + 0.05
    ([0.4, 0.4], 2, 0.0, "max", False),              # only patience values: nothing before them to beat
    ([], 1, 0.0, "max", False),                      # no evaluation yet
    ([0.3, 0.3], 1, 0.0, "max", True),               # patience 1: one flat evaluation is enough
    ([1.0, 0.8, 0.6], 2, 0.0, "min", False),         # a loss going down is improving in mode min
    ([0.6, 0.7, 0.9], 2, 0.0, "min", True),          # a loss going up is degrading in mode min
    ([0.2, 0.9, 0.1, 0.1, 0.1], 3, 0.0, "max", True),  # the best (0.9) is before the last 3
])
def test_plateau_rule(values, patience, min_delta, mode, fires):
    assert plateau_reached(values, patience, min_delta, mode) is fires


@pytest.mark.parametrize("step, every, last, due", [
    (2, 2, 0, True),    # two steps since the start
    (1, 2, 0, False),   # one step
    (5, 2, 4, False),   # one step since the reset at 4
    (6, 2, 4, True),    # two since it
    (6, 0, 0, False),   # every = 0 is off
])
def test_periodic_rule(step, every, last, due):
    assert periodic_reset_due(step, every, last) is due


def test_bad_rule_arguments_are_refused():
    with pytest.raises(ValueError, match="patience"):
        plateau_reached([1.0, 2.0], 0)
    with pytest.raises(ValueError, match="mode"):
        plateau_reached([1.0, 2.0], 1, mode="up")


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("overrides, message", [
    (["reset.every=2", "phases=[{after_reset: 2}, {after_reset: 1}]"], "increasing after_reset"),
    (["reset.every=2", "phases=[{after_reset: 1, lora: {r: 8}}]"], "needs lora.enabled"),
    (["phases=[{after_reset: 1}]"], "no reset trigger"),
    (["reset.on_plateau.metric=val/accuracy"], "val_every"),
    (["val_every=2", "reset.on_plateau.metric=accuracy"], "validation metric"),
    (["lora.enabled=true", "reset.every=2", "reset.optimizer=keep"], "needs full fine-tuning"),
    (["reset.every=2", "reset.max_resets=1", "phases=[{after_reset: 2}]"], "never start"),
    (["reset.every=2", "phases=[{after_reset: 1, batch: {samples_per_prompt: 3}}]"], r"phases\[0\].*divisible"),
    (["reset.every=2", "phases=[{after_reset: 1, rollout: {top_p: 1.5}}]"], "top_p must be <= 1"),
    (["reset.every=2", "phases=[{after_reset: 1, rollout: {temprature: 1.0}}]"], "unknown config key"),
])
def test_bad_reset_configs_fail_at_load(overrides, message):
    with pytest.raises(AhaError, match=message):
        load_config(TrainConfig, None, ["batch.prompts_per_step=2", "batch.samples_per_prompt=4",
                                        "batch.mini_batches=2", "batch.micro_batch_size=2", *overrides])


def test_phases_apply_cumulatively_and_leave_the_recipe_alone():
    cfg = load_config(TrainConfig, None, ["lora.enabled=true", "reset.every=2", "rollout.top_p=0.7",
                                          "phases=[{after_reset: 1, rollout: {top_p: 0.9}}, "
                                          "{after_reset: 3, rollout: {temperature: 1.2}, lora: {r: 64}}]"])
    assert [phase_at(cfg, k) for k in range(5)] == [0, 1, 1, 2, 2]
    last = phase_config(cfg, 2)
    assert (last.rollout.top_p, last.rollout.temperature, last.lora.r) == (0.9, 1.2, 64)  # phase 1's top_p kept
    assert (cfg.rollout.top_p, cfg.rollout.temperature, cfg.lora.r) == (0.7, 1.0, 16)


# ----------------------------------------------------------------------------- exactness of a reset


def test_bf16_merge_rounds_each_weight_once():
    # W + (alpha/r) B A summed in fp32 and rounded to bf16 once (peft's merge rounds the delta first)
    from peft.tuners.lora.layer import LoraLayer

    from aha.config import LoraConfig
    from aha.train.common import attach_lora

    from .conftest import make_model

    model = attach_lora(make_model().to(torch.bfloat16),
                        LoraConfig(enabled=True, r=4, alpha=8.0, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)  # a trained adapter: B != 0
    want = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            a, b = module.lora_A["default"].weight.float(), module.lora_B["default"].weight.float()  # (r, in), (out, r)
            exact = module.get_base_layer().weight.float() + (b @ a) * module.scaling["default"]  # (out, in)
            want[name.removeprefix("base_model.model.")] = exact.to(torch.bfloat16)
    plain = resets.merge_adapter_fp32(model)
    assert len(want) == 4 and not hasattr(plain, "peft_config")
    for name, expected in want.items():
        assert torch.equal(plain.get_submodule(name).weight, expected), name


def probe(s):
    """(policy log-probs, reference log-probs) of fixed token sequences, in eval mode, no grad."""
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    completions = [[20, 21, 22, 23, 24], [30, 31, 32]]
    was = s.model.training
    s.model.eval()
    with torch.no_grad():
        lp = completion_logprobs(s.model, prompts, completions, s.pad_id, 1.0)[0]  # (2, 5)
        ref = lp if s.plan.need_ref is False else reference_logprobs(
            s.model, s.reference, prompts, completions, s.pad_id, 1.0)[0]  # (2, 5)
    s.model.train(was)
    return lp, ref


def capture_resets(monkeypatch):
    """Wrap hard_reset to record the session's log-probs and optimizer just before and just after."""
    seen = []
    real = resets.hard_reset

    def wrapped(s, step):
        before, _ = probe(s)
        state_before = {k: {n: v.clone() for n, v in st.items() if torch.is_tensor(v)}
                        for k, st in s.optimizer.state.items()}
        optimizer_before = s.optimizer
        seconds = real(s, step)
        after, ref = probe(s)
        seen.append({"before": before, "after": after, "ref": ref, "opt_before": optimizer_before,
                     "state_before": state_before, "opt_after": s.optimizer,
                     "state_after": len(s.optimizer.state), "s": s,
                     "reference_is_policy": s.reference is not None and all(
                         torch.equal(a, b) for a, b in zip(s.model.state_dict().values(),
                                                           s.reference.state_dict().values()))})
        return seconds

    monkeypatch.setattr(resets, "hard_reset", wrapped)
    return seen


def test_lora_reset_keeps_the_policy_and_makes_it_the_reference(tmp_path, tiny_model_dir, monkeypatch):
    torch.set_num_threads(1)
    seen = capture_resets(monkeypatch)
    assert main(base_args(tiny_model_dir, tmp_path / "run", 5, LORA_PHASES)) == 0
    assert len(seen) == 2
    for r in seen:
        # fp32: merging W + (alpha/r) B A sums in another order than x W + (x A) B (alpha/r), so the
        # policy moves by rounding only; the fresh adapter (B = 0) then adds exactly 0
        assert torch.allclose(r["before"], r["after"], atol=1e-5, rtol=0)
        assert not torch.equal(r["before"], torch.zeros_like(r["before"]))
        # the reference (base with the adapter off) is the policy, bit for bit: the KL is 0
        assert torch.equal(r["after"], r["ref"])
        mask = torch.ones_like(r["after"], dtype=torch.bool)
        assert float(kl_estimate(r["after"], r["ref"], "k3")[mask].abs().max()) == 0.0
        # a fresh optimizer with no state over the new adapter
        assert r["opt_after"] is not r["opt_before"] and r["state_after"] == 0
    s = seen[-1]["s"]
    assert s.model.peft_config["default"].r == 8  # the second phase's adapter
    assert set(s.model.peft_config["default"].target_modules) == {"q_proj", "v_proj"}


def test_full_weight_reset_copies_the_policy_into_the_reference(tmp_path, tiny_model_dir, monkeypatch):
    torch.set_num_threads(1)
    seen = capture_resets(monkeypatch)
    assert main(base_args(tiny_model_dir, tmp_path / "run", 3, ["algo.kl_coef=0.1", "reset.every=2"])) == 0
    (r,) = seen
    assert torch.equal(r["before"], r["after"])  # the policy's weights are not touched
    assert torch.equal(r["after"], r["ref"])  # the reference copy now holds them: the KL is 0
    assert r["reference_is_policy"]  # every weight copied
    assert r["opt_after"] is not r["opt_before"] and r["state_after"] == 0  # reset.optimizer=reset


def test_keep_leaves_the_optimizer_state_untouched(tmp_path, tiny_model_dir, monkeypatch):
    # the state right after a `keep` reset is the state right before it, tensor for tensor
    torch.set_num_threads(1)
    snapshots = []
    real = resets.hard_reset

    def wrapped(s, step):
        def snap():
            return {id(k): {n: v.clone() for n, v in st.items() if torch.is_tensor(v)}
                    for k, st in s.optimizer.state.items()}
        before = snap()
        seconds = real(s, step)
        snapshots.append((before, snap()))
        return seconds

    monkeypatch.setattr(resets, "hard_reset", wrapped)
    assert main(base_args(tiny_model_dir, tmp_path / "run", 3, ["reset.every=2", "reset.optimizer=keep"])) == 0
    ((before, after),) = snapshots
    assert before.keys() == after.keys() and before
    assert all(torch.equal(before[k][n], after[k][n]) for k in before for n in before[k])


# ----------------------------------------------------------------------------- end to end


def test_tiny_prorl_run_applies_each_phase_and_logs_the_resets(tmp_path, tiny_model_dir):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    assert main(base_args(tiny_model_dir, out, 5, LORA_PHASES)) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert [(r["reset/count"], r["reset/step"], r["phase"]) for r in rows] == \
        [(0, 0, 0), (0, 0, 0), (1, 2, 1), (1, 2, 1), (2, 4, 2)]
    per_step = {}
    for step in range(1, 6):
        lines = (out / "rollouts" / f"step_{step:05d}.jsonl").read_text().splitlines()
        per_step[step] = [json.loads(line) for line in lines]
    assert [len(per_step[k]) for k in range(1, 6)] == [8, 8, 8, 8, 12]  # 2 prompts x 4, then x 6
    assert max(r["num_tokens"] for k in (1, 2) for r in per_step[k]) == 12
    assert max(r["num_tokens"] for k in (3, 4, 5) for r in per_step[k]) <= 8  # phase 1's max_new_tokens
    saved = load_config(TrainConfig, out / "config.yaml")  # the recipe, not a phase's copy
    assert (saved.rollout.max_new_tokens, saved.batch.samples_per_prompt, saved.lora.r) == (12, 4, 4)
    state = json.loads((out / "checkpoints" / "step_000005" / "state.json").read_text())
    assert [h["step"] for h in state["reset"]["history"]] == [2, 4]
    assert (out / "checkpoints" / "step_000005" / "base" / "model.safetensors").is_file()
    assert (out / "model" / "model.safetensors").is_file() and not (out / "model" / "adapter_config.json").exists()


def test_final_model_is_the_whole_merged_policy(tmp_path, tiny_model_dir, monkeypatch):
    torch.set_num_threads(1)
    live = {}
    real = resets.model_to_save

    def wrapped(s):
        s.model.eval()
        with torch.no_grad():
            live["logits"] = s.model(input_ids=torch.tensor([[5, 6, 7, 8, 9, 10]])).logits  # (1, 6, V)
        return real(s)

    monkeypatch.setattr(resets, "model_to_save", wrapped)
    out = tmp_path / "run"
    assert main(base_args(tiny_model_dir, out, 5, LORA_PHASES)) == 0
    saved = load_model(out / "model", device="cpu", dtype="float32").eval()
    with torch.no_grad():
        got = saved(input_ids=torch.tensor([[5, 6, 7, 8, 9, 10]])).logits  # (1, 6, V)
    base = load_model(tiny_model_dir, device="cpu", dtype="float32").eval()
    with torch.no_grad():
        untrained = base(input_ids=torch.tensor([[5, 6, 7, 8, 9, 10]])).logits
    assert torch.allclose(got, live["logits"], atol=1e-5, rtol=0)  # fp32 merge rounding only
    assert not torch.allclose(got, untrained, atol=1e-3)  # the merged phases are in it
    # the last checkpoint's adapter names the checkpoint's merged base: exporting it keeps every phase
    ckpt = out / "checkpoints" / "step_000005"
    assert main(["export", str(ckpt), "--out", str(tmp_path / "exported")]) == 0
    exported = load_model(tmp_path / "exported", device="cpu", dtype="float32").eval()
    with torch.no_grad():
        from_ckpt = exported(input_ids=torch.tensor([[5, 6, 7, 8, 9, 10]])).logits  # (1, 6, V)
    assert torch.allclose(from_ckpt, live["logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("extra", [
    LORA_PHASES,
    ["algo.kl_coef=0.1", "reset.every=2", "optim.schedule=cosine", "reset.scheduler=restart"],
    ["algo.kl_coef=0.1", "reset.every=2", "optim.schedule=cosine", "reset.optimizer=keep",
     "reset.scheduler=restart", "phases=[{after_reset: 2, rollout: {temperature: 0.7}}]"],
    ["lora.enabled=true", "lora.r=4", "val_every=1", "val_size=2", "reset.on_plateau.metric=val/accuracy",
     "reset.on_plateau.patience=1", "reset.max_resets=2"],
], ids=["lora_phases", "full_weights_cosine", "full_weights_keep_optimizer", "lora_plateau"])
def test_resume_across_resets_equals_a_straight_run(tmp_path, tiny_model_dir, extra):
    torch.set_num_threads(1)
    straight = tmp_path / "straight"
    assert main(base_args(tiny_model_dir, straight, 5, extra)) == 0
    split = tmp_path / "split"
    assert main(base_args(tiny_model_dir, split, 5, [*extra, "max_seconds=0.001"])) == 0  # stops after step 1
    for _ in range(3):  # after steps 2 (the first reset), 3 and 4 (the second)
        assert main(base_args(tiny_model_dir, split, 5, [*extra, "max_seconds=0.001", f"resume={split}"])) == 0
    assert [r["step"] for r in read_jsonl(split / "metrics.jsonl")] == [1, 2, 3, 4]
    assert main(base_args(tiny_model_dir, split, 5, [*extra, f"resume={split}", "max_seconds=0"])) == 0
    assert strip(read_jsonl(split / "metrics.jsonl")) == strip(read_jsonl(straight / "metrics.jsonl"))
    if "reset.scheduler=restart" in extra:
        lrs = [r["lr"] for r in read_jsonl(straight / "metrics.jsonl")]
        assert lrs[2] > lrs[1]  # the cosine started again after the reset at step 2
    a = load_model(straight / "model", device="cpu").state_dict()
    b = load_model(split / "model", device="cpu").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_scheduler_continue_keeps_the_learning_rate_sequence(tmp_path, tiny_model_dir):
    # a fresh optimizer, but the cosine goes on where it was: the same lr at every step as without resets
    torch.set_num_threads(1)
    cosine = ["optim.schedule=cosine", "optim.warmup_steps=1"]
    assert main(base_args(tiny_model_dir, tmp_path / "plain", 5, cosine)) == 0
    assert main(base_args(tiny_model_dir, tmp_path / "reset", 5, [*cosine, "reset.every=2",
                                                                  "reset.scheduler=continue"])) == 0
    plain, reset = (read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("plain", "reset"))
    assert [r["lr"] for r in reset] == [r["lr"] for r in plain]
    assert reset[-1]["reset/count"] == 2


def test_plateau_trigger_resets_when_validation_stagnates(tmp_path, tiny_model_dir):
    # the random tiny model never answers right: val/accuracy stays 0, a plateau at every evaluation
    torch.set_num_threads(1)
    out = tmp_path / "run"
    assert main(base_args(tiny_model_dir, out, 5, [
        "val_every=1", "val_size=2", "val_temperature=1.0", "val_top_p=0.7",
        "reset.on_plateau.metric=val/accuracy", "reset.on_plateau.patience=1", "reset.max_resets=2"])) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert all(r["val/accuracy"] == 0.0 for r in rows)
    assert [r["reset/count"] for r in rows] == [0, 0, 1, 2, 2]  # after steps 2 and 3, then max_resets
    state = json.loads((out / "checkpoints" / "step_000005" / "state.json").read_text())
    assert [(h["step"], h["trigger"]) for h in state["reset"]["history"]] == [(2, "plateau"), (3, "plateau")]


def test_an_unknown_plateau_metric_names_the_ones_there_are(tmp_path, tiny_model_dir, capsys):
    torch.set_num_threads(1)
    assert main(base_args(tiny_model_dir, tmp_path / "run", 2, [
        "val_every=1", "val_size=2", "reset.on_plateau.metric=val/acc"])) == 2
    err = capsys.readouterr().err
    assert "reset.on_plateau.metric='val/acc'" in err and "val/accuracy" in err


def test_the_seed_recipe_runs_as_a_tiny_cpu_twin(tmp_path, tiny_model_dir):
    # recipes/prorl_qwen2_0.5b_gsm8k.yaml as shipped, on the tiny model, eight GSM8K-style rows and
    # short completions; validation stagnates (the random model never boxes the answer), so the
    # plateau trigger resets after steps 2 and 3 and phases 1 and 2 (top_p 0.9, then 1.0) start
    torch.set_num_threads(1)
    data, held_out = tmp_path / "gsm8k.jsonl", tmp_path / "gsm8k_test.jsonl"
    for path, numbers in ((data, range(8)), (held_out, range(8, 12))):
        path.write_text("".join(json.dumps({"question": f"Tom has {i} apples and buys 2. How many now?",
                                            "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}) + "\n" for i in numbers))
    out = tmp_path / "run"
    recipe = Path(__file__).parent.parent / "recipes" / "prorl_qwen2_0.5b_gsm8k.yaml"
    assert main(["train", str(recipe), f"model.path={tiny_model_dir}",
                 f"task.options.data={{train: [{data}], test: [{held_out}]}}", "steps=4", "rollout.max_new_tokens=8",
                 "batch.samples_per_prompt=4", "batch.micro_batch_size=4", "val_every=1", "val_size=2",
                 "reset.on_plateau.patience=1", "checkpoint_every=0", f"run.out_dir={out}",
                 "run.progress=false"]) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert [(r["reset/count"], r["phase"]) for r in rows] == [(0, 0), (0, 0), (1, 1), (2, 2)]
    assert all(r["val/accuracy"] == 0.0 for r in rows)


@pytest.mark.parametrize("step, at_steps, due", [
    (3, [3, 7], True),   # a scheduled phase boundary
    (4, [3, 7], False),  # between boundaries
    (3, [], False),      # nothing scheduled
])
def test_scheduled_reset_rule(step, at_steps, due):
    assert scheduled_reset_due(step, at_steps) is due


def test_phases_can_end_at_given_steps(tmp_path, tiny_model_dir):
    # seed 003's phases end at steps (its first reset came after step 2600): reset.at_steps schedules
    # the resets, and each one starts the next phase
    torch.set_num_threads(1)
    out = tmp_path / "run"
    extra = ["lora.enabled=true", "lora.r=4", "lora.dropout=0.0", "algo.kl_coef=0.1", "reset.at_steps=[1, 3]",
             "phases=[{after_reset: 1, rollout: {max_new_tokens: 8}}, {after_reset: 2, batch: {samples_per_prompt: 6}}]"]
    assert main(base_args(tiny_model_dir, out, 4, extra)) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert [(r["reset/count"], r["reset/step"], r["phase"]) for r in rows] == [(0, 0, 0), (1, 1, 1), (1, 1, 1),
                                                                                (2, 3, 2)]


@pytest.mark.parametrize("at_steps", ["[3, 2]", "[0]", "[4]"])  # not increasing; before step 1; not before the end
def test_bad_scheduled_resets_fail_at_load(at_steps):
    with pytest.raises(AhaError, match="reset.at_steps must be increasing"):
        load_config(TrainConfig, None, ["steps=4", f"reset.at_steps={at_steps}"])
