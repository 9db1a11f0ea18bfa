"""Tables of an evaluation (DESIGN §7): the tables by kind of text and the context curves over every model's hits,
MLflow metric names, the printed tables, and the files (JSON, CSV, plots) an evaluation writes."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from pipeline.config import EvalConfig
from pipeline.evaluation import plots
from pipeline.evaluation.ablation_tables import ablation_lines, ablation_metrics, ablation_tables
from pipeline.evaluation.distance import DISTANCE_BUCKETS, POSITION_BUCKETS, metric_suffix
from pipeline.evaluation.keystroke_figures import keystroke_lines, keystroke_metrics, keystroke_rows, keystroke_tables
from pipeline.evaluation.keystrokes import typist_sample
from pipeline.evaluation.sampling import sample_line, sampled_targets
from pipeline.evaluation.text_kinds import curve_tables, kind_tables, scored_words


def kind_metrics(results: dict[str, Any], name: str, split: str) -> dict[str, float]:
    """One model's figures from the tables by kind: test/prose/top1, test/prose/top1_d17_64, test/verse/numerals_top1,
    test/verse/top1_ctx16, and its paired difference from eval.paired_reference: test/prose/top1_d17_64_minus_rnn_tanh."""
    m: dict[str, float] = {}
    ref, k = results.get("paired_reference"), results["k"]

    def put(key: str, c: dict[str, Any]) -> None:
        if name in c["models"]:
            m[f"{split}/{key}"] = c["models"][name]["acc"]
        if name in c["paired"]:
            m[f"{split}/{key}_minus_{ref}"] = c["paired"][name]["diff"]

    for kind, t in results.get("kinds", {}).items():
        put(f"{kind}/top1", t["top1"])
        put(f"{kind}/top{k}", t[f"top{k}"])
        put(f"{kind}/numerals_top1", t["numerals"])
        for b, c in t["by_distance"].items():
            put(f"{kind}/top1_{metric_suffix(b)}", c)
    for kind, t in results.get("curves", {}).items():
        for c_len, c in t["curve"].items():
            put(f"{kind}/top1_ctx{c_len}", c)
    return m


def flat_metrics(result: dict[str, Any], split: str, k: int) -> dict[str, float]:
    """MLflow-ready names: test/top1, test/top5_d17_64, test/top1_pos65_256, probe/recall_d32 (all words, all
    kinds; kind_metrics adds the figures by kind)."""
    m: dict[str, float] = {f"{split}/words": result["words"]} if "words" in result else {}
    for key in ("top1", f"top{k}", "word_ppl"):
        if result.get(key) is not None:
            m[f"{split}/{key}"] = result[key]
    for table, prefix in (("by_distance", ""), ("by_position", "pos")):
        for b, row in result.get(table, {}).items():
            for key in ("top1", f"top{k}"):
                if row.get(key) is not None:
                    suffix = metric_suffix(b) if not prefix else "pos" + metric_suffix(b)[1:]
                    m[f"{split}/{key}_{suffix}"] = row[key]
    for kind, by_d in result.get("probes", {}).get("kinds", {}).items():
        for dist, row in by_d.items():
            suffix = "" if dist == "all" else f"_d{dist}"
            m[f"probe/{kind}{suffix}"] = row["accuracy"]
            for key in ("balanced", "margin"):
                if row.get(key) is not None:
                    m[f"probe/{kind}_{key}{suffix}"] = row[key]
    return m


def add_kind_tables(results: dict[str, Any], docs: list[str], sources: list[str] | None, ec: EvalConfig) -> None:
    """results["kinds"] and results["curves"] over every model in `results` (scored on the same words), and each
    model's figures by kind in its metrics."""
    tokens, targets, chosen, _ = sampled_targets(docs, ec)  # the words every model was scored on
    words = scored_words(tokens, targets, chosen, sources or [""] * len(docs), ec)
    models = results["models"]
    results["paired_reference"] = ec.paired_reference
    results["kinds"] = kind_tables(words, {m: r["hits"] for m, r in models.items()}, ec)
    results["curves"] = curve_tables(words, {m: r["context"] for m, r in models.items() if r.get("context")}, ec)
    typed = {m: r["keystrokes"] for m, r in models.items() if r.get("keystrokes")}
    if typed:  # the typist's own words (eval.keystroke_words), which the output states
        tokens, targets, chosen, results["keystroke_sample"] = typist_sample(docs, ec)
        words = scored_words(tokens, targets, chosen, sources or [""] * len(docs), ec)
    results["keystrokes"] = keystroke_tables(words, typed, ec, ec.paired_reference)
    ablated = {m: r["ablation"] for m, r in models.items() if r.get("ablation")}
    if ablated:
        results["ablation"] = ablation_tables(ablated, ec)
    for name, r in models.items():
        r.setdefault("metrics", {}).update(kind_metrics(results, name, results["split"]))
        r["metrics"].update(keystroke_metrics(results["keystrokes"], name, results["split"]))
        if name in ablated:
            r["metrics"].update({f"{results['split']}/{k}": v
                                 for k, v in ablation_metrics(results["ablation"], name).items()})



