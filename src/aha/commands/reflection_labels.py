"""`aha data reflection-labels`: REA-RL's training data for the reflection model (seed 004, 2.2).

1. sample the policy (--model) on a task's problems (--n samples each);
2. chunk every response's reasoning with the policy's tokenizer (REA-RL's chunking);
3. label the chunks with a teacher (--teacher): `oracle` (the task's verifier on the answer stated
   so far, exact for Knights and Knaves and math) or a local model folder prompted with the
   Think/Result labelling prompt (P(Result) >= 0.5 marks a Result chunk);
4. candidates: every Result chunk, and always the last chunk;
5. verify each candidate prefix (chunks up to it): with the task's verifier on the answer it states
   (--verify oracle, default) or by asking the teacher model "has the response given the correct
   answer up to this point?" and accepting "Answer: Yes" (--verify teacher, REA-RL's yes/no check);
6. write, for responses with an accepted chunk:
   reflection_sft.jsonl  {prompt: the labelling prompt, response: "[1]. Think\\n\\n[2]. Result ..."}
                         per window of consecutive chunks of <= --window-tokens tokens (1024, as
                         the released teacher sees them; a model teacher also labels window by
                         window), with Result at every accepted chunk: `aha sft` trains the labeller on it
                         (lora.enabled=true), `aha export` merges it, and rollout.revision.labeler
                         takes the folder;
   truncated_sft.jsonl   the paper's SFT baseline: the problem's prompt and the response truncated
                         after the first accepted chunk + the closing template + the policy's own
                         answer (<= --answer-tokens), kept when that answer is correct;
   labels.jsonl          every response: chunks, P(Result) per chunk, candidates, accepted;
   summary.json          counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from aha.errors import AhaError

HELP = "REA-RL: sample a policy, chunk and label its responses, write the reflection model's SFT data"

VERIFY_PROMPT = (
    "**Question:** {question}\n\n**Response:** {response}\n\n**Gold Answer:** {answer}\n\n"
    "Evaluate whether the model correctly answered the question. Judge only whether the model has provided the "
    "correct answer up to this point, not whether it finished. Reason step by step first after 'Reasoning:', "
    "then answer only with Yes or No after 'Answer:'."
)


def add_arguments(p: argparse.ArgumentParser, name: str = "reflection-labels") -> None:
    p.add_argument("--model", required=True, help="the policy whose responses are labelled (model folder)")
    p.add_argument("--task", default="knights-knaves", help="registered task name (default knights-knaves)")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE", help="task option, repeatable")
    p.add_argument("--data", nargs="*", default=None, metavar="FILE", help="task data files")
    p.add_argument("--split", default="train", help="split to sample (default train)")
    p.add_argument("--limit", type=int, default=100, help="problems to sample (default 100; 0 = all)")
    p.add_argument("--n", type=int, default=4, help="responses per problem (default 4)")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (default 0.6)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="response cap (default 1024; REA-RL 8192)")
    p.add_argument("--stop", nargs="*", default=["</answer>"], help="stop strings (default </answer>)")
    p.add_argument("--teacher", default="oracle",
                   help="chunk labeller: 'oracle' (the task's verifier) or a local model folder (default oracle)")
    p.add_argument("--verify", default="oracle", choices=["oracle", "teacher"],
                   help="how candidate chunks are verified (default oracle; teacher: REA-RL's yes/no prompt)")
    p.add_argument("--window-tokens", type=int, default=1024,
                   help="the teacher labels a response in windows of consecutive chunks of at most this many "
                        "tokens, one labelling prompt and one SFT row each (default 1024, as REA-RL; 0 = the "
                        "whole response in one window)")
    p.add_argument("--min-tokens", type=int, default=32, help="chunking: close at a sentence end from (32)")
    p.add_argument("--max-tokens", type=int, default=128, help="chunking: start a new chunk at (128)")
    p.add_argument("--answer-prefix", default="", help="closing template of the truncated baseline (default per task)")
    p.add_argument("--answer-tokens", type=int, default=256, help="the policy's answer after the template (256)")
    p.add_argument("--backend", default="engine", choices=["engine", "hf"], help="generation backend")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    import torch

    from aha.commands.score import parse_options
    from aha.models import load_model, load_tokenizer, require_chat_template
    from aha.overthinking.chunking import tokenizer_counter, windows
    from aha.overthinking.detectors import (
        OracleDetector,
        ReflectionModelDetector,
        labeling_prompt,
        labeling_target,
        question_text,
    )
    from aha.overthinking.revision import default_answer_prefix
    from aha.prompts import render_prompt
    from aha.rollout import get_generator
    from aha.rollout.base import SamplingParams
    from aha.tasks import get_task
    from aha.tasks.base import preopens_think
    from aha.train.config import check_task_options

    if args.n < 1 or args.limit < 0 or args.max_new_tokens < 1 or args.answer_tokens < 1:
        raise AhaError("--n, --max-new-tokens and --answer-tokens must be >= 1 and --limit >= 0")
    options = parse_options(args.task_option)
    if args.data:
        options["data"] = list(args.data)
    check_task_options(args.task, options, "--task-option")
    task = get_task(args.task, **options)
    examples = list(task.examples(args.split))[: args.limit or None]
    if not examples:
        raise AhaError(f"task {args.task!r} has no examples in split {args.split!r}")
    oracle = OracleDetector(task) if (args.teacher == "oracle" or args.verify == "oracle") else None
    teacher = None if args.teacher == "oracle" else ReflectionModelDetector(args.teacher, device=args.device)
    if args.verify == "teacher" and teacher is None:
        raise AhaError("--verify teacher needs --teacher MODEL_FOLDER")
    tok = load_tokenizer(args.model)
    require_chat_template(tok, args.model)
    model = load_model(args.model, device=args.device).eval()
    generator = get_generator(args.backend, model, tok)
    think = preopens_think(task)
    prompts = [render_prompt(tok, ex.prompt, think) for ex in examples]
    with torch.no_grad():
        completions = generator.generate(prompts, SamplingParams(
            temperature=args.temperature, max_new_tokens=args.max_new_tokens, n=args.n, stop=list(args.stop),
            seed=args.seed))
    count = tokenizer_counter(tok)
    template = args.answer_prefix or default_answer_prefix(task)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels, reflection_rows, truncated = [], [], []
    for c in completions:
        ex = examples[c.prompt_index]
        start, chunks = _chunks(c.text, count, think, args.min_tokens, args.max_tokens)
        if not chunks:
            labels.append({"id": ex.id, "sample": c.sample_index, "chunks": [], "accepted": []})
            continue
        texts = [ch.text for ch in chunks]
        groups = windows(chunks, args.window_tokens)
        if teacher is None:
            probs = oracle.probabilities(ex, chunks)
        else:  # each window is its own labelling prompt, numbered from [1]
            probs = [p for w in groups for p in teacher.label(question_text(ex), [texts[i] for i in w])]
        candidates = sorted({i for i, p in enumerate(probs) if p >= 0.5} | {len(chunks) - 1})
        accepted = [i for i in candidates if _verified(args.verify, oracle, teacher, ex, texts[: i + 1])]
        labels.append({"id": ex.id, "sample": c.sample_index, "chunks": texts, "p_result": probs,
                       "candidates": candidates, "accepted": accepted, "correct": task.verify(c.text, ex).correct})
        if accepted:
            for w in groups:  # one row per window; its accepted chunks renumbered within it
                reflection_rows.append({"id": ex.id, "prompt": labeling_prompt(question_text(ex), [texts[i] for i in w]),
                                        "response": labeling_target(len(w), [w.index(i) for i in accepted if i in w])})
            end = start + chunks[accepted[0]].end
            truncated.append((ex, c.text[:end] + template))
    kept = _truncated_baseline(task, tok, generator, truncated, think, args)
    from aha.runs import write_jsonl

    write_jsonl(out / "labels.jsonl", labels)
    write_jsonl(out / "reflection_sft.jsonl", reflection_rows)
    write_jsonl(out / "truncated_sft.jsonl", kept)
    summary = {"problems": len(examples), "responses": len(completions),
               "with_chunks": sum(1 for r in labels if r["chunks"]), "labelled": len(truncated), "labelling_windows": len(reflection_rows),
               "truncated_kept": len(kept), "teacher": args.teacher, "verify": args.verify}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    print(f"wrote {out}; train the labeller with: aha sft data.files=[{out / 'reflection_sft.jsonl'}] lora.enabled=true "
          "model.path=LABELLER_BASE")
    return 0


def _chunks(text: str, count: Any, think: bool, min_tokens: int, max_tokens: int) -> tuple[int, list[Any]]:
    from aha.overthinking.revision import response_chunks

    return response_chunks(text, count, think, min_tokens, max_tokens)


def _verified(mode: str, oracle: Any, teacher: Any, ex: Any, prefix_chunks: list[str]) -> bool:
    """Whether the response has given the right answer by the end of `prefix_chunks`."""
    prefix = "\n\n".join(prefix_chunks)
    if mode == "oracle":
        return oracle.accepts(ex, prefix)
    import torch

    from aha.overthinking.detectors import question_text
    from aha.prompts import render_prompt

    messages = [{"role": "user", "content": VERIFY_PROMPT.format(question=question_text(ex), response=prefix,
                                                                 answer=ex.answer)}]
    ids = render_prompt(teacher.tokenizer, messages)
    device = next(teacher.model.parameters()).device
    with torch.no_grad():
        out = teacher.model.generate(torch.tensor([ids], device=device), max_new_tokens=256, do_sample=False,
                                     pad_token_id=teacher.tokenizer.pad_token_id)
    reply = teacher.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    return "Answer: Yes" in reply


def _truncated_baseline(task: Any, tok: Any, generator: Any, truncated: list[tuple[Any, str]], think: bool,
                        args: argparse.Namespace) -> list[dict[str, Any]]:
    """The truncated responses completed by the policy, kept where the answer is right (SFT baseline)."""
    if not truncated:
        return []
    import torch

    from aha.prompts import render_prompt
    from aha.rollout.base import SamplingParams
    from aha.tasks.base import safe_verify

    prompts = [render_prompt(tok, ex.prompt, think) + tok(prefix, add_special_tokens=False)["input_ids"]
               for ex, prefix in truncated]
    with torch.no_grad():
        answers = generator.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=args.answer_tokens, n=1,
                                                             stop=list(args.stop), seed=args.seed))
    kept = []
    for a in answers:
        ex, prefix = truncated[a.prompt_index]
        response = prefix + a.text
        if safe_verify(task, response, ex).correct:
            kept.append({"id": ex.id, "prompt": ex.prompt, "response": response})
    return kept
