"""REA-RL detectors and online revision: the oracle finds planted first-answer points; revisions are
built from the original's own token ids; the group bookkeeping (2G members, pairs aligned, failed
revisions replaced or dropped, zero advantages when nobody is correct); a tiny run end to end."""

from __future__ import annotations

import math
import types

import pytest
import torch

from aha.algo.advantages import grpo_advantages
from aha.cli import main
from aha.overthinking.chunking import split_chunks
from aha.overthinking.detectors import OracleDetector, detect, stated_number, stated_roles
from aha.overthinking.options import TAGGED_ANSWER_PREFIX, RevisionConfig
from aha.overthinking.revision import kept_end, reasoning_span, token_cut
from aha.rollout.base import Completion
from aha.runs import read_jsonl
from aha.tasks import get_task
from aha.tasks.base import safe_verify
from aha.train.grpo import Rollout, StepBatch, compute_advantages
from aha.train.revision import Reviser

# A 3-person puzzle's reasoning in paragraphs: the full right assignment is first stated in
# paragraph 2 (index 1), and the response keeps checking afterwards (overthinking).
KK_PARAGRAPHS = [
    "Assume Ben is a knight. Ben's claim is true, so Dan is a knight.",
    "Reconsider: Ben is a knave. Ben's claim is false, so Dan is a knave. Dan's claim is false, so Finn is a knight.",
    "Wait, let me check Finn again. Finn is a knight, his claim holds.",
    "But check Dan once more: Dan is a knave, fine.",
    "Alternatively, check Ben again: Ben is a knave. All claims fit.",
]
KK_ANSWER = "(1) Ben is a knave\n(2) Finn is a knight\n(3) Dan is a knave"


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def kk():
    task = get_task("knights-knaves", people="3", count=5, test_count=5, quiz_style="plain", name_pool=6)
    ex = next(e for e in task.examples("train") if e.meta["names"] == ["Ben", "Finn", "Dan"])
    return task, ex


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from aha.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def kk_text(paragraphs=KK_PARAGRAPHS, answer=KK_ANSWER) -> str:
    return "<think>" + "\n\n".join(paragraphs) + "</think>\n<answer>" + answer + "</answer>"


# ----------------------------------------------------------------------------- the oracle


def test_stated_answers():
    assert stated_roles("Ann is a knight. so ann is a knave; Bob is knight", ["Ann", "Bob", "Cy"]) == \
        {"Ann": "knave", "Bob": "knight"}
    assert stated_roles("Joanna is a knight", ["Anna"]) == {}  # never inside a longer name
    assert stated_number("3 * 4 = 12, so 12 + 5 = 17.") == "17"
    assert stated_number("first \\boxed{12}, then 1,234") == "12"  # a box wins over later numbers
    assert stated_number("no numbers") is None


def test_oracle_finds_the_planted_point_on_knights_and_knaves(kk):
    task, ex = kk
    # sanity: the example is the one the paragraphs talk about
    assert safe_verify(task, kk_text(), ex).correct
    chunks = split_chunks("\n\n".join(KK_PARAGRAPHS), words, min_tokens=1)
    assert len(chunks) == 5  # every paragraph ends a sentence, so each is a chunk
    det = detect(OracleDetector(task), ex, chunks)
    # chunk 0 names Ben and Dan only (no full answer); from chunk 1 on the stated answer is right
    assert det.probs == [0.0, 1.0, 1.0, 1.0, 1.0]
    # N = 5: cap 5 - 1 - int(0.75) = 4, N/2 = 2.5 -> normal 3; strong the best P up to it: 1
    assert (det.cuts.strong, det.cuts.normal, det.cuts.weak) == (1, 3, 4)


def test_oracle_on_arithmetic_reads_the_last_number():
    task = get_task("arithmetic", levels="1", train_size=20, test_size=5)
    ex = next(iter(task.examples("train")))
    gold = int(ex.answer)
    paragraphs = [f"First a guess: {gold + 1}.", f"Then it is {gold}.", "Check it again.", f"So {gold}."]
    chunks = split_chunks("\n\n".join(paragraphs), words, min_tokens=1)
    probs = OracleDetector(task).probabilities(ex, chunks)
    # "Check it again." states no number, so the last one stated (gold) still stands
    assert probs == [0.0, 1.0, 1.0, 1.0]


