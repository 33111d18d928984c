"""Training precision: fp32 master weights for models stored in bf16 or fp16.

AdamW's update is lr x (a number near 1) per step: at Logic-RL's lr of 4e-7 it moves a weight of size
0.02 by about 2e-5 of itself, far below bf16's resolution (2^-8, 0.4%), so stepping bf16 weights in
place rounds most updates away (`aha train model.dtype=bfloat16 optim.lr=4e-7 steps=3` changed 0.6% of
the weights where float32 changed all of them).

`MasterWeightAdamW` keeps an fp32 copy ("master weight") of every trainable parameter stored in a
lower precision. The forward and backward still run on the model's own bf16 weights (and produce
bf16 gradients, clipped on the model as before); at each step the gradients are cast to fp32, AdamW
updates the fp32 copies (its moments are fp32 too), and the model's weights become the copies
rounded to nearest. An update below bf16's resolution therefore stays in the master copy and adds up
over steps until it moves the bf16 weight. Cost: 4 bytes per low-precision parameter (the copy)
plus a transient fp32 gradient during the step. Parameters already in float32 (a float32 model, the
CPU default, and peft's LoRA adapters, which peft keeps in float32) are stepped directly, exactly as
by a plain AdamW. The copies are part of the optimizer's state_dict, so a resumed run continues from
the exact fp32 values, not from the rounded weights in the checkpoint's model folder.

The rest of the trainer needs nothing special: the model, its frozen reference copy and the weights
the rollout engine samples from all stay in the model's dtype, and the saved model has the dtype the
user asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

_LOW = (torch.bfloat16, torch.float16)


class MasterWeightAdamW(torch.optim.AdamW):
    """AdamW over fp32 master copies of the low-precision parameters among `params`.

    params: the trainable parameters (one group). Those in bfloat16/float16 get an fp32 master copy
    that AdamW steps; float32 ones are stepped in place. Other AdamW keywords pass through.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], **kwargs: Any):
        params = list(params)
        self.pairs: list[tuple[torch.nn.Parameter, torch.nn.Parameter]] = []  # (model param, master copy)
        stepped = []
        for p in params:
            if p.dtype in _LOW:
                master = torch.nn.Parameter(p.detach().to(torch.float32).clone())
                self.pairs.append((p, master))
                stepped.append(master)
            else:
                stepped.append(p)
        super().__init__(stepped, **kwargs)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if closure is not None:
            raise ValueError("MasterWeightAdamW does not take a closure")
        for p, master in self.pairs:
            master.grad = None if p.grad is None else p.grad.to(torch.float32)
        loss = super().step()
        for p, master in self.pairs:
            p.copy_(master)  # round to nearest into the model's dtype
            master.grad = None  # the fp32 gradient lives only during the step
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        for p, _ in self.pairs:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["master_weights"] = [master.detach().clone() for _, master in self.pairs]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        masters = state_dict.pop("master_weights", None)
        super().load_state_dict(state_dict)
        with torch.no_grad():
            if masters is None or len(masters) != len(self.pairs):
                # a checkpoint written without master copies: start them from the loaded model weights
                for p, master in self.pairs:
                    master.copy_(p)
                return
            for (p, master), saved in zip(self.pairs, masters):
                master.copy_(saved)
                p.copy_(master)


def low_precision_params(params: Iterable[torch.nn.Parameter]) -> int:
    """How many of `params` are stored in bfloat16 or float16."""
    return sum(1 for p in params if p.dtype in _LOW)

