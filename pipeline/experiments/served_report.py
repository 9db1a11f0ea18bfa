"""reports/served.md (`make served` writes it; `python -m pipeline served-report --config configs/served.yaml`): the
served model on the test split it was evaluated on (the whole split in configs/served.yaml), from its run's
evaluation/results.json: top-1 and top-k and keystroke savings by kind of text for the network, its mixture and the
4-gram, each with a document-clustered interval and its paired difference from the 4-gram on the same words; the
issue's goals, met or not; and the time-to-quality curve (bench/time_to_quality.py run on the weights the run kept at
each validation, TTQ_RUN) with the 4-gram's level drawn."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.evaluation import acc_text, diff_text, sample_line
from pipeline.evaluation.keystroke_figures import ECHO_WINDOW, ksr_text
from pipeline.evaluation.tables import pooled_kind
from pipeline.experiments.figures import pyplot, save_figure
from pipeline.experiments.report import KEYSTROKES_HOW, _cells_table, _table, keystroke_tables_md

# issue 29's goals, written before the run
NETWORK_VS_NGRAM = 1.0     # the network alone: top-1 on all text at least the 4-gram's
MIXTURE_VS_NGRAM = 1.25    # the served mixture: top-1 at least 1.25 x the 4-gram's
MIXTURE_KSR = 0.45         # and at least 45 % keystroke savings with the config's slots


def curve_record(bench_results: Path, run_dir: Path) -> dict[str, Any] | None:
    """The newest time_to_quality record that scored this run's kept checkpoints."""
    if not bench_results.is_file():
        return None
    records = [r for r in json.loads(bench_results.read_text(encoding="utf-8"))
               if r.get("name") == "time_to_quality" and Path(str(r["figures"].get("run", ""))).name == run_dir.name]
    return records[-1] if records else None


def goals(results: dict[str, Any], net: str, mixed: str, ngram: str) -> list[list[str]]:
    """One row per goal: what it asks, the figures, met or not (the point estimate; the paired interval beside), on
    the pooled table (every scored word)."""
    pooled = pooled_kind(results)
    top1, keys = results["kinds"][pooled]["top1"], results.get("keystrokes", {}).get(pooled)
    ng = top1["models"][ngram]["acc"]
    rows = [[f"network top-1 ≥ {NETWORK_VS_NGRAM:g} × the 4-gram's ({pooled})",
             f"{acc_text(top1, net)} vs {acc_text(top1, ngram)}; paired {diff_text(top1, net)} points",
             "met" if top1["models"][net]["acc"] >= NETWORK_VS_NGRAM * ng else
             f"not met ({top1['models'][net]['acc'] / ng:.2f} ×)"],
            [f"mixture top-1 ≥ {MIXTURE_VS_NGRAM:g} × the 4-gram's ({pooled})",
             f"{acc_text(top1, mixed)}: {top1['models'][mixed]['acc'] / ng:.2f} ×; paired {diff_text(top1, mixed)} "
             "points", "met" if top1["models"][mixed]["acc"] >= MIXTURE_VS_NGRAM * ng else "not met"]]
    if keys:
        m = keys["models"][mixed]
        rows.append([f"mixture keystroke savings ≥ {100 * MIXTURE_KSR:.0f} % ({pooled})",
                     f"{ksr_text(m)} %; 4-gram "
                     f"{100 * keys['models'][ngram]['ksr']:.1f} %; paired {diff_text(keys, mixed)} points",
                     "met" if m["ksr"] >= MIXTURE_KSR else "not met"])
    return rows


FREQUENCY_BUCKETS = ((1, 100), (101, 1_000), (1_001, 10_000), (10_001, None))


def by_frequency_rank(cfg: Config, target: list[str], letter) -> dict[str, Any]:
    """Masks over the scored words (`target`, in scored order) by the word's frequency rank among the training text's
    words (FREQUENCY_BUCKETS; unseen: not in it), each within `letter`."""
    import numpy as np

    from pipeline.evaluation.assembly import train_word_counts

    rank = {w: r for r, (w, _) in enumerate(train_word_counts(cfg).most_common(), 1)}
    ranks = np.array([rank.get(w, 0) for w in target])
    return {f"{lo:,}–{hi:,}" if hi else f"> {lo - 1:,}": letter & (ranks >= lo) & ((ranks <= hi) if hi else True)
            for lo, hi in FREQUENCY_BUCKETS} | {"unseen": letter & (ranks == 0)}


