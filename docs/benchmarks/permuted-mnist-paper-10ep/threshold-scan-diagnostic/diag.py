"""Diagnostic (issue 9): scan the same trained CLNP models with several threshold-search settings; the run itself continues with the config's. Output: one JSON line per setting and per-layer accuracy curves."""
import json, sys, math
import torch
import unforget.methods.clnp as C
from unforget.methods.graceful import search_thresholds, threshold_candidates

orig = C.CLNP._sparsify
LOG = open(sys.argv[1], "a")

def patched(self, task, cand, model, floor):
    activity, snap = model["activity"], model["state"]
    def evaluate(th):
        self._release(task.id, self._inactive(cand, activity, th))
        acc = self.trainer.accuracy(self.model, task, "val")
        self._restore(snap)
        return acc
    def kept(th):
        return [int((c & (a.to(c.device) > t)).sum()) for c, a, t in zip(cand, activity, th)]
    n = [int(c.sum()) for c in cand]
    for steps in (20, 100, 400):
        cands = [threshold_candidates(a.to(c.device)[c], steps) for a, c in zip(activity, cand)]
        for name, order in (("last-first", None), ("first-last", list(range(len(cand))))):
            th, acc, trace = search_thresholds(evaluate, cands, floor, order)
            rec = dict(task=task.id, steps=steps, order=name, kept=kept(th), of=n, acc=acc, floor=floor, evals=len(trace))
            print(json.dumps(rec), file=LOG, flush=True)
    # per-layer curves: kept units vs accuracy, other layer at 0
    for i in range(len(cand)):
        cands = threshold_candidates(activity[i].to(cand[i].device)[cand[i]], 40)
        curve = []
        for t in cands:
            th = [0.0] * len(cand); th[i] = t
            curve.append((kept(th)[i], round(evaluate(th), 5)))
        print(json.dumps(dict(task=task.id, layer=i, curve=curve)), file=LOG, flush=True)
    return orig(self, task, cand, model, floor)

C.CLNP._sparsify = patched
from unforget.cli import main
sys.exit(main(sys.argv[2:]))
