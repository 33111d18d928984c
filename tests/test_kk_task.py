"""The "knights-knaves" task and the Logic-RL reward."""

from __future__ import annotations

import json

import pytest

from aha.errors import AhaError
from aha.rewards import REWARDS, RewardBatch
from aha.tasks import TASKS, Example, Verdict, get_task
from aha.tasks.knights_knaves import SYSTEM_PROMPT, KnightsKnavesTask


def test_registered_and_built_with_options():
    assert "knights-knaves" in TASKS
    task = get_task("knights-knaves", people="3", count=5, seed=1)
    assert isinstance(task, KnightsKnavesTask)


def test_generated_examples():
    task = KnightsKnavesTask(people="2-4", count=10, seed=0, test_count=10)
    train = list(task.examples("train"))
    assert len(train) == 30 and [ex.bucket for ex in train[:3]] == ["2ppl", "3ppl", "4ppl"]
    ex = train[1]
    assert ex.prompt[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert ex.prompt[1]["role"] == "user"
    assert ex.prompt[1]["content"].endswith("Who is a knight and who is a knave?")
    assert ex.meta["n_people"] == 3 and len(ex.meta["names"]) == 3 and len(ex.meta["solution"]) == 3
    assert ex.answer.startswith("(1) " + ex.meta["names"][0] + " is a ")
    assert ex.meta["trace"].startswith("<think>")
    # ids are stable: a fresh task with the same options gives the same ids
    again = KnightsKnavesTask(people="2-4", count=10, seed=0, test_count=10)
    assert [e.id for e in again.examples("train")] == [e.id for e in train]


def test_train_and_test_are_disjoint_by_statement_set():
    task = KnightsKnavesTask(people="2-3", count=200, test_count=50, seed=0)
    train = {tuple(ex.meta["statements"]) for ex in task.examples("train")}
    test = {tuple(ex.meta["statements"]) for ex in task.examples("test")}
    assert len(test) == 100 and train.isdisjoint(test)


@pytest.mark.parametrize("style", ["reflective", "direct"])
@pytest.mark.parametrize("preopened", [False, True])
def test_traces_pass_the_task_verifier(style, preopened):
    task = KnightsKnavesTask(people="2-5", count=30, trace_style=style, think_preopened=preopened)
    for ex in task.examples("train"):
        assert ex.meta["trace"].startswith("<think>") != preopened
        v = task.verify(ex.meta["trace"], ex)
        assert v.correct and v.format_ok, v


def test_prompt_options():
    task = KnightsKnavesTask(people="2", count=2, system_prompt="Be brief.", trace_style="none")
    ex = next(task.examples("train"))
    assert ex.prompt[0]["content"] == "Be brief." and "trace" not in ex.meta
    ex = next(KnightsKnavesTask(people="2", count=2, system_prompt="").examples("train"))
    assert [m["role"] for m in ex.prompt] == ["user"]


def test_data_files_are_used_for_every_split(tmp_path):
    from aha.cli import main

    path = tmp_path / "kk.jsonl"
    assert main(["data", "knights-knaves", "--people", "3", "--count", "4", "--out", str(path)]) == 0
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    task = KnightsKnavesTask(data=[str(path)])
    assert [ex.id for ex in task.examples("train")] == ids == [ex.id for ex in task.examples("test")]
    # a separate test file serves the test split only
    test_path = tmp_path / "kk_test.jsonl"
    main(["data", "knights-knaves", "--people", "4", "--count", "2", "--split", "test",
          "--out", str(test_path)])
    task = KnightsKnavesTask(data=str(path), test_data=str(test_path))
    assert {ex.bucket for ex in task.examples("test")} == {"4ppl"}
    assert {ex.bucket for ex in task.examples("train")} == {"3ppl"}


def test_bad_options_are_aha_errors():
    for kwargs in ({"trace_style": "verbose"}, {"people": "1"}, {"depth": 0}, {"mix": "xor=1"}):
        with pytest.raises(AhaError):
            KnightsKnavesTask(**kwargs)


def test_verify_without_meta_uses_the_answer_text():
    task = KnightsKnavesTask(people="2", count=1)
    ex = Example(id="x", prompt=[], answer="(1) Ada is a knave\n(2) Ben is a knight", meta={})
    assert task.verify("<think>t</think><answer>(1) Ada is a knave\n(2) Ben is a knight</answer>", ex).correct
    assert not task.verify("<answer>(1) Ada is a knight</answer>", ex).correct


def test_corpus_has_prompts_and_traces():
    texts = list(KnightsKnavesTask(people="2-3").corpus(6, seed=1))
    assert texts[0] == SYSTEM_PROMPT
    assert sum(t.startswith("<think>") for t in texts) == 6


# ----------------------------------------------------------------------------- Logic-RL reward
NAMES = ["Ada", "Ben"]
KK = Example(id="k", prompt=[], answer="(1) Ada is a knight\n(2) Ben is a knave",
             meta={"names": NAMES, "solution": [True, False], "bucket": "2ppl"})
GOLD = "<think>t</think>\n<answer>(1) Ada is a knight\n(2) Ben is a knave</answer>"


def _reward(texts, examples=None, **options):
    task = KnightsKnavesTask(people="2", count=1)
    examples = examples or [KK] * len(texts)
    verdicts = [task.verify(t, ex) if ex.meta.get("names") else Verdict() for t, ex in zip(texts, examples)]
    batch = RewardBatch(completions=texts, examples=examples, verdicts=verdicts, num_tokens=[10] * len(texts),
                        group_ids=[0] * len(texts))
    return REWARDS.get("logic_rl")(batch, **options)


@pytest.mark.parametrize("text, score", [
    (GOLD, 3.0),                                                                  # +1 format, +2 answer
    (GOLD.replace("Ben is a knave", "Ben is a knight"), -0.5),                    # +1, -1.5 wrong role
    (GOLD.replace("\n(2) Ben is a knave", ""), -1.0),                             # +1, -2 Ben missing
    (GOLD.replace("</answer>", "\n(3) Cyd is a knight</answer>"), -1.0),          # +1, -2 extra person
    (GOLD.replace("Ben is a knave", "Ben is a knave, Ben is a knight"), -1.0),    # +1, -2 conflicting roles
    (GOLD.replace("<think>t</think>\n", ""), -3.0),                               # -1, -2: format fails
    (GOLD + " trailing", -3.0),                                                   # right answer, bad format
    ("", -3.0),
])
def test_logic_rl_reward_table(text, score):
    assert _reward([text]).scores == [score]


def test_logic_rl_options_metrics_and_non_kk_examples():
    other = Example(id="m", prompt=[], answer="42", meta={"bucket": "x"})
    out = _reward([GOLD, GOLD.replace("knave", "knight"), GOLD], [KK, KK, other],
                  answer_correct=1.0, answer_wrong=0.0)
    assert out.scores == [2.0, 1.0, None]  # custom values; not applicable to a non-K&K example
    assert out.metrics == {"format_ok": 1.0, "correct": 0.5, "unparseable": 0.0}


def test_plain_quiz_and_small_name_pool_for_tiny_models():
    from aha.tasks import get_task
    from aha.tasks.knights_knaves.render import NAMES

    task = get_task("knights-knaves", people="3", count=50, test_count=10, seed=3, name_pool=6,
                    quiz_style="plain", system_prompt="")
    full = get_task("knights-knaves", people="3", count=50, test_count=10, seed=3, system_prompt="")
    plain_ex, full_ex = list(task.examples("train")), list(full.examples("train"))
    # the same statements in the same order: only the surface text changes
    assert [e.meta["statements"] for e in plain_ex] == [e.meta["statements"] for e in full_ex]
    for ex in plain_ex:
        assert set(ex.meta["names"]) <= set(NAMES[:6])
        text = ex.prompt[-1]["content"]
        assert text.startswith(f"{ex.meta['names'][0]} says that ") and "island" not in text
        assert task.verify(ex.meta["trace"], ex).correct
    assert len(plain_ex[0].prompt) == 1  # no system message


@pytest.mark.parametrize("options, message", [
    ({"name_pool": 2, "people": "3"}, "name_pool must be between 3"),  # fewer names than people
    ({"quiz_style": "terse"}, "quiz_style must be"),  # unknown style
])
def test_bad_surface_options(options, message):
    from aha.errors import AhaError
    from aha.tasks import get_task

    with pytest.raises(AhaError, match=message):
        get_task("knights-knaves", **options)


def test_fill_balances_sizes_without_a_warning_and_keeps_test_disjoint():
    import warnings

    from aha.tasks import get_task

    opts = dict(people="2-3", count=700, test_count=300, seed=0, name_pool=8, quiz_style="plain")
    with pytest.warns(UserWarning, match="only"):
        plain = list(get_task("knights-knaves", **opts).examples("train"))
    assert sum(e.meta["bucket"] == "2ppl" for e in plain) < 150  # the 2-person space is nearly used up by test
    task = get_task("knights-knaves", fill=True, **opts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train = list(task.examples("train"))
    test = list(task.examples("test"))
    assert sum(e.meta["bucket"] == "2ppl" for e in train) == 700 == sum(e.meta["bucket"] == "3ppl" for e in train)
    assert len({e.id for e in train}) == len(train)
    assert not {e.meta["statements"] for e in train} & {e.meta["statements"] for e in test}
    assert len(test) == 600
    assert all(task.verify(e.meta["trace"], e).correct for e in train[-20:])  # repeats carry right traces