def by_word_form(results: dict[str, Any], cfg: Config, order: list[str], ngram: str) -> list[str]:
    """Where the network gains or loses against the n-gram, on the same words (every scored word with a letter, all
    kinds together): by the target's frequency rank in the training text (unseen: not in it) and by how many pieces
    the tokenizer cuts it into. Diagnostics on the evaluated hits, not one-factor checks."""
    import dataclasses

    import numpy as np

    from pipeline.corpus.prepare import document_sources, documents, prepare
    from pipeline.corpus.tokenizer import Tokenizer
    from pipeline.evaluation import sampled_targets
    from pipeline.evaluation.text_kinds import cell, hit_array, scored_words

    docs = documents(cfg, "test")
    tokens, targets, chosen, _ = sampled_targets(docs, cfg.eval)
    words = scored_words(tokens, targets, chosen, document_sources(cfg, "test"), cfg.eval)
    target = [tokens[d][targets[d][i]] for d, idx in enumerate(chosen) for i in idx]  # scored_words' order
    hits = {m: hit_array(results["models"][m]["hits"]["top1"]) for m in order}
    ec = dataclasses.replace(cfg.eval, paired_reference=ngram)
    tok = Tokenizer(prepare(cfg, log=lambda *a: None).tokenizer_path)
    pieces = np.array([len(p) for p in tok.encode_batch(target)])
    letter = ~words.numeral
    by_rank = by_frequency_rank(cfg, target, letter)
    by_pieces = {f"{n} piece{'s' if n > 1 else ''}": letter & (pieces == n) for n in (1, 2)} | {
        "3+ pieces": letter & (pieces >= 3)}
    L = ["## Where the network stands against the 4-gram", "",
         "Top-1 on the same words (all kinds, numerals apart), split by the target's frequency rank among the "
         "training text's words and by how many pieces the tokenizer cuts it into; rows `− " + ngram + "` are paired "
         "differences in points. Diagnostics of the evaluated hits, not one-factor checks.", ""]
    for title, masks in (("by training frequency rank", by_rank), ("by pieces per word", by_pieces)):
        table = {b: cell(words, m, hits, ec, f"served-{b}") for b, m in masks.items()}
        L += [f"**{title}**", ""] + _cells_table(table, list(table), order, ngram) + [""]
    return L


def one_factor_record(bench_results: Path, run_dir: Path) -> dict[str, Any] | None:
    """The newest time_to_quality record of a one-factor check against this run (bench/time_to_quality.py,
    one_factor: this run first in TTQ_RUN)."""
    if not bench_results.is_file():
        return None
    records = [r for r in json.loads(bench_results.read_text(encoding="utf-8"))
               if r.get("name") == "time_to_quality" and r["figures"].get("reference") == run_dir.name]
    return records[-1] if records else None


# written before the checks ran (issue 29): what a one-factor result is taken to say
ONE_FACTOR_RULE = ("A setting limits the network at this budget when changing it alone, at the same training time on "
                   "the same 2 cores, raises top-1 on all text: the paired difference from the served run has its "
                   "95 % interval above 0. An interval below 0: the change costs more than it gives at this "
                   "budget. Otherwise: no effect detectable on these words. Data is asked the other way round (the "
                   "corpus is all there is): half the training documents, the tokenizer unchanged; an interval below "
                   "0 says data limits the network (more would still help), one around 0 says it does not.")


WEIGHTS_SAID = {"best.ckpt": "best.ckpt: those it evaluates and serves",
                "last.ckpt": "last.ckpt: at the end of its schedule, the last steps included"}


def _changed(run: dict[str, Any], ref: dict[str, Any]) -> str:
    said = [f"{what} {ref[key]:,} → {run[key]:,}" for key, what in (("vocab", "pieces"), ("hidden", "hidden"))
            if run[key] != ref[key]]
    share, ref_share = run.get("train_fraction", 1.0), ref.get("train_fraction", 1.0)
    if share != ref_share:
        said.append(f"training documents {ref_share:.0%} → {share:.0%}")
    return ", ".join(said) or "nothing"


