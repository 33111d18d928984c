"""bf16 training keeps every update: fp32 master weights (aha.train.precision) and the trainers using them."""

from __future__ import annotations

import json

import pytest
import torch

from aha.cli import main
from aha.models import load_model
from aha.train.common import make_optimizer
from aha.train.precision import MasterWeightAdamW

from .test_grpo import base_args


def _adam(params, master=True, lr=1e-3):
    return make_optimizer(params, lr, 0.0, (0.9, 0.999), "constant", 0, 100, master_weights=master)[0]


class _Holder(torch.nn.Module):
    def __init__(self, *tensors):
        super().__init__()
        self.ws = torch.nn.ParameterList([torch.nn.Parameter(t) for t in tensors])


def test_updates_below_bf16_resolution_accumulate_in_the_master_copy():
    # bf16 has 8 significant bits: around 1.0 its spacing is 2^-8 below and 2^-7 above, so an Adam
    # step of lr = 1e-3 (an update of ~lr per step) is rounded away when applied to the bf16 weight
    init = torch.full((64,), 1.0)
    plain, master = _Holder(init.to(torch.bfloat16)), _Holder(init.to(torch.bfloat16))
    reference = _Holder(init.clone())  # what fp32 weights do
    opts = [_adam(plain, master=False), _adam(master), _adam(reference)]
    assert type(opts[0]) is torch.optim.AdamW and type(opts[2]) is torch.optim.AdamW
    assert isinstance(opts[1], MasterWeightAdamW)
    for _ in range(10):
        for holder, opt in zip((plain, master, reference), opts):
            opt.zero_grad(set_to_none=True)
            holder.ws[0].grad = torch.ones_like(holder.ws[0])  # a steady push down
            opt.step()
        w_master = opts[1].pairs[0][1]
        # the master copy follows fp32 AdamW bit for bit; the model's weight is it rounded to bf16
        assert torch.equal(w_master, reference.ws[0].detach())
        assert torch.equal(master.ws[0].detach(), w_master.to(torch.bfloat16))
        assert w_master.grad is None  # the fp32 gradient lives only during the step
    assert torch.equal(plain.ws[0].detach(), init.to(torch.bfloat16))  # in place: every update lost
    assert float(master.ws[0].detach()[0]) == pytest.approx(0.99, abs=2 ** -8)  # kept: 10 steps of 1e-3
    assert float(master.ws[0].detach()[0]) < 1.0


def test_master_copies_resume_exactly_and_fp32_params_are_stepped_directly():
    def make():
        torch.manual_seed(0)
        return _Holder(torch.randn(32).to(torch.bfloat16), torch.randn(8))  # a bf16 and an fp32 tensor

    def push(holder, opt, steps, start=0):
        for k in range(start, start + steps):
            opt.zero_grad(set_to_none=True)
            g = torch.Generator().manual_seed(k)
            for w in holder.ws:
                w.grad = torch.randn(w.shape, generator=g).to(w.dtype)
            opt.step()

    straight = make()
    opt = _adam(straight, lr=1e-4)
    assert len(opt.pairs) == 1  # only the bf16 tensor has a master copy
    push(straight, opt, 6)

    first = make()
    opt1 = _adam(first, lr=1e-4)
    push(first, opt1, 3)
    saved_state = opt1.state_dict()
    saved_weights = [w.detach().clone() for w in first.ws]  # what the checkpoint's model folder holds
    assert len(saved_state["master_weights"]) == 1
    resumed = make()
    opt2 = _adam(resumed, lr=1e-4)
    with torch.no_grad():
        for w, s in zip(resumed.ws, saved_weights):
            w.copy_(s)
    opt2.load_state_dict(saved_state)
    push(resumed, opt2, 3, start=3)
    for a, b in zip(straight.ws, resumed.ws):
        assert torch.equal(a.detach(), b.detach())
    assert torch.equal(opt.pairs[0][1], opt2.pairs[0][1])
    # a state without master copies (written by a plain AdamW) starts them from the model's weights
    plain_state = {k: v for k, v in saved_state.items() if k != "master_weights"}
    opt3 = _adam(make(), lr=1e-4)
    opt3.load_state_dict(plain_state)
    assert torch.equal(opt3.pairs[0][1], opt3.pairs[0][0].detach().float())


def _changed_share(before: dict, after: dict) -> float:
    changed = sum(int((before[k].float() != after[k].float()).sum()) for k in before)
    return changed / sum(before[k].numel() for k in before)


def _stored_dtypes(run):
    from safetensors import safe_open

    with safe_open(str(run / "model" / "model.safetensors"), "pt") as f:
        return {f.get_tensor(k).dtype for k in f.keys()}