def test_oracle_refuses_a_task_it_cannot_read():
    from aha.errors import AhaError

    with pytest.raises(AhaError, match="reflection model"):
        OracleDetector(types.SimpleNamespace(name="other"))


# ----------------------------------------------------------------------------- token handling


def test_reasoning_span_and_kept_end():
    text = "<think>ab\n\ncd</think>rest"
    assert reasoning_span(text) == (7, 13)
    assert reasoning_span("ab</think>", think_preopened=True) == (0, 2)
    chunks = split_chunks("a.\n\nb c.\n\nd e f", words, min_tokens=1)  # three one-paragraph chunks
    assert kept_end(chunks, 0) == 2
    # the last chunk: its last paragraph goes, so the kept text ends after "b c."
    assert kept_end(chunks, 2) == 8
    one = split_chunks("only one paragraph", words)
    assert kept_end(one, 0) == 0


def test_token_cut_is_the_fewest_tokens_covering_the_text(tok):
    text = "Assume Ben is a knight. Then Dan is a knave."
    ids = tok(text, add_special_tokens=False)["input_ids"]

    def decode(x):
        return tok.decode(x, skip_special_tokens=True)

    for end in (0, 1, 10, 23, len(text)):
        t = token_cut(ids, decode, end)
        assert len(decode(ids[:t])) >= end
        assert t == 0 or len(decode(ids[:t - 1])) < end


# ----------------------------------------------------------------------------- revisions


class FakeGenerator:
    """Continues every prompt with the same text; remembers the prompts it got."""

    def __init__(self, tok, text):
        self.tok, self.text, self.prompts = tok, text, []

    def generate(self, prompts, params):
        self.prompts.extend(prompts)
        ids = self.tok(self.text, add_special_tokens=False)["input_ids"]
        return [Completion(i, 0, list(ids), self.tok.decode(ids, skip_special_tokens=True), "stop")
                for i in range(len(prompts))]


