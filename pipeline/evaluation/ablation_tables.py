"""Tables of the context ablation and the copy test (ablation.py): per kind, each model's Δ(c) with its
document-clustered interval, the share of its own context benefit that lies beyond c, its effective context, the
shuffled-context check, the copy effect by distance, and every model's paired difference from eval.paired_reference
on the same positions (bootstrap.py draws the same clusters for every model of a cell)."""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.config import EvalConfig
from pipeline.evaluation.bootstrap import cell_seed, interval, replicates
from pipeline.evaluation.distance import DISTANCE_BUCKETS
from pipeline.evaluation.intervals import MIN_N
from pipeline.evaluation.text_kinds import ALL

COPY_BUCKETS = tuple(b for b in DISTANCE_BUCKETS if b != "first")


def _cells(clusters: list[int], values: dict[str, np.ndarray], ec: EvalConfig, key: str,
           pairs: list[tuple[str, str, str]]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Mean and clustered interval of every series; and for each (name, a, b) the paired difference a − b."""
    reps = replicates(clusters, values, ec.bootstrap_replicates, cell_seed(ec.bootstrap_seed, key))
    means = {k: float(np.mean(v)) for k, v in values.items()}
    cells = {k: {"mean": means[k], **dict(zip(("low", "high"), interval(reps[k])))} for k in values}
    paired = {name: {"diff": means[a] - means[b], **dict(zip(("low", "high"), interval(reps[a] - reps[b])))}
              for name, a, b in pairs}
    return cells, paired


def _groups(kinds: list[str]) -> dict[str, list[str]]:
    groups = {k: [k] for k in kinds}
    if len(kinds) > 1 and ALL not in groups:
        groups[ALL] = list(kinds)
    return groups


def effective_context(delta: dict[int, float], threshold: float) -> int | None:
    """The smallest c ≥ 1 with Δ(c) ≤ threshold; None when even the longest c loses more (beyond the table)."""
    return next((c for c in sorted(delta) if c >= 1 and delta[c] <= threshold), None)


def ablation_tables(results: dict[str, dict[str, Any]], ec: EvalConfig) -> dict[str, Any]:
    """`results`: model -> context_ablation output (the same positions for every model)."""
    names = list(results)
    ref = ec.paired_reference if ec.paired_reference in names else None
    first = results[names[0]]
    out: dict[str, Any] = {"kinds": {}, "copy": {}}
    for group, members in _groups(list(first["kinds"])).items():
        infos = {m: [results[m]["kinds"][k] for k in members] for m in names}
        lengths = [c for c in infos[names[0]][0]["lengths"]
                   if all(c in i["lengths"] for i in infos[names[0]])]
        clusters = [c for i in infos[names[0]] for c in i["cluster"]]
        n = len(clusters)
        table: dict[str, Any] = {"positions": n, "clusters": len(set(clusters)), "lengths": lengths,
                                 "min_context_words": min(i["min_context_words"] for i in infos[names[0]]),
                                 "documents": len({d for i in infos[names[0]] for d in i["doc"]}),
                                 "models": {}, "paired": {}}
        out["kinds"][group] = table
        if n < MIN_N:
            continue
        values, pairs = {}, []
        for m in names:
            full = np.concatenate([np.asarray(i["full"]) for i in infos[m]])
            values[f"{m}|full"] = full
            for c in lengths:
                values[f"{m}|{c}"] = np.concatenate([np.asarray(i["loss"][str(c)]) for i in infos[m]]) - full
                if ref and m != ref:
                    pairs.append((f"{m}|{c}", f"{m}|{c}", f"{ref}|{c}"))
        cells, paired = _cells(clusters, values, ec, f"ablation/{group}", pairs)
        for m in names:
            delta = {c: cells[f"{m}|{c}"]["mean"] for c in lengths}
            full_mean = cells[f"{m}|full"]["mean"]
            benefit = delta.get(0)
            table["models"][m] = {
                "loss_full": cells[f"{m}|full"],
                "delta": {str(c): cells[f"{m}|{c}"] | {"share": (delta[c] / benefit if benefit else None)}
                          for c in lengths},
                "effective": effective_context(delta, ec.effective_nats),
                "effective_share": effective_context(delta, ec.effective_share * full_mean)}
            if m != ref and ref:
                table["paired"][m] = {str(c): paired[f"{m}|{c}"] for c in lengths}
        if len(members) == 1:
            table["shuffle"] = _shuffle_table(results, members[0], ec, ref)
    for group, members in _groups(list(first["copy"])).items():
        out["copy"][group] = _copy_table(results, members, ec, ref, group)
    return out


def _shuffle_table(results, kind: str, ec: EvalConfig, ref: str | None) -> dict[str, Any]:
    """On the seeded sample: Δ with the context beyond c shuffled (the words kept, their order gone) beside Δ with
    it replaced, both within the kind's minimum context m (text before it replaced in both)."""
    names = list(results)
    info = results[names[0]]["kinds"][kind]
    sample, lengths = info["shuffle"]["positions"], info["shuffle"]["lengths"]
    if len(sample) < MIN_N or not lengths:
        return {"positions": len(sample), "lengths": lengths, "models": {}}
    clusters = [info["cluster"][p] for p in sample]
    m_words = str(info["min_context_words"])
    values, pairs = {}, []
    for m in names:
        r = results[m]["kinds"][kind]
        full = np.asarray(r["full"])[sample]
        for c in lengths:
            values[f"{m}|shuffled|{c}"] = np.asarray(r["shuffle"]["loss"][str(c)]) - full
            values[f"{m}|replaced|{c}"] = np.asarray(r["loss"][str(c)])[sample] - full
        values[f"{m}|replaced|{m_words}"] = np.asarray(r["loss"][m_words])[sample] - full
    cells, _ = _cells(clusters, values, ec, f"shuffle/{kind}", pairs)
    return {"positions": len(sample), "clusters": len(set(clusters)), "lengths": lengths, "window": int(m_words),
            "models": {m: {"shuffled": {str(c): cells[f"{m}|shuffled|{c}"] for c in lengths},
                           "replaced": {str(c): cells[f"{m}|replaced|{c}"] for c in lengths + [int(m_words)]}}
                       for m in names}}


def _copy_table(results, members: list[str], ec: EvalConfig, ref: str | None, group: str) -> dict[str, Any]:
    names = list(results)
    infos = {m: [results[m]["copy"][k] for k in members] for m in names}
    base = infos[names[0]]
    buckets = np.array([b for i in base for b in i["bucket"]], dtype=object)
    clusters = np.array([c for i in base for c in i["cluster"]])
    effect = {m: np.concatenate([np.asarray(i["replaced"]) - np.asarray(i["as_is"]) for i in infos[m]])
              if infos[m] else np.zeros(0) for m in names}
    table: dict[str, Any] = {"targets": int(len(buckets)), "by_distance": {}}
    for b in COPY_BUCKETS:
        mask = buckets == b
        row: dict[str, Any] = {"n": int(mask.sum()), "clusters": int(len(set(clusters[mask].tolist()))),
                               "models": {}, "paired": {}}
        table["by_distance"][b] = row
        if mask.sum() < MIN_N:
            continue
        pairs = [(m, m, ref) for m in names if ref and m != ref]
        cells, paired = _cells(clusters[mask].tolist(), {m: effect[m][mask] for m in names}, ec,
                               f"copy/{group}/{b}", pairs)
        row["models"], row["paired"] = cells, paired
    return table


def _fmt(cell: dict | None, digits: int = 3) -> str:
    if not cell:
        return "—"
    mean = cell.get("mean", cell.get("diff"))
    return f"{mean:+.{digits}f} [{cell['low']:+.{digits}f}, {cell['high']:+.{digits}f}]"


def ablation_lines(tables: dict[str, Any], kinds: tuple[str, ...] = ("prose", ALL), at: tuple[int, ...] = (16, 64)
                   ) -> list[str]:
    """What `make run` prints below its table: per kind, each model's effective context and Δ at a few c, then the
    copy effect by distance, each with its 95 % clustered interval."""
    lines = ["How far back each model reads (context ablation, nats; pipeline/evaluation/ablation.py): "
             "Δ(c) = loss with only the last c words − loss with all, the rest replaced by other text "
             "(warm states); effective context = smallest c with Δ(c) ≤ 0.01 nats."]
    for kind in kinds:
        t = tables["kinds"].get(kind)
        if not t or not t["models"]:
            if t:
                lines.append(f"  {kind}: {t['positions']} positions (fewer than {MIN_N}: not shown)")
            continue
        lines.append(f"  {kind}: {t['positions']:,} positions in {t['documents']:,} documents "
                     f"(≥ {t['min_context_words']} words of context)")
        longest = max(t["lengths"])
        for m, r in t["models"].items():
            eff = r["effective"] if r["effective"] is not None else f"> {longest}"
            effs = r["effective_share"] if r["effective_share"] is not None else f"> {longest}"
            parts = [f"Δ({c}) {_fmt(r['delta'].get(str(c)))}" for c in at if str(c) in r["delta"]]
            lines.append(f"    {m:<20} effective context {eff} words (1 %: {effs})  " + "  ".join(parts)
                         + f"  benefit Δ(0) {r['delta']['0']['mean']:.2f}")
    copy = tables["copy"].get(ALL) or next(iter(tables["copy"].values()), None)
    if copy:
        which = ALL if ALL in tables["copy"] else next(iter(tables["copy"]))
        lines.append(f"  copy effect ({which}, {copy['targets']:,} repeated words): loss with every earlier "
                     "occurrence replaced − as is, by distance of the last one")
        shown = [b for b in COPY_BUCKETS if copy["by_distance"][b]["models"]]
        models = list(next((copy["by_distance"][b]["models"] for b in shown), {}))
        for m in models:
            lines.append(f"    {m:<20} " + "  ".join(
                f"{b}: {_fmt(copy['by_distance'][b]['models'][m], 2)} n={copy['by_distance'][b]['n']}"
                for b in shown))
    return lines


def ablation_metrics(tables: dict[str, Any], model: str) -> dict[str, float]:
    """Flat MLflow metrics for one model."""
    out: dict[str, float] = {}
    for kind, t in tables["kinds"].items():
        r = t["models"].get(model)
        if not r:
            continue
        longest = max(t["lengths"])
        out[f"ablation/{kind}/effective_context"] = float(r["effective"] if r["effective"] is not None
                                                          else 2 * longest)
        for c, cell in r["delta"].items():
            out[f"ablation/{kind}/delta_c{c}"] = cell["mean"]
        out[f"ablation/{kind}/loss_full"] = r["loss_full"]["mean"]
    for kind, t in tables["copy"].items():
        for b, row in t["by_distance"].items():
            if model in row["models"]:
                out[f"copy/{kind}/d{b.replace('-', '_').replace('+', 'plus')}"] = row["models"][model]["mean"]
    return out
