"""docs/benchmarks.md is rendered from bench/results.json, never typed: the renderer and the staleness check."""
import json

import pytest

from pipeline import bench_report
from pipeline.bench_report import BenchReportError, flatten, load_records, render

RECORD = {"name": "serve", "command": "BENCH_X=1 python -m pipeline bench --only serve --config configs/default.yaml",
          "commit": "abc1234-dirty", "date": "2026-12-05T02:53:15+00:00",
          "machine": {"cpu": "AMD EPYC", "cores": 2, "torch_threads": 2, "torch": "2.13.0+cpu", "python": "3.11.7",
                      "gpu": None},
          "figures": {"cold_50w": {"n": 100, "p50_ms": 77.5, "p99_ms": 95.72}, "ratio": 0.5612345,
                      "runs": [3094, 2695], "points": [{"batch": 16, "tokens_per_s": 6345.0}],
                      "big": {str(i): i for i in range(10)}, "note": "a | b"}}


def test_a_record_renders_its_provenance_and_every_figure():
    text = render([RECORD])
    assert text.startswith(bench_report.GENERATED)
    assert "| command | `BENCH_X=1 python -m pipeline bench --only serve --config configs/default.yaml` |" in text
    assert "| commit | abc1234-dirty |" in text
    assert "| date | 2026-12-05T02:53:15+00:00 |" in text
    assert "| machine | AMD EPYC, 2 cores, torch 2.13.0+cpu (2 threads), Python 3.11.7, GPU: none |" in text
    assert "| cold_50w | n 100, p50_ms 77.5, p99_ms 95.72 |" in text  # a small object: one row
    assert "| ratio | 0.5612 |" in text  # 4 significant digits
    assert "| runs | [3094, 2695] |" in text  # a list of numbers: one row
    assert "| points[0] | batch 16, tokens_per_s 6345 |" in text  # a list of objects: by index
    assert "| big.9 | 9 |" in text and "| big.0 | 0 |" in text  # a larger object: dotted keys
    assert "| note | a \\| b |" in text  # a pipe cannot break the table
    assert "[serve](#1-serve)" in text


def test_flatten_keeps_every_leaf():
    rows = dict(flatten({"a": {"b": {"c": 1, "d": [1, 2]}, "e": None}}))
    assert rows == {"a.b": "c 1, d [1, 2]", "a.e": "—"}


def test_missing_or_malformed_results_are_named(tmp_path, capsys):
    with pytest.raises(BenchReportError, match="does not exist; run `make bench`"):
        load_records(tmp_path / "results.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(BenchReportError, match="bad.json is not valid JSON"):
        load_records(bad)
    bad.write_text(json.dumps([{"name": "x", "figures": {}}]))
    with pytest.raises(BenchReportError, match="record 0 lacks command, commit, machine, date"):
        load_records(bad)
    assert bench_report.main(["--results", str(tmp_path / "none.json"), "--out", str(tmp_path / "b.md")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_write_then_check_then_stale(tmp_path):
    results, out = tmp_path / "results.json", tmp_path / "docs" / "benchmarks.md"
    results.write_text(json.dumps([RECORD]))
    assert bench_report.main(["--results", str(results), "--out", str(out)]) == 0
    assert bench_report.main(["--results", str(results), "--out", str(out), "--check"]) == 0
    results.write_text(json.dumps([RECORD, {**RECORD, "commit": "def5678"}]))  # a new record appended
    assert bench_report.main(["--results", str(results), "--out", str(out), "--check"]) == 1
    assert "def5678" not in out.read_text()  # --check writes nothing


def test_the_committed_report_matches_the_record():
    """docs/benchmarks.md is what bench/results.json gives: a record appended without `make bench-report` fails."""
    expected = render(load_records(bench_report.RESULTS))
    assert bench_report.REPORT.read_text(encoding="utf-8") == expected, \
        "docs/benchmarks.md is stale: run `make bench-report`"


def test_a_record_says_the_load_it_was_taken_under(tmp_path, monkeypatch):
    from pipeline import bench

    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results.json")
    entry = bench.record("serve", {"p50_ms": 12.0}, "python -m pipeline bench --only serve", 1.234)
    assert entry["machine"]["load_1min_at_start"] == 1.23
    assert "load_1min_at_start 1.23" in render(load_records(tmp_path / "results.json"))
    assert "load_1min_at_start" not in bench.record("serve", {}, "x")["machine"]  # not given, not invented