def make_group(task, ex, tok, texts, group=0):
    prompt = tok("<|im_start|>user\nquiz<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    out = []
    for j, text in enumerate(texts):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        c = Completion(0, j, ids, tok.decode(ids, skip_special_tokens=True), "stop")
        out.append(Rollout(ex, group, prompt, c, safe_verify(task, c.text, ex)))
    return out


def reviser(task, tok, **options):
    return Reviser(RevisionConfig(enabled=True, min_tokens=1, **options), task, tok, "knights-knaves")


def test_revision_ids_are_the_originals_prefix_ids(kk, tok):
    task, ex = kk
    rv = reviser(task, tok, strength="strong", loss_mask="generated_only")
    gen = FakeGenerator(tok, KK_ANSWER + "</answer>")
    groups = [make_group(task, ex, tok, [kk_text(), kk_text(KK_PARAGRAPHS[:1] + KK_PARAGRAPHS[1:])])]
    out, metrics = rv.revise(gen, torch.nn.Linear(1, 1), groups, params=_params())
    assert [r.kind for r in out[0]] == ["sample", "revision", "sample", "revision"]  # pairs interleaved
    template = tok(TAGGED_ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    assert rv.template == template
    for k in (0, 2):
        orig, rev = out[0][k], out[0][k + 1]
        assert rev.revises is orig and rev.example is orig.example and rev.group == orig.group
        ids, o = rev.completion.token_ids, orig.completion.token_ids
        t = len(ids) - len(template) - len(gen.tok(gen.text, add_special_tokens=False)["input_ids"])
        assert ids[:t] == o[:t]  # the original's own ids, not re-tokenized text
        assert ids[t:t + len(template)] == template
        # the strong cut is chunk 1: the kept text ends with paragraph 2 and holds nothing after it
        kept = tok.decode(ids[:t], skip_special_tokens=True)
        assert kept.rstrip().endswith(KK_PARAGRAPHS[1]) and KK_PARAGRAPHS[2] not in kept
        # the policy was asked to continue exactly prompt + prefix + template
        assert gen.prompts[k // 2] == orig.prompt_ids + o[:t] + template
        # template tokens carry no loss with generated_only; everything else does
        assert rev.loss_mask.tolist() == [True] * t + [False] * len(template) + [True] * (len(ids) - t - len(template))
        assert rev.verdict.correct and len(ids) < len(o)
    assert metrics["revision/cut_position"] == pytest.approx(2 / 5)
    assert metrics["revision/cut_hist/20-40"] == 1.0


def _params():
    from aha.rollout.base import SamplingParams

    return SamplingParams(temperature=0.0, max_new_tokens=999, n=4, seed=3)


@pytest.mark.parametrize("on_failed, kinds", [
    # a wrong revision becomes a copy of its original (REA-RL); a right one stays
    ("duplicate_original", ["sample", "copy", "sample", "revision"]),
    # or it is dropped, and the group is shorter
    ("drop", ["sample", "sample", "revision"]),
])
def test_settle_replaces_or_drops_failed_revisions(kk, tok, on_failed, kinds):
    task, ex = kk
    rv = reviser(task, tok, on_failed=on_failed)
    groups = [make_group(task, ex, tok, [kk_text(), kk_text()])]
    out, _ = rv.revise(FakeGenerator(tok, KK_ANSWER + "</answer>"), torch.nn.Linear(1, 1), groups, _params())
    bad = out[0][1]
    out[0][1] = type(bad)(**{**bad.__dict__, "verdict": safe_verify(task, "no answer", ex)})  # plant a failure
    settled, metrics = rv.settle(out)
    assert [r.kind for r in settled[0]] == kinds
    if on_failed == "duplicate_original":
        copy = settled[0][1]
        assert copy.completion is out[0][0].completion and copy.reward == out[0][0].reward
    assert metrics["revision/made"] == 2 and metrics["revision/accepted_share"] == 0.5
    # both pairs are fine for "truncation accuracy" only if the failed one's original was wrong: it was right
    assert metrics["revision/truncation_accuracy"] == 0.5


def test_zero_advantages_when_no_member_is_correct(kk, tok):
    task, ex = kk
    right = make_group(task, ex, tok, [kk_text(), kk_text(answer="(1) Ben is a knight")], group=0)
    wrong = make_group(task, ex, tok, [kk_text(answer="(1) Ben is a knight"), "<think>x</think>"], group=1)
    for r, reward in zip(right + wrong, [1.0, 0.2, 0.5, 0.1]):
        r.reward = reward
    batch = StepBatch(groups=[right, wrong[:1] + wrong[1:]])
    cfg = types.SimpleNamespace(algo=types.SimpleNamespace(kl_coef=0.0, advantage_options={}),
                                rollout=types.SimpleNamespace(revision=RevisionConfig(enabled=True)))
    s = types.SimpleNamespace(cfg=cfg, plan=types.SimpleNamespace(kl_in_reward=False), estimator=grpo_advantages,
                              reviser=object())
    compute_advantages(s, batch)
    expected = grpo_advantages(torch.tensor([[1.0, 0.2]]), torch.ones(1, 2, dtype=torch.bool))[0].tolist()
    assert [r.advantage for r in right] == pytest.approx(expected)
    assert [r.advantage for r in wrong] == [0.0, 0.0]  # the rewards differ, but nobody is correct
    # ragged groups (dropped revisions): a 3-member and a 1-member group
    batch = StepBatch(groups=[right + wrong[:1], wrong[1:]])
    compute_advantages(s, batch)
    assert wrong[1].advantage == 0.0 and sum(r.advantage for r in right + wrong[:1]) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- the pair term (custom_loss)


C = 9  # a </think> id


@pytest.mark.parametrize("original, revision, start", [
    # the revision closes at index 2, the original at 6: both rows from index 2 on
    ([1, 2, 3, 4, 5, 6, C, 7], [1, 2, C, 8], 2),
    # the revision closes one token before the original: start + 1 == end, no term
    ([1, 2, 3, C, 7], [1, 2, C, 8], None),
    # closing at the same place (a copy): no term
    ([1, 2, C, 7], [1, 2, C, 7], None),
    # the original never closes: its end is its length (5)
    ([1, 2, 3, 4, 5], [1, 2, C], 2),
    # the revision never closes either: start = its length (3), end 5
    ([1, 2, 3, 4, 5], [1, 2, 3], 3),
    # only the first </think> of each counts: start 0, end 3
    ([1, 2, 3, C, 5, C], [C, 4, C], 0),
])
def test_pair_term_start(original, revision, start):
    from aha.algo.overthinking import pair_term_start

    assert pair_term_start(original, revision, C) == start


def test_pair_scale_is_the_groups_mean_or_max_abs_advantage():
    from aha.algo.overthinking import pair_scale

    adv = torch.tensor([[1.0, -0.5, 0.25, -0.25], [2.0, -2.0, 9.0, 0.0]])
    valid = torch.tensor([[True, True, True, True], [True, True, False, False]])  # the 2nd group is ragged
    # mean: (1 + 0.5 + 0.25 + 0.25) / 4 = 0.5; (2 + 2) / 2 = 2 (the padded 9 is left out)
    assert pair_scale(adv, valid, "mean").tolist() == [0.5, 2.0]
    assert pair_scale(adv, valid, "max").tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="pair scale"):
        pair_scale(adv, valid, "median")


def test_policy_loss_pair_term_by_hand():
    from aha.algo.losses import policy_loss

    # on-policy (ratio 1): pg = -A per token. Two rows of 3 tokens, the second row's last token padding.
    lp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv = torch.tensor([0.5, -1.0])
    pair_adv = torch.tensor([-0.25, 0.25])
    pair_mask = torch.tensor([[False, True, True], [False, True, True]])  # the padded position drops out
    loss, metrics = policy_loss(lp, lp.detach(), adv, mask, pair_advantages=pair_adv, pair_mask=pair_mask)
    # main: (-0.5 x 3 + 1.0 x 2) / 5 = 0.1; pair: (0.25 x 2 - 0.25 x 1) / 5 = 0.05
    assert metrics["pg_loss"] == pytest.approx(0.1) and metrics["pair_loss"] == pytest.approx(0.05)
    assert float(loss.detach()) == pytest.approx(0.15)
    loss.backward()
    # d loss / d lp = -(A + pair_mask x A_pair) / 5 on the counted tokens
    assert lp.grad.tolist() == [pytest.approx([-0.1, -0.05, -0.05]), pytest.approx([0.2, 0.15, 0.0])]
    # with KL, the pair tokens count their KL a second time (the released second loss includes it)
    ref = torch.tensor([[-1.5, -2.0, -0.5], [-0.3, -0.2, 0.0]])
    with_kl, _ = policy_loss(lp.detach(), lp.detach(), adv, mask, ref_logprobs=ref, kl_coef=0.1,
                             pair_advantages=pair_adv, pair_mask=pair_mask)
    k3 = lambda d: float(torch.exp(torch.tensor(d)) - d - 1)  # noqa: E731 (ref - lp = d)
    kl_main = k3(-0.5) + k3(0.5)  # row 0 token 0, row 1 token 1; the rest are 0
    kl_pair = k3(0.5)  # row 1 token 1 is also a pair token
    assert float(with_kl) == pytest.approx(0.15 + 0.1 * (kl_main + kl_pair) / 5)


def test_pair_terms_go_to_accepted_revisions_and_their_originals(kk, tok):
    task, ex = kk
    rv = reviser(task, tok, pair_loss="mean")
    groups = [make_group(task, ex, tok, [kk_text(), kk_text()])]
    out, _ = rv.revise(FakeGenerator(tok, KK_ANSWER + "</answer>"), torch.nn.Linear(1, 1), groups, _params())
    bad = out[0][1]
    out[0][1] = type(bad)(**{**bad.__dict__, "verdict": safe_verify(task, "no answer", ex)})  # the 1st fails
    settled, _ = rv.settle(out)
    assert [r.kind for r in settled[0]] == ["sample", "copy", "sample", "revision"]
    adv = torch.tensor([[1.0, -1.0, 0.5, -0.5]])
    assert rv.pair_terms(settled, adv, torch.ones(1, 4, dtype=torch.bool)) == 1.0
    orig, rev = settled[0][2], settled[0][3]
    start = rev.completion.token_ids.index(rv.close_id)  # where the revision's </think> is
    assert start < orig.completion.token_ids.index(rv.close_id) - 1
    # c = mean |A| = 0.75: -c on the original, +c on the revision, both from the revision's </think> on
    assert (orig.pair_from, orig.pair_advantage, rev.pair_from, rev.pair_advantage) == (start, -0.75, start, 0.75)
    # the failed pair (its copy) and its original get nothing
    assert settled[0][0].pair_from is None and settled[0][1].pair_from is None
    # off: no terms
    assert reviser(task, tok).pair_terms(settled, adv, torch.ones(1, 4, dtype=torch.bool)) == 0.0


def test_pair_term_tensors_of_a_micro_batch(kk, tok):
    from aha.train.grpo import _pair_terms

    task, ex = kk
    rows = make_group(task, ex, tok, ["<think>a b c</think>", "<think>a</think>", "x"])
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 2 + [False] * 3])  # (3, 5)
    assert _pair_terms(rows, mask) == (None, None)  # nobody has a term: the loss is the plain one
    rows[0].pair_from, rows[0].pair_advantage = 2, -0.5
    rows[1].pair_from, rows[1].pair_advantage = 1, 0.5
    adv, pair_mask = _pair_terms(rows, mask)
    assert adv.tolist() == [-0.5, 0.5, 0.0]
    # from pair_from on, within each row's completion; nothing for a row without a term
    assert pair_mask.tolist() == [[False, False, True, True, True], [False, True, True, False, False],
                                  [False] * 5]