def one_factor_section(record: dict[str, Any] | None, run_dir: Path) -> list[str]:
    L = ["## What limits the network: one-factor checks", ""]
    if record is None:
        return L + ["Not run yet. Train a variant that changes one setting, with the steps that fill the same time "
                    "(e.g. `python -m pipeline train --config configs/served.yaml --set name=served-vocab16k --set "
                    "tokenizer.vocab_size=16000 --set train.max_steps=N`), then score both:", "",
                    f"    TTQ_RUN={run_dir},runs/<variant> TTQ_SAMPLE_WORDS=10000 python -m pipeline bench --only "
                    "time_to_quality --config configs/served.yaml", ""]
    f = record["figures"]
    ref, runs, ngram = f["reference"], f["runs"], f["ngram"]
    every = f["cells"]["all"]
    L += [ONE_FACTOR_RULE, "",
          f"Each run's weights ({WEIGHTS_SAID.get(f.get('weights', 'best.ckpt'), f.get('weights'))}) on a seeded, "
          f"word-weighted sample of {f['sample']['words']:,} test "
          f"words (`{record['command']}`, commit `{record['commit']}`). Top-1 in % with its clustered 95 % interval; "
          "differences in points, paired on the same words; log-probability in nats per word (tokenizer-free). "
          "Loss per piece of the run's own vocabulary (eval mode) on training and on validation text: a large gap says "
          "the model fits its training text better than new text.", ""]
    rows = []
    for name, r in runs.items():
        d = every["minus_first"].get(name)
        lp = f["logp_minus_first"].get(name)
        g = r["loss_per_piece"]
        rows.append([f"`{name}`", _changed(r, runs[ref]), f"{r['step']:,} / {r['max_steps']:,}",
                     f"{r['params'] / 1e6:.1f} M", _pct(every["top1"][name]),
                     "—" if d is None else _diff(d), _diff(every["minus_ngram"][name]),
                     "—" if lp is None else f"{lp['diff']:+.3f} [{lp['low']:+.3f}, {lp['high']:+.3f}]",
                     f"{g['train']:.2f} / {g['validation']:.2f}"])
    L += _table(["run", "changed", "steps", "params", "top-1, all", "− served", f"− {ngram}", "nats/word − served",
                 "loss/piece train / val"], rows) + [""]
    others = [n for n in runs if n != ref]
    L += ["By kind of text and by the word's training frequency rank: top-1 of the served run and of the 4-gram, and "
          "each variant's paired difference from the served run.", ""]
    L += _table(["words", "n (documents)", "served", ngram, *others],
                [[key, f"{c['n']:,} ({c['documents']})", _pct(c["top1"][ref]), _pct(c["top1"][ngram]),
                  *(_diff(c["minus_first"][n]) for n in others)] for key, c in f["cells"].items()]) + [""]
    return L


def _pct(v: dict[str, float]) -> str:
    return f"{100 * v['acc']:.1f} [{100 * v['low']:.1f}, {100 * v['high']:.1f}]"


def _diff(v: dict[str, float]) -> str:
    return f"{100 * v['diff']:+.1f} [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]"


def curve_section(record: dict[str, Any] | None, run_dir: Path, figure: Path, link: str) -> list[str]:
    L = ["## Time to quality", ""]
    if record is None:
        return L + ["Not scored yet. The run kept its weights at every validation; score them with",
                    "", f"    TTQ_RUN={run_dir} TTQ_SAMPLE_WORDS=10000 python -m pipeline bench --only "
                    "time_to_quality --config configs/served.yaml", "", "and run this report again.", ""]
    f = record["figures"]
    kinds = list(f["curve"][0]["kinds"]) if f["curve"] else []
    L += [f"Each kept checkpoint scored on a seeded, word-weighted sample of {f['sample']['words']:,} test words "
          f"(seed {f['sample']['seed']}; `{record['command']}`, commit `{record['commit']}`), "
          "beside the 4-gram on the same words: top-1 in % with its clustered 95 % interval, and in brackets the "
          "network's paired difference from the 4-gram in points. * marks the weights the run evaluated and serves "
          "(its best validation loss).", ""]
    head = ["step", "pieces (M)", "val loss / piece"] + [
        f"{k} (n={f['curve'][0]['kinds'][k]['n']:,}; 4-gram {100 * f['curve'][0]['kinds'][k]['ngram']['acc']:.1f})"
        for k in kinds]
    rows = []
    for p in f["curve"]:
        cells = []
        for k in kinds:
            c = p["kinds"].get(k)
            cells.append("—" if c is None else f"{100 * c['top1']['acc']:.1f} "
                         f"({diff_text({'paired': {'net': c['minus_ngram']}}, 'net')})")
        star = "*" if p["step"] == f.get("evaluated_step") else ""
        rows.append([f"{p['step']:,}{star}", f"{p['pieces'] / 1e6:.1f}", f"{p['val_loss']:.3f}", *cells])
    L += _table(head, rows) + [""]
    passed = f.get("passed_ngram", {})
    L += [("Passed the 4-gram (" + f["passed_rule"] + "): "
           + "; ".join(f"{k} at step {passed[k]['step']:,} ({passed[k]['pieces'] / 1e6:.1f} M pieces)" if k in passed
                       else f"{k} never" for k in kinds)) + ".", ""]
    plot_curve(f, figure)
    return L + [f"![time to quality]({link})", ""]