def _masters_by_name(run, model_dir):
    """The fp32 master copies in the final checkpoint, by parameter name."""
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    model = load_model(model_dir, device="cpu", dtype="bfloat16")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(state["master_weights"]) == len(names)
    return dict(zip(names, state["master_weights"]))


def test_bf16_grpo_at_a_tiny_lr_keeps_every_update(tmp_path, tiny_model_dir):
    """Logic-RL's lr of 4e-7, three steps: in place, bf16 weights keep almost none of the updates; with
    master weights (the default) the fp32 copies move nearly every weight, as float32 training does,
    the saved model stays bf16 and holds the copies rounded."""
    torch.set_num_threads(1)
    extra = ["optim.lr=4e-7", "optim.max_grad_norm=0"]
    fp32_run, bf16_run, lossy_run = tmp_path / "fp32", tmp_path / "bf16", tmp_path / "lossy"
    assert main(base_args(tiny_model_dir, fp32_run, 3, extra + ["model.dtype=float32"])) == 0
    assert main(base_args(tiny_model_dir, bf16_run, 3, extra + ["model.dtype=bfloat16"])) == 0
    assert main(base_args(tiny_model_dir, lossy_run, 3, extra + ["model.dtype=bfloat16",
                                                                "optim.master_weights=false"])) == 0
    init32 = load_model(tiny_model_dir, device="cpu", dtype="float32").state_dict()
    init16 = load_model(tiny_model_dir, device="cpu", dtype="bfloat16").state_dict()
    assert _changed_share(init32, load_model(fp32_run / "model", device="cpu", dtype="float32").state_dict()) > 0.99
    lossy = load_model(lossy_run / "model", device="cpu", dtype="bfloat16").state_dict()
    assert _changed_share(init16, lossy) < 0.2  # the updates rounded away
    masters = _masters_by_name(bf16_run, tiny_model_dir)
    start = {k: init16[k].float() for k in masters}
    assert _changed_share(start, masters) > 0.99  # every update kept
    assert json.loads((bf16_run / "model" / "config.json").read_text())["dtype"] == "bfloat16"  # stored as asked
    assert _stored_dtypes(bf16_run) == {torch.bfloat16} and _stored_dtypes(fp32_run) == {torch.float32}
    weights = load_model(bf16_run / "model", device="cpu", dtype="bfloat16").state_dict()
    for k, m in masters.items():
        assert torch.equal(weights[k], m.to(torch.bfloat16)), k


def test_bf16_sft_saves_bf16_and_trains_through_master_copies(tmp_path, tiny_model_dir):
    from .test_sft import _write_pairs

    torch.set_num_threads(1)
    _write_pairs(tmp_path / "train.jsonl", 40)
    out = tmp_path / "run"
    assert main(["sft", f"model.path={tiny_model_dir}", f"data.files=[{tmp_path / 'train.jsonl'}]", "steps=3",
                 "optim.lr=1e-6", "optim.warmup_steps=0", "val_every=0", "batch_tokens=512",
                 "model.dtype=bfloat16", f"run.out_dir={out}", "run.progress=false"]) == 0
    assert json.loads((out / "model" / "config.json").read_text())["dtype"] == "bfloat16"
    assert _stored_dtypes(out) == {torch.bfloat16}
    masters = _masters_by_name(out, tiny_model_dir)
    init16 = load_model(tiny_model_dir, device="cpu", dtype="bfloat16").state_dict()
    assert _changed_share({k: init16[k].float() for k in masters}, masters) > 0.95


def test_a_resumed_bf16_run_continues_from_the_exact_master_copies(tmp_path, tiny_model_dir):
    from aha.runs import read_jsonl

    torch.set_num_threads(1)
    extra = ["model.dtype=bfloat16", "optim.lr=1e-4"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(base_args(tiny_model_dir, straight, 3, extra)) == 0
    assert main(base_args(tiny_model_dir, split, 3, extra + ["max_seconds=0.001"])) == 0  # stops after step 1
    assert main(base_args(tiny_model_dir, split, 3, extra + [f"resume={split}", "max_seconds=0"])) == 0

    def strip(rows):
        return [{k: v for k, v in r.items() if not any(t in k for t in ("time", "seconds", "tokens_per_s"))}
                for r in rows]

    assert strip(read_jsonl(split / "metrics.jsonl")) == strip(read_jsonl(straight / "metrics.jsonl"))
    a, b = _masters_by_name(straight, tiny_model_dir), _masters_by_name(split, tiny_model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