def test_pair_loss_needs_a_single_token_close_tag(kk):
    from aha.errors import AhaError

    class Pieces:  # spells every text one id per character
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(ch) for ch in text]}

    task, _ = kk
    with pytest.raises(AhaError, match="pair_loss needs a tokenizer that encodes </think> as one token"):
        Reviser(RevisionConfig(enabled=True, pair_loss="max"), task, Pieces(), "knights-knaves")


# ----------------------------------------------------------------------------- end to end


def revision_run(model_dir, out, rewards: str, *extra: str) -> list[dict]:
    """A 2-step revision run of the tiny model on 2-person puzzles; its metrics rows."""
    torch.set_num_threads(1)
    args = ["train", f"model.path={model_dir}", "task.name=knights-knaves",
            "task.options={people: '2', count: 8, test_count: 4, quiz_style: plain, name_pool: 4}",
            f"rewards={rewards}", "steps=2", "batch.prompts_per_step=2", "batch.samples_per_prompt=2",
            "batch.micro_batch_size=8", "rollout.max_new_tokens=24", "rollout.revision.enabled=true",
            "rollout.revision.max_revision_tokens=8", *extra, f"run.out_dir={out}", "run.progress=false"]
    assert main(args) == 0
    return read_jsonl(out / "metrics.jsonl")