def write_outputs(results: dict[str, Any], out: Path) -> list[Path]:
    """results.json, the CSV tables and the plots of an evaluation, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    k = results["k"]
    files = [out / "results.json"]
    files[0].write_text(json.dumps(results, indent=1, ensure_ascii=False))
    cols = ("top1", f"top{k}")
    ref = results.get("paired_reference")
    rows = {"summary.csv": [["model", "words", "top1", f"top{k}", "word_ppl", "words_per_s"]],
            "by_distance.csv": [["model", "bucket", "n", *cols]],
            "by_position.csv": [["model", "bucket", "n", *cols]],
            "kinds.csv": [["kind", "table", "bucket", "n", "documents", "model", "top1", "low95", "high95",
                           f"minus_{ref}", "diff_low95", "diff_high95"]],
            "context.csv": [["kind", "context_words", "n", "documents", "model", "top1", "low95", "high95",
                             f"minus_{ref}", "diff_low95", "diff_high95"]],
            "probes.csv": [["model", "kind", "distance", "n", "accuracy", "chance", "low95", "high95", "balanced",
                            "balanced_low95", "balanced_high95", "margin"]],
            "keystrokes.csv": keystroke_rows(results.get("keystrokes", {}), ref)}
    for name, r in results["models"].items():
        rows["summary.csv"].append([name, r["words"], r["top1"], r[f"top{k}"], r["word_ppl"], r["words_per_s"]])
        for table in ("by_distance", "by_position"):
            for b, row in r[table].items():
                rows[f"{table}.csv"].append([name, b, row["n"], *(row[c] for c in cols)])
        for kind, by_d in r.get("probes", {}).get("kinds", {}).items():
            for dist, row in by_d.items():
                rows["probes.csv"].append([name, kind, dist, row["n"], row["accuracy"], row["chance"], row["low"],
                                           row["high"], *(row.get(c) for c in ("balanced", "balanced_low",
                                                                               "balanced_high", "margin"))])

    def cell_rows(prefix: list, c: dict[str, Any]) -> list[list]:
        out_rows = []
        for name, v in c["models"].items():
            p = c["paired"].get(name, {})
            out_rows.append([*prefix, c["n"], c["documents"], name, v["acc"], v["low"], v["high"], p.get("diff"),
                             p.get("low"), p.get("high")])
        return out_rows or [[*prefix, c["n"], c["documents"], "", None, None, None, None, None, None]]

    for kind, t in results.get("kinds", {}).items():
        for table in ("top1", f"top{k}", "numerals"):
            rows["kinds.csv"] += cell_rows([kind, table, "all"], t[table])
        for table in ("by_distance", "by_position"):
            for b, c in t[table].items():
                rows["kinds.csv"] += cell_rows([kind, table, b], c)
        for b, c in t["same_documents"]["by_distance"].items():
            rows["kinds.csv"] += cell_rows([kind, "same_documents", b], c)
    for kind, t in results.get("curves", {}).items():
        for c_len, c in t["curve"].items():
            rows["context.csv"] += cell_rows([kind, c_len], c)
    for fname, table in rows.items():
        with open(out / fname, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(table)
        files.append(out / fname)
    files += plots.write_all(results, out)
    return files


CELL = 24  # characters of a printed table cell: "+100.0 [+100.0, +100.0]" and a space


def acc_text(c: dict[str, Any], name: str) -> str:
    """'12.3 [10.1, 14.8]': a model's accuracy in % with its clustered 95 % interval, '—' under MIN_N words."""
    v = c["models"].get(name)
    return "—" if v is None else f"{100 * v['acc']:.1f} [{100 * v['low']:.1f}, {100 * v['high']:.1f}]"


def diff_text(c: dict[str, Any], name: str) -> str:
    """'+3.2 [+0.4, +6.1]': a model's paired difference from the reference in points, '—' when not computed."""
    v = c["paired"].get(name)
    return "—" if v is None else f"{100 * v['diff']:+.1f} [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]"


def pooled_kind(results: dict[str, Any]) -> str | None:
    """The kinds table that holds every scored word: the pooled "all" row, or the only kind."""
    kinds = results.get("kinds", {})
    return "all" if "all" in kinds else next(iter(kinds), None)