def plot_curve(figures: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    curve = figures["curve"]
    x = [p["pieces"] / 1e6 for p in curve]
    for i, kind in enumerate(curve[0]["kinds"] if curve else []):
        colour = f"C{i}"
        pts = [p["kinds"].get(kind) for p in curve]
        ax.plot(x, [100 * c["top1"]["acc"] for c in pts], "o-", color=colour, label=f"{kind} (network)")
        ax.fill_between(x, [100 * c["top1"]["low"] for c in pts], [100 * c["top1"]["high"] for c in pts],
                        color=colour, alpha=0.15)
        ax.axhline(100 * pts[-1]["ngram"]["acc"], color=colour, linestyle="--", linewidth=1,
                   label=f"{kind} (4-gram)")
    ax.set_xlabel("pieces read in training (millions)")
    ax.set_ylabel("top-1 %")
    ax.set_title(f"Served network's top-1 on {figures['sample']['words']:,} sampled test words; dashed: the 4-gram")
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def speed_section(results: dict[str, Any], order: list[str]) -> list[str]:
    """How long each model's top-k pass and typist took in this run (wall clock of the run's own progress bars: a
    run paused or sharing its cores shows slower than `make bench` measures on quiet cores)."""
    rows = []
    for name in order:
        r = results["models"][name]
        ks = r.get("keystrokes") or {}
        cells = [f"`{name}`"]
        for speed in (r.get("words_per_s"), ks.get("words_per_s")):
            cells.append(f"{speed:,.0f} words/s ({r['words'] / speed / 60:.1f} min)" if speed else "—")
        beam = r.get("beam") or {}
        cells.append(", ".join(f"{k} {v:,}" for k, v in beam.items()) if beam else "—")
        rows.append(cells)
    return ["## How long it took", "",
            "Each model's top-k pass over the scored words and its typist, as this run timed them (the run's own wall "
            "clock; `make bench` times them on quiet cores: the `mixture_speed` and `typist` records). The search "
            "counts: rows searched, searched again wider, left unproven at the widest beam.", ""] + \
        _table(["model", "top-k pass", "typist", "search"], rows) + [""]


def write(cfg: Config, run_dir: Path, out: Path, bench_results: Path, config_file: str) -> Path:
    results_file = run_dir / "evaluation" / "results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"{results_file} does not exist: the served model has not been evaluated; run "
                                "`make served` (it resumes a killed run) first")
    results = json.loads(results_file.read_text(encoding="utf-8"))
    names = list(results["models"])
    ngram, mixed = results.get("paired_reference"), next((n for n in names if "+" in n), None)
    if ngram not in names or mixed is None:
        raise ValueError(f"{results_file} has no paired differences from the n-gram or no mixture (models "
                         f"{names}, paired_reference {ngram!r}): the served report needs the run evaluated with "
                         "eval.paired_reference set to the n-gram (configs/served.yaml does); run `make served` again")
    net = names[0]
    order = [net, mixed, ngram]
    k = results["k"]
    L = ["# The served model", "",
         f"Generated by `python -m pipeline served-report --config {config_file}` from "
         f"`{results_file}` (`make served`); every figure comes from that run.", "",
         f"- model: {cfg.model.num_layers} × {cfg.model.hidden_dim} {cfg.model.cell.upper()}, "
         f"{cfg.tokenizer.vocab_size:,} pieces, {cfg.model.output} output; registered as "
         f"`{cfg.tracking.registered_name}`",
         f"- test split `{cfg.data.test}`: {sample_line(results['models'][net])}",
         f"- models: `{net}` (the network alone), `{mixed}` (what the server suggests from), `{ngram}` (the "
         "Kneser-Ney n-gram on the same training text)",
         "- accuracies in % with a 95 % document-clustered bootstrap interval; every difference is paired on the same "
         f"words, minus `{ngram}`, in points", "", "## Goals (issue 29)", ""]
    L += _table(["goal", "figures", ""], goals(results, net, mixed, ngram)) + [""]
    L += [f"## Top-1 and top-{k} by kind of text", ""]
    for metric in ("top1", f"top{k}"):
        table = {kind: t[metric] for kind, t in results["kinds"].items()}
        L += [f"**{metric}**", ""] + _cells_table(table, list(table), order, ngram) + [""]
    L += by_word_form(results, cfg, order, ngram)
    if results.get("keystrokes"):
        L += [f"## Keystroke savings, W = {cfg.eval.keystroke_slots}", "", KEYSTROKES_HOW.format(window=ECHO_WINDOW),
              "", f"The typist's words: {sample_line(results['keystroke_sample'])}.", ""]
        L += keystroke_tables_md(results["keystrokes"])
    L += speed_section(results, order)
    L += one_factor_section(one_factor_record(bench_results, run_dir), run_dir)
    L += curve_section(curve_record(bench_results, run_dir), run_dir, out.parent / out.stem / "time_to_quality.png",
                       f"{out.stem}/time_to_quality.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(L), encoding="utf-8")
    return out


def cli(args, cfg: Config) -> int:
    from pipeline.config import PROJECT_ROOT
    from pipeline.training.train import run_dir_for

    path = write(cfg, run_dir_for(cfg), Path(args.out), PROJECT_ROOT / "bench" / "results.json", args.config)
    print(f"wrote {path}")
    return 0