@pytest.mark.slow
def test_revision_run_end_to_end(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    rows = revision_run(tiny_model_dir, out, "[{name: correctness}, {name: refine_length}, "
                        "{name: reflection_density, options: {threshold: 225.09, match: rea_rl}}]",
                        "rollout.revision.loss_mask=generated_only")
    assert {"revision/made", "revision/accepted_share", "revision/truncation_accuracy"} <= set(rows[0])
    # the RL step hands the reward the completions' ids: every reasoning-token count is the released id count
    assert [r["reward/reflection_density/reasoning_tokens_exact"] for r in rows] == [1.0, 1.0]
    rollouts = read_jsonl(out / "rollouts" / "step_00001.jsonl")
    kinds = [r.get("kind", "sample") for r in rollouts]
    assert kinds.count("sample") == 4 and len(kinds) == 8  # 2 prompts x (2 originals + 2 revisions or copies)


@pytest.mark.slow
def test_revision_run_with_the_pair_term(tmp_path, tiny_model_dir):
    rows = revision_run(tiny_model_dir, tmp_path / "run", "[{name: correctness}, {name: refine_length}]",
                        "rollout.revision.pair_loss=max")
    # how many pairs got a term (the untrained model's revisions are rarely right); the loss has the
    # term's share whenever one did
    assert all("revision/pair_terms" in r and ("pair_loss" in r) == (r["revision/pair_terms"] > 0) for r in rows)


TWINS = ["rea_rl_grpo", "rea_rl_grpo_len", "rea_rl", "rea_rl_no_revision", "rea_rl_no_reflection_reward"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TWINS)
def test_tiny_recipe_twins_run(tmp_path, tiny_model_dir, name):
    """recipes/tiny/<name>.yaml, the CPU twins of recipes/<name>_7b.yaml, run end to end on the tiny model."""
    from pathlib import Path

    torch.set_num_threads(1)
    recipe = Path(__file__).parent.parent / "recipes" / "tiny" / f"{name}.yaml"
    out = tmp_path / name
    assert main(["train", str(recipe), f"model.path={tiny_model_dir}", "steps=1", f"run.out_dir={out}",
                 "run.progress=false"]) == 0
    row = read_jsonl(out / "metrics.jsonl")[0]
    revising = name in ("rea_rl", "rea_rl_no_reflection_reward")
    assert ("revision/made" in row) == revising
    assert (out / "model").is_dir()


# ----------------------------------------------------------------------------- the reflection-model detector


class LabelTokenizer:
    """A tokenizer of single characters plus two label tokens, " Think" (1) and " Result" (2)."""

    pad_token_id = 0
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        ids, i = [], 0
        while i < len(text):
            for tid, piece in ((1, " Think"), (2, " Result")):
                if text.startswith(piece, i):
                    ids.append(tid)
                    i += len(piece)
                    break
            else:
                ids.append(3 + (ord(text[i]) % 50))
                i += 1
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens=False):
        return "".join({1: " Think", 2: " Result"}.get(int(t), "x") for t in ids)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(m["content"] for m in messages) + "\n"


