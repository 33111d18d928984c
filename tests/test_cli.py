"""The `aha` command: help, version, unfinished commands say so, init-model end to end."""

from __future__ import annotations

import subprocess
import sys

from aha import __version__
from aha.cli import COMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_version():
    proc = subprocess.run([sys.executable, "-m", "aha.cli", "--version"], capture_output=True, text=True)
    assert proc.stdout.strip() == f"aha {__version__}"


def test_init_model_then_plain_transformers_loads_it(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Ann is a knight.\nBob is a knave.\n<think>x</think><answer>1</answer>\n" * 20)
    out = tmp_path / "model"
    assert main(["init-model", "--size", "nano", "--hidden", "32", "--layers", "1", "--intermediate", "64",
                 "--vocab-size", "300", "--corpus", str(corpus), "--out", str(out)]) == 0
    assert "parameters" in capsys.readouterr().out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert model.config.hidden_size == 32 and len(tok) == model.config.vocab_size
    # refuses to overwrite without --force, with a message instead of a traceback
    assert main(["init-model", "--corpus", str(corpus), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_bad_input_prints_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["init-model", "--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
