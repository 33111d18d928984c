"""Kill -9 and Ctrl-C trials of `aha train`: a run interrupted at random moments and resumed must end
with the metrics of a run that was never interrupted.

Each trial starts a tiny GRPO run (the test suite's toy task and a nano model from `aha init-model`)
in a subprocess, sends it SIGKILL or SIGINT after a random delay, resumes it with `resume=DIR` until it
finishes (interrupting each attempt again with probability 1/2), and compares metrics.jsonl without
wall-clock columns with a straight run's.

    python3 benchmarks/crash_trials.py [--trials 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("time", "seconds", "tokens_per_s")


def train_args(model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "aha.cli", "train", f"model.path={model}", "task.name=tests.toy_task:ToyTask",
            "task.options={count: 8}", "rewards=[{name: 'tests.test_grpo:vowel_share'}]", "steps=12",
            "batch.prompts_per_step=2", "batch.samples_per_prompt=4", "batch.micro_batch_size=4",
            "rollout.max_new_tokens=12", "rollout.stop=[]", "optim.lr=3e-3", "checkpoint_every=1",
            "run.progress=false", f"run.out_dir={out}"]


def metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


def run(cmd: list[str], kill_after: float | None, sig: int) -> int:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
    return proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="aha-crash-"))
    model = work / "model"
    subprocess.run([sys.executable, "-m", "aha.cli", "init-model", "--size", "nano", "--vocab-size", "400",
                    "--hidden", "64", "--layers", "2", "--intermediate", "128", "--out", str(model)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    t0 = time.time()
    assert run(train_args(model, work / "straight"), None, 0) == 0
    straight_seconds = time.time() - t0
    want = metrics(work / "straight")
    results = []
    for trial in range(args.trials):
        out = work / f"trial{trial}"
        sig = rng.choice([signal.SIGKILL, signal.SIGINT])
        interrupts, attempts, cmd = 0, 0, train_args(model, out)
        while True:
            attempts += 1
            delay = rng.uniform(0.5, straight_seconds) if attempts == 1 or rng.random() < 0.5 else None
            code = run(cmd, delay, sig)
            interrupts += code != 0
            if code == 0:
                break
            if attempts > 20:
                break
            # a run stopped before it wrote its folder has nothing to resume: it is started again
            cmd = train_args(model, out) + ([f"resume={out}"] if (out / "config.yaml").is_file() else [])
        same = code == 0 and metrics(out) == want
        results.append(same)
        print(f"trial {trial}: {signal.Signals(sig).name}, {interrupts} interrupts, {attempts} attempts: "
              f"{'equal to the straight run' if same else 'DIFFERENT'}")
    print(f"{sum(results)}/{len(results)} trials equal to the straight run")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