class PlantedLabeller(torch.nn.Module):
    """Answers label position i with P(Result) = planted[i] (the rest of the mass on " Think")."""

    def __init__(self, planted):
        super().__init__()
        self.planted, self.calls = planted, 0
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, past_key_values=None, use_cache=True):  # noqa: ARG002 - the HF signature
        p = self.planted[self.calls]
        self.calls += 1
        logits = torch.full((1, input_ids.shape[1], 60), -1e9)
        logits[0, -1, 1] = float(torch.log(torch.tensor(max(1 - p, 1e-12))))
        logits[0, -1, 2] = float(torch.log(torch.tensor(max(p, 1e-12))))
        return types.SimpleNamespace(logits=logits, cache=None, past_key_values="cache")


def test_reflection_model_detector_reads_planted_labels(kk):
    from aha.overthinking.detectors import ReflectionModelDetector

    _, ex = kk
    planted = [0.1, 0.2, 0.9, 0.8, 0.7, 0.3]
    det = ReflectionModelDetector.__new__(ReflectionModelDetector)
    det.model, det.tokenizer, det.top_k = PlantedLabeller(planted), LabelTokenizer(), 5
    det.whole_labels = False  # each label is one token of this tokenizer: REA-RL's top-5 reading
    chunks = split_chunks("\n\n".join(f"part {i}." for i in range(6)), words, min_tokens=1)
    found = detect(det, ex, chunks)
    assert found.probs == pytest.approx(planted)
    # N = 6, cap = 6 - 1 - int(0.8) = 5; normal: first i >= 3 with P >= 0.5 -> 3; strong: highest
    # P >= 0.25 up to 3 -> 2; weak: the run 3..4 has no second run -> 4
    assert (found.cuts.strong, found.cuts.normal, found.cuts.weak) == (2, 3, 4)


def test_reflection_model_detector_runs_a_real_model_folder(kk, tiny_model_dir):
    from aha.overthinking.detectors import ReflectionModelDetector

    _, ex = kk
    det = ReflectionModelDetector(tiny_model_dir, device="cpu")
    chunks = split_chunks("\n\n".join(KK_PARAGRAPHS), words, min_tokens=1)
    probs = det.probabilities(ex, chunks)
    assert len(probs) == 5 and all(0.0 <= p <= 1.0 for p in probs)


