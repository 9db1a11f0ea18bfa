"""`python -m pipeline prepare/train`: bad input ends in ONE clear message naming the file (line or key) and the fix."""
import json
import subprocess
import sys

import pytest

from pipeline.cli import main
from pipeline.config import PROJECT_ROOT
from tests.support import sample_texts

GOOD = [json.dumps({"text": t}, ensure_ascii=False) for t in sample_texts("train", 40)]


def run_main(capsys, tmp_path, *overrides: str, train=None) -> tuple[int, str, str]:
    args = ["prepare", "--config", str(PROJECT_ROOT / "configs" / "default.yaml"),
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.validation=null", "--set", "data.test=null",
            "--set", "tokenizer.vocab_size=400"]
    if train is not None:
        args += ["--set", f"data.train={train}"]
    for o in overrides:
        args += ["--set", o]
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def one_message(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_missing_path(capsys, tmp_path):
    code, _, err = run_main(capsys, tmp_path, train=tmp_path / "nope.jsonl")
    msg = one_message(err)
    assert code == 2 and "nope.jsonl" in msg and "does not exist" in msg and "data.train" in msg


def test_empty_file(capsys, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    code, _, err = run_main(capsys, tmp_path, train=tmp_path / "empty.jsonl")
    msg = one_message(err)
    assert code == 2 and "empty.jsonl" in msg and "empty" in msg


def test_malformed_jsonl_line_named(capsys, tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(GOOD[:6] + ['{"text": "अर्धवट ओळ', *GOOD[6:12]]) + "\n", encoding="utf-8")
    code, _, err = run_main(capsys, tmp_path, train=p)
    msg = one_message(err)
    assert code == 2 and "bad.jsonl" in msg and "line 7" in msg and "malformed JSON" in msg


def test_missing_text_column_lists_columns(capsys, tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("".join(json.dumps({"body": json.loads(g)["text"], "id": i}, ensure_ascii=False) + "\n"
                         for i, g in enumerate(GOOD)), encoding="utf-8")
    code, _, err = run_main(capsys, tmp_path, train=p)
    msg = one_message(err)
    assert code == 2 and "data.text_field='text'" in msg and "'body'" in msg and "'id'" in msg


def test_invalid_utf8_names_line(capsys, tmp_path):
    p = tmp_path / "latin.jsonl"
    p.write_bytes(("\n".join(GOOD[:3]) + "\n").encode() + b'{"text": "caf\xe9 \xff"}\n')
    code, _, err = run_main(capsys, tmp_path, train=p)
    msg = one_message(err)
    assert code == 2 and "latin.jsonl" in msg and "line 4" in msg and "UTF-8" in msg


def test_all_documents_dropped(capsys, tmp_path):
    p = tmp_path / "en.jsonl"
    p.write_text("".join(json.dumps({"text": f"English sentence number {i} here."}) + "\n" for i in range(30)))
    code, _, err = run_main(capsys, tmp_path, train=p)
    msg = one_message(err)
    assert code == 2 and "every document was dropped" in msg and "not_devanagari" in msg


def test_unknown_key_and_wrong_type(capsys, tmp_path):
    code, _, err = run_main(capsys, tmp_path, "model.celll=gru")
    msg = one_message(err)
    assert code == 2 and "default.yaml" in msg and "model.celll" in msg and "allowed" in msg
    code, _, err = run_main(capsys, tmp_path, "train.max_epochs=many")
    msg = one_message(err)
    assert code == 2 and "train.max_epochs" in msg and "expected int" in msg


@pytest.mark.parametrize("vocab,words", [(20000, "larger than this corpus allows"), (100, "too small")])
def test_vocab_size_out_of_reach(capsys, tmp_path, vocab, words):
    p = tmp_path / "small.jsonl"
    p.write_text("\n".join(GOOD) + "\n", encoding="utf-8")
    code, _, err = run_main(capsys, tmp_path, f"tokenizer.vocab_size={vocab}", train=p)
    msg = one_message(err)
    assert code == 2 and f"tokenizer.vocab_size={vocab}" in msg and words in msg and "--set tokenizer.vocab_size=" in msg
    assert not list((tmp_path / "cache").glob("tokenizer/.*tmp*")) and not list((tmp_path / "cache").glob("prepared/*"))


@pytest.mark.slow
def test_prepare_subprocess_summary_then_cache_hit(tmp_path):
    p = tmp_path / "ok.jsonl"
    p.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in sample_texts("train", 150)),
                 encoding="utf-8")
    cmd = [sys.executable, "-m", "pipeline", "prepare", "--set", f"data.train={p}", "--set", "data.validation=null",
           "--set", "data.test=null", "--set", f"data.cache_dir={tmp_path / 'cache'}",
           "--set", "data.split_fractions=[0.2,0.2]", "--set", "tokenizer.vocab_size=500"]
    first = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "built" in first.stdout and "docs kept" in first.stdout and "pieces/word" in first.stdout
    second = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert "cache hit" in second.stdout
    sha = lambda out: [line for line in out.splitlines() if "sha256" in line]
    assert sha(first.stdout) == sha(second.stdout)
