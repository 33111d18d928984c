"""Overthinking detectors: per chunk of a response's reasoning, the probability that the answer has
been reached by the end of that chunk; `detect` adds REA-RL's strong/normal/weak cuts
(`aha.algo.overthinking.cut_points`).

Two detectors share the interface `probabilities(example, chunks) -> list[float]`:

- `OracleDetector` (`labeler: oracle` or `oracle:<task>`): P_i = 1 when the task's own verifier
  accepts the answer the reasoning has stated by the end of chunk i, else 0. The stated answer is
  read from the prefix text: for Knights and Knaves the last "NAME is a knight|knave" said of each
  person (every person must have one); for math and arithmetic tasks the last `\\boxed{...}`, or
  else the last number. The answer is then wrapped in the task's answer form and graded with
  `safe_verify`, so "accepted" means exactly what the reward's verifier means. No model, CPU only.
- `ReflectionModelDetector` (`labeler: PATH`): any local causal-LM folder, prompted with REA-RL's
  labelling prompt (`labeling_prompt`: the question, then the numbered chunks, asking for
  "[i]. Think" or "[i]. Result" per chunk) and the reply prefilled with "[1].". At each label
  position P(Result) comes from the top-5 log-probs (`aha.algo.overthinking.result_probability`).
  A labeller whose tokenizer spells " Think" or " Result" in several tokens (the byte-level BPE of
  `aha init-model` does) has no single token that names a label, so the top-5 would never see one:
  there both label texts are scored whole at the position, teacher-forced from its cache, and
  P(Result) is their normalised probability (`label_sequence_probability`).
  The reply is decoded greedily under the fixed format: the model chooses each label (the larger of
  the two label masses), and the numbering between labels is written for it. REA-RL decodes freely
  and reads the label positions afterwards; under a model that keeps the format (what the SFT data
  teaches) both read the same positions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aha.algo.overthinking import CutPoints, cut_points, label_sequence_probability, result_probability
from aha.errors import AhaError
from aha.overthinking.chunking import Chunk
from aha.tasks.base import Example, safe_verify

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


@dataclass
class Detection:
    """A detector's reading of one response: P(Result) per chunk and the three cuts (None: no chunks)."""

    probs: list[float]
    cuts: CutPoints | None

    def cut(self, strength: str) -> int | None:
        return None if self.cuts is None else self.cuts.at(strength)


def detect(detector: Any, example: Example, chunks: Sequence[Chunk]) -> Detection:
    """Run `detector` on the chunks of one response and choose its cuts."""
    if not chunks:
        return Detection([], None)
    probs = [float(p) for p in detector.probabilities(example, list(chunks))]
    if len(probs) != len(chunks):
        raise AhaError(f"detector {type(detector).__name__} gave {len(probs)} probabilities for {len(chunks)} chunks")
    return Detection(probs, cut_points(probs))


# ----------------------------------------------------------------------------- oracle


def question_text(example: Example) -> str:
    """The last user message of an example's prompt (the question a labeller sees)."""
    users = [m.get("content", "") for m in example.prompt if m.get("role") == "user"]
    return users[-1] if users else ""


def stated_roles(text: str, names: Sequence[str]) -> dict[str, str]:
    """The last role ("knight"/"knave") `text` states for each of `names` ("Ann is a knight",
    "so Bob is a knave"), case-insensitive, a name not inside a longer word."""
    out: dict[str, str] = {}
    for name in names:
        pattern = re.compile(rf"(?<![\w'\-]){re.escape(name)}\s+is\s+(?:a\s+)?(knight|knave)(?![\w'\-])",
                             re.IGNORECASE)
        matches = pattern.findall(text)  # the role words, in order
        if matches:
            out[name] = matches[-1].lower()
    return out


def stated_number(text: str) -> str | None:
    """The answer a math prefix has stated: its last `\\boxed{}`, else its last number."""
    from aha.tasks.math.extract import last_boxed

    boxed = last_boxed(text)
    if boxed:
        return boxed
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


class OracleDetector:
    """P_i = 1 where the task's verifier accepts the answer stated by the end of chunk i (see the
    module docstring); works for Knights and Knaves and for tasks graded from a boxed answer."""

    def __init__(self, task: Any):
        from aha.tasks.knights_knaves.task import KnightsKnavesTask

        self.task = task
        self.kind = "kk" if isinstance(task, KnightsKnavesTask) else "math" if hasattr(task, "extract") else None
        if self.kind is None:
            raise AhaError(f"the oracle detector reads Knights-and-Knaves and math answers; task "
                           f"{getattr(task, 'name', type(task).__name__)!r} is neither: give a reflection model "
                           "folder as rollout.revision.labeler instead")

    def candidate(self, example: Example, prefix: str) -> str | None:
        """The completion that answers with what `prefix` has stated (None: nothing stated yet)."""
        if self.kind == "kk":
            names = list(example.meta.get("names") or [])
            roles = stated_roles(prefix, names)
            if not names or len(roles) < len(names):
                return None
            lines = "\n".join(f"({i + 1}) {n} is a {roles[n]}" for i, n in enumerate(names))
            opening = "" if getattr(self.task, "think_preopened", False) else "<think>"
            return f"{opening}reasoning</think>\n<answer>{lines}</answer>"
        answer = stated_number(prefix)
        return None if answer is None else f"\\boxed{{{answer}}}"

    def accepts(self, example: Example, prefix: str) -> bool:
        text = self.candidate(example, prefix)
        return text is not None and safe_verify(self.task, text, example).correct

    def probabilities(self, example: Example, chunks: list[Chunk]) -> list[float]:
        probs, prefix = [], ""
        for chunk in chunks:
            prefix = f"{prefix}\n\n{chunk.text}" if prefix else chunk.text
            probs.append(1.0 if self.accepts(example, prefix) else 0.0)
        return probs