@pytest.mark.parametrize("log_result, log_think, p", [
    # equal probabilities: 1/2
    (-2.0, -2.0, 0.5),
    # Result e times likelier than Think: e / (e + 1)
    (-1.0, -2.0, 2.718281828459045 / (2.718281828459045 + 1.0)),
    # Think e^3 times likelier: 1 / (1 + e^3)
    (-5.0, -2.0, 1.0 / (1.0 + 20.085536923187668)),
    # far apart: 0 without overflow
    (-1000.0, -1.0, 0.0),
])
def test_label_sequence_probability(log_result, log_think, p):
    from aha.algo.overthinking import label_sequence_probability

    assert label_sequence_probability(log_result, log_think) == pytest.approx(p)


def test_spelled_labels_are_scored_whole(kk, tiny_model_dir):
    # the tiny tokenizer spells " Think" and " Result" in pieces, so no top-5 token names a label;
    # P(Result) at each position must be the two label texts' normalised probability, the same as
    # scoring them on the full sequence without a cache
    from aha.models import load_model
    from aha.overthinking.detectors import REPLY_PREFILL, ReflectionModelDetector, labeling_prompt
    from aha.prompts import render_prompt

    det = ReflectionModelDetector(tiny_model_dir, device="cpu")
    assert det.whole_labels and all(len(ids) > 1 for ids in det.label_ids.values())
    parts = ["Ben is a knight.", "So Dan is a knave."]
    probs = det.label("quiz", parts)
    tok, model = det.tokenizer, load_model(tiny_model_dir, device="cpu").eval()

    def logprob(prefix, cont):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prefix + cont])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        return sum(float(logp[len(prefix) - 1 + k, t]) for k, t in enumerate(cont))

    prefix = render_prompt(tok, labeling_prompt("quiz", parts)) + tok(REPLY_PREFILL, add_special_tokens=False)["input_ids"]
    for i, p in enumerate(probs):
        r, t = logprob(prefix, det.label_ids["Result"]), logprob(prefix, det.label_ids["Think"])
        assert p == pytest.approx(1.0 / (1.0 + math.exp(t - r)), abs=1e-5)
        label = "Result" if p >= 0.5 else "Think"
        prefix = prefix + tok(f" {label}" + ("\n\n[2]." if i == 0 else ""), add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("overrides, message", [
    (["rollout.revision.labeler='oracle:'"], "names no task"),
    (["rollout.revision.on_failed=drop", "algo.kl_coef=0.1", "algo.kl_in_reward=true"], "ragged"),
    (["rollout.revision.strength=medium"], "strength"),
])
def test_revision_config_errors(overrides, message):
    from aha.config import load_config
    from aha.errors import AhaError
    from aha.train.config import TrainConfig

    with pytest.raises(AhaError, match=message):
        load_config(TrainConfig, None, ["rollout.revision.enabled=true", *overrides])


def test_missing_reflection_model_folder_is_a_clear_error(kk):
    from aha.errors import AhaError
    from aha.overthinking.detectors import make_detector

    with pytest.raises(AhaError, match="does not exist"):
        make_detector("models/missing", kk[0])


def test_labeller_agreement_figures_by_hand():
    from benchmarks.reflection_model_cpu import agreement

    rows = [
        # a correct response of 6 chunks, the answer reached in chunk 2: the oracle's normal cut is the first
        # Result at or after N/2 = 3 -> 3; the labeller's Results start at 4 -> cut 4 (one later)
        {"p_result": [0, 0, 1, 1, 1, 1], "correct": True},
        # a wrong one of 4 chunks: no Result from either, both cut at the cap 4 - 1 - int(0.7) = 3
        {"p_result": [0, 0, 0, 0], "correct": False},
    ]
    labeller = [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0]]
    got = agreement(rows, labeller)
    assert got["label_agreement"] == pytest.approx(8 / 10)  # chunks 2 and 3 of the first response differ
    assert (got["all/same_cut"], got["all/mean_abs_cut_diff"], got["all/later"], got["all/earlier"]) == (0.5, 0.5, 0.5, 0.0)
    assert (got["correct/responses"], got["correct/same_cut"], got["correct/mean_abs_cut_diff"]) == (1.0, 0.0, 1.0)