def kind_lines(results: dict[str, Any], kind: str, names: list[str] | None = None, positions: bool = True,
               width: int = 22) -> list[str]:
    """One kind's top-1 tables as text: by distance (with the paired differences), the same-documents distance
    table, by position, numerals."""
    t, ref = results["kinds"][kind], results.get("paired_reference")
    names = names or list(results["models"])
    lines = [f"{kind}: {t['documents']:,} documents, {t['words']:,} scored words ({t['top1']['n']:,} with a letter, "
             f"{t['numerals']['n']:,} numerals); top-1 % [95 % document-clustered bootstrap]"]
    tables = [("by distance to the word's last occurrence (words)", t["by_distance"], DISTANCE_BUCKETS)]
    same = t["same_documents"]
    if same["buckets"]:
        tables.append((f"by distance, only the {same['documents']} documents with words in every bucket shown",
                       same["by_distance"], same["buckets"]))
    if positions:
        tables.append(("by words of context before the target", t["by_position"], POSITION_BUCKETS))
    for title, table, order in tables:
        counts = [f"{table[b]['n']} ({table[b]['documents']})" for b in order]
        lines += [f"  {title}", f"  {'':<{width}}" + "".join(f"{b:>{CELL}}" for b in order),
                  f"  {'n (documents)':<{width}}" + "".join(f"{c:>{CELL}}" for c in counts)]
        lines += [f"  {name:<{width}}" + "".join(f"{acc_text(table[b], name):>{CELL}}" for b in order) for name in names]
        lines += [f"  {f'{name} − {ref}':<{width}}" + "".join(f"{diff_text(table[b], name):>{CELL}}" for b in order)
                  for name in names if any(name in table[b]["paired"] for b in order)]
    if t["numerals"]["n"]:
        lines.append(f"  numerals (n={t['numerals']['n']}): " + "; ".join(f"{name} {acc_text(t['numerals'], name)}"
                                                                        for name in names))
    return lines


def keystroke_block(results: dict[str, Any]) -> list[str]:
    """The keystroke tables, after the typist's sample when it is smaller than the evaluation's."""
    sample = results.get("keystroke_sample")
    head = [f"typist: {sample_line(sample)}"] if sample and sample["words"] < sample["words_available"] else []
    return head + keystroke_lines(results["keystrokes"])


def format_tables(results: dict[str, Any]) -> str:
    """The summary, then per text kind top-1 by distance and by position, and the context-length curves: n and
    documents per cell, a document-clustered 95 % interval on every accuracy, paired differences from the
    reference model, "—" where fewer than MIN_N targets."""
    k, models = results["k"], results["models"]
    first = next(iter(models.values()))
    pooled = pooled_kind(results)
    p = results["kinds"][pooled] if pooled else None
    lines = [sample_line(first), "",
             f"{'model':<22}{'words':>8}{'top-1 % [95% CI]':>22}{f'top-{k} % [95% CI]':>22}{'word ppl':>12}"]
    for name, r in models.items():
        lines.append(f"{name:<22}{p['top1']['n'] if p else r['words']:>8}"
                     f"{acc_text(p['top1'], name) if p else '—':>22}{acc_text(p[f'top{k}'], name) if p else '—':>22}"
                     f"{r['word_ppl'] or math.nan:>12.1f}")
    lines.append("words with a letter (numerals apart), all kinds; word ppl over every scored word")
    if results.get("keystrokes"):
        lines += [""] + keystroke_block(results)
    for kind in results.get("kinds", {}):
        lines += [""] + kind_lines(results, kind)
    for kind, t in results.get("curves", {}).items():
        cs = list(t["curve"])
        on = f"all {t['positions']:,}" if t.get("eligible", t["positions"]) == t["positions"] else \
            f"a seeded sample of {t['positions']:,} (eval.curve_positions) of the {t['eligible']:,}"
        lines += ["", f"{kind}: top-1 % when only the last c words are read, on {on} scored words "
                      f"with >= {t['min_context_words']} words before them, in {t['documents']} documents",
                  f"{'c':<22}" + "".join(f"{c:>{CELL}}" for c in cs)]
        lines += [f"{name:<22}" + "".join(f"{acc_text(t['curve'][c], name):>{CELL}}" for c in cs)
                  for name in models if name in next(iter(t["curve"].values()))["models"]]
    if results.get("ablation"):
        lines += [""] + ablation_lines(results["ablation"], tuple(results["ablation"]["kinds"]))
    return "\n".join(lines)


def print_table(results: dict[str, Any]) -> None:
    print(format_tables(results))