# ----------------------------------------------------------------------------- reflection model

LABEL_INSTRUCTION = (
    "You are given a math or logic Question and a model-generated Response, divided into {n} numbered parts. "
    "Label every part as Think (reasoning on the way to the answer) or Result (the part where the response "
    "states its answer, which may happen before the response ends). Reply with one line per part, in order: "
    "'[1]. Think' or '[1]. Result', then '[2]. ...', and so on."
)


def labeling_prompt(question: str, chunks: Sequence[str]) -> list[dict[str, str]]:
    """REA-RL's labelling prompt (our wording) as chat messages: the question, the numbered parts,
    the instruction."""
    parts = "\n\n".join(f"**[{i + 1}].** {c}" for i, c in enumerate(chunks))
    text = (f"**Question:** {question}\n\n**Response:** {parts}\n\n"
            + LABEL_INSTRUCTION.format(n=len(chunks)))
    return [{"role": "user", "content": text}]


def labeling_target(n: int, results: Sequence[int]) -> str:
    """The labeller's reply for n parts with the parts `results` (0-based) labelled Result."""
    marked = set(int(i) for i in results)
    return "\n\n".join(f"[{i + 1}]. {'Result' if i in marked else 'Think'}" for i in range(n))


REPLY_PREFILL = "[1]."


class ReflectionModelDetector:
    """P(Result) per chunk from a local causal LM (see the module docstring).

    path: a model folder (transformers format; an `aha sft` / `aha export` output works).
    top_k: the log-probs read at each label position (5, as REA-RL serves it).
    device: where the model runs ("cpu", "cuda"); default: CUDA when available.
    """

    def __init__(self, path: str | Path, top_k: int = 5, device: str | None = None):
        from aha.models import load_model, load_tokenizer

        if not Path(path).is_dir():
            raise AhaError(f"reflection model folder {path} does not exist; give a model folder or oracle:<task>")
        self.tokenizer = load_tokenizer(path)
        self.model = load_model(path, device=device or "auto").eval()
        self.top_k = int(top_k)
        # the label texts as the reply spells them; scored whole unless each is one token
        self.label_ids = {name: self.tokenizer(f" {name}", add_special_tokens=False)["input_ids"]
                          for name in ("Result", "Think")}
        self.whole_labels = any(len(ids) > 1 for ids in self.label_ids.values())

    def probabilities(self, example: Example, chunks: list[Chunk]) -> list[float]:
        return self.label(question_text(example), [c.text for c in chunks])

    def label(self, question: str, chunks: Sequence[str]) -> list[float]:
        """P(Result) for each of the `chunks` of a response to `question`."""
        import torch

        from aha.models import cache_keyword, output_cache
        from aha.prompts import render_prompt

        tok = self.tokenizer
        ids = render_prompt(tok, labeling_prompt(question, chunks)) + tok(REPLY_PREFILL, add_special_tokens=False)["input_ids"]
        device = next(self.model.parameters()).device
        probs: list[float] = []
        past, pending = None, ids
        with torch.no_grad():
            for i in range(len(chunks)):
                kwargs = {cache_keyword(self.model): past} if past is not None else {}
                out = self.model(input_ids=torch.tensor([pending], device=device), use_cache=True, **kwargs)
                past = output_cache(out)
                logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # (V,)
                if self.whole_labels:
                    p = label_sequence_probability(self._label_logprob("Result", logp, past),
                                                   self._label_logprob("Think", logp, past))
                else:
                    top = torch.topk(logp, min(self.top_k, logp.shape[0]))
                    pairs = [(tok.decode([int(t)]), float(v)) for v, t in zip(top.values, top.indices)]
                    p = result_probability(pairs)
                    p = 0.0 if p is None else p
                probs.append(p)
                label = "Result" if p >= 0.5 else "Think"
                follow = f" {label}" + (f"\n\n[{i + 2}]." if i + 1 < len(chunks) else "")
                pending = tok(follow, add_special_tokens=False)["input_ids"]
        return probs

    def _label_logprob(self, name: str, first: Any, past: Any) -> float:
        """log P(label text `name` | the reply so far): `first` (V,) is the next-token distribution at the
        label position and `past` its cache, which is cropped back afterwards."""
        import torch

        from aha.models import cache_keyword

        ids = self.label_ids[name]
        total = float(first[ids[0]])
        if len(ids) > 1:
            device = next(self.model.parameters()).device
            out = self.model(input_ids=torch.tensor([ids[:-1]], device=device), use_cache=True,
                             **{cache_keyword(self.model): past})
            logp = torch.log_softmax(out.logits[0].float(), dim=-1)  # (len(ids) - 1, V)
            total += float(sum(logp[k, ids[k + 1]] for k in range(len(ids) - 1)))
            past.crop(-(len(ids) - 1))  # a negative count drops that many positions, in old and new transformers
        return total


def make_detector(labeler: str, task: Any, task_name: str = "", device: str | None = None) -> Any:
    """The detector a `labeler` setting names: "oracle" (the run's task), "oracle:<task>" or a
    model folder."""
    if labeler == "oracle" or labeler.startswith("oracle:"):
        name = labeler.partition(":")[2]
        if name and task_name and name != task_name:
            from aha.tasks.base import get_task

            task = get_task(name)
        return OracleDetector(task)
    return ReflectionModelDetector(labeler, device=device)
