"""One-factor check behind the experiment report (run from the project root after `make experiment`):
does the tanh RNN's verse curve at c = 256 sit below its whole-document point because a truncated context starts
from a zero state? On 3,000 seeded verse positions of the curve, the same 256 words are read from a zero state and
from the state after an unrelated warm-up text (a validation prose paragraph); top-1 with document-clustered
intervals and paired differences from the zero start -> reports/experiment/warm_start.json.

    python bench/warm_start.py
"""
import json, random, sys
import numpy as np, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
torch.set_grad_enabled(False); torch.set_num_threads(2)
from pipeline.config import load_config
from pipeline.corpus.prepare import documents, document_sources
from pipeline.evaluation import NeuralScorer, sampled_targets
from pipeline.evaluation.text_kinds import scored_words, curve_positions, hit_array
from pipeline.evaluation.predict import select_state
from pipeline.evaluation.bootstrap import clustered_cell
from pipeline.checkpoints import load_checkpoint
cfg = load_config("configs/experiment.yaml", ["train.num_threads=1"])
docs = documents(cfg, "test"); src = document_sources(cfg, "test")
t, tg, ch, _ = sampled_targets(docs, cfg.eval)
w = scored_words(t, tg, ch, src, cfg.eval)
pos = curve_positions(w, cfg.eval)["verse"]
rng = random.Random("warm-start-1234")
idx = sorted(rng.sample(range(len(pos)), 3000))
sel = pos[idx]
vdocs, vsrc = documents(cfg, "validation"), document_sources(cfg, "validation")
warm_text = next(d for d, s in zip(vdocs, vsrc) if s == "mahasquad-wiki-paragraphs" and len(d.split()) > 80)
rows = {"rnn_tanh": "cc51968bba6864ec", "lstm": "81af65b45150ae4e"}
summary = json.load(open("reports/experiment/summary.json"))
out = {"positions": len(sel), "of": int(len(pos)), "warm_words": len(warm_text.split())}
for name, h in rows.items():
    import glob
    ck = glob.glob(f"runs/experiment-{name}-*-{h}/checkpoints/best.ckpt")[0]
    sc = NeuralScorer(load_checkpoint(ck), cfg.eval, name)
    warm_ids = sc._encode(warm_text.split(), True)[0]
    _, warm_state = sc.model(torch.tensor([warm_ids]), None)
    at = [(int(w.doc[p]), int(w.word[p])) for p in sel]
    gold = [t[d][tg[d][i]] for d, i in at]
    ctx = [sc._encode(t[d][tg[d][i - 256]:tg[d][i]], False)[0] for d, i in at]
    res = {}
    for start in ("zero", "warm"):
        top = {}
        by_len = {}
        for j, r in enumerate(ctx):
            by_len.setdefault(len(r), []).append(j)
        for n, js in by_len.items():
            for a in range(0, len(js), 128):
                part = js[a:a + 128]
                x = torch.tensor([ctx[j] for j in part])
                s0 = None
                if start == "warm":
                    s0 = tuple(s.expand(-1, len(part), -1).contiguous() for s in warm_state) if isinstance(warm_state, tuple) else warm_state.expand(-1, len(part), -1).contiguous()
                feats, st = sc.model(x, s0)
                lp = sc.model.log_probs(feats[:, -1:]).squeeze(1)
                for b0 in range(0, len(part), 64):
                    sl = torch.arange(b0, min(b0 + 64, len(part)))
                    for j, row in zip(part[b0:b0 + 64], sc.pred.top_words(select_state(st, sl), lp.index_select(0, sl), 1)):
                        top[j] = row[0][0] if row else None
        res[start] = np.array([top[j] == g for j, g in enumerate(gold)])
    allhits = hit_array(summary["rows"][[r["name"] for r in summary["rows"]].index(name)]["test"]["context"]["verse"]["hits"]["all"])[idx]
    res["all"] = allhits
    c = clustered_cell(w.cluster[sel].tolist(), {k: v for k, v in res.items()}, 1000, 1234, f"warm/{name}", "zero")
    out[name] = c
    print(name, {k: (round(100 * v["acc"], 1), round(100 * v["low"], 1), round(100 * v["high"], 1)) for k, v in c["models"].items()},
          {k: (round(100 * v["diff"], 1), round(100 * v["low"], 1), round(100 * v["high"], 1)) for k, v in c["paired"].items()}, flush=True)
json.dump(out, open("reports/experiment/warm_start.json", "w"), indent=1)
