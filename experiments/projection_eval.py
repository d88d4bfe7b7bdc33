#!/usr/bin/env python3
"""experiments/projection's evaluation: the model's projected step and phases (report --project's projection.csv)
against what the runs measured, per set of runs (one node; two hosts), held-out configurations apart.

Usage: projection_eval.py --out JSON --published "N MEDIAN%" --held-out "KEY,..." --set NAME RUNS.csv PROJ.csv ...
KEY: a layer configuration held out, E<E>-k<k>-T<T>-D<D>-F<F>-skew<S> (the configuration key without P and nodes).
Per step: error = projected / measured - 1 for each (configuration, strategy); the median and 90th percentile of
|error|, held out and development apart. Per phase: the median |error| over the (configuration, strategy) pairs where
the phase holds at least 2% of the measured step (smaller phases are the timer's noise). Ranking: for every pair of
strategies in a configuration whose repetitions do not overlap (every repetition of one faster than every
repetition of the other: a significant difference), whether the projection orders them the same way.
Writes JSON (report --project quotes it): the held-out step median and p90, counts, the published figures' median.
"""
import argparse
import csv
import json
import os
import socket
import statistics
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--published", default="")
ap.add_argument("--held-out", default="")
ap.add_argument("--set", nargs=3, action="append", metavar=("NAME", "RUNS", "PROJ"), required=True)
a = ap.parse_args()
held = {x for x in a.held_out.split(",") if x}


def cfg_key(r):
    return "P%s-n%s-E%s-k%s-T%s-D%s-F%s-skew%g" % (r["ranks"], r["nodes"], r["experts"], r["top_k"], r["tokens"],
                                                   r["hidden"], r["ffn"], float(r["skew"]))


def label(r):
    return r["op"] + (":" + r["params"].replace(";", ",") if r["params"] else "")


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = q * (len(xs) - 1)
    lo = int(i)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (i - lo)


summary = {"sets": {}}
all_held, all_dev, all_signed, rank_sig, rank_ok = [], [], [], 0, 0
for name, runs, proj in a.set:
    reps = {}  # (config, label) -> per-repetition step medians
    for r in csv.DictReader(open(runs)):
        if r["mode"] == "moe" and r["phase"] == "step":
            reps.setdefault((cfg_key(r), label(r)), []).append(float(r["t_med_us"]))
    P = {}
    for r in csv.DictReader(open(proj)):
        if r["source"] == "csv":
            P[(r["config"], r["strategy"], r["phase"])] = (float(r["projected_us"]), float(r["measured_us"]))
    print("\n== %s (%s) ==" % (name, runs))
    print("%-44s %-24s %12s %12s %8s %s" % ("configuration", "strategy", "projected", "measured", "error", "set"))
    step_err, phase_err, phase_signed = {}, {}, {}
    for (cfg, strat, ph), (pj, ms) in sorted(P.items()):
        if ph != "step" or ms <= 0:
            continue
        ho = cfg.split("-", 2)[2] in held  # P2-n1-E16-k2-...: the layer's part
        e = pj / ms - 1
        step_err[(cfg, strat)] = (e, ho)
        (all_held if ho else all_dev).append(abs(e))
        print("%-44s %-24s %10.0f us %10.0f us %+7.0f%% %s" % (cfg, strat, pj, ms, 100 * e, "held out" if ho else "dev"))
        for (c2, s2, p2), (pj2, ms2) in P.items():
            if c2 == cfg and s2 == strat and p2 != "step" and ms2 >= 0.02 * ms and ms2 > 0:
                phase_err.setdefault(p2, []).append(abs(pj2 / ms2 - 1))
                phase_signed.setdefault(p2, []).append(pj2 / ms2 - 1)
    print("\nper phase (phases of at least 2% of the step): median |error| [n], median signed error")
    for ph, es in sorted(phase_err.items(), key=lambda x: -len(x[1])):
        print("  %-14s %6.0f%% [%d] %+6.0f%%" % (ph, 100 * statistics.median(es), len(es),
                                               100 * statistics.median(phase_signed[ph])))
    # ranking where the measured difference is significant
    sig = ok = 0
    cfgs = sorted({c for c, _ in step_err})
    for cfg in cfgs:
        ss = sorted(s for c, s in step_err if c == cfg)
        for i, s1 in enumerate(ss):
            for s2 in ss[i + 1:]:
                r1, r2 = reps.get((cfg, s1), []), reps.get((cfg, s2), [])
                if len(r1) < 3 or len(r2) < 3 or not (max(r1) < min(r2) or max(r2) < min(r1)):
                    continue
                sig += 1
                meas_first = max(r1) < min(r2)
                proj_first = P[(cfg, s1, "step")][0] < P[(cfg, s2, "step")][0]
                ok += meas_first == proj_first
                if meas_first != proj_first:
                    print("  RANKING WRONG %s: measured %s %s %s, projected the other way" %
                          (cfg, s1, "<" if meas_first else ">", s2))
    rank_sig += sig
    rank_ok += ok
    h = [abs(e) for e, ho in step_err.values() if ho]
    d = [abs(e) for e, ho in step_err.values() if not ho]
    hs = [e for e, ho in step_err.values() if ho]  # signed: a bias shows as one sign
    all_signed.extend(hs)
    under = sum(e < 0 for e in hs)
    print("\n%s: step |error| held out: median %.0f%%, p90 %.0f%% (%d; %d under, %d over, median signed %+.0f%%); "
          "development: median %.0f%% (%d); ranking right in %d of %d significant pairs" %
          (name, 100 * pct(h, 0.5), 100 * pct(h, 0.9), len(h), under, len(hs) - under, 100 * pct(hs, 0.5),
           100 * pct(d, 0.5), len(d), ok, sig))
    summary["sets"][name] = {"held_out_median": pct(h, 0.5), "held_out_p90": pct(h, 0.9), "held_out_n": len(h),
                             "held_out_under": under, "held_out_signed_median": pct(hs, 0.5),
                             "dev_median": pct(d, 0.5), "dev_n": len(d), "ranking_significant": sig, "ranking_right": ok,
                             "phase_median": {p: statistics.median(e) for p, e in phase_err.items()},
                             "phase_signed_median": {p: statistics.median(e) for p, e in phase_signed.items()}}
npub, mpub = (a.published.split() + ["0", "nan"])[:2]
summary.update({"step_median_abs_error": pct(all_held, 0.5), "step_p90_abs_error": pct(all_held, 0.9),
                "configurations": len(all_held), "dev_step_median_abs_error": pct(all_dev, 0.5),
                "ranking_significant_pairs": rank_sig, "ranking_right": rank_ok,
                "published_figures": int(npub), "published_median_abs_error": float(mpub) / 100,
                "source": "experiments/projection on %s at %s" % (socket.gethostname(),
                                                                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))})
summary.update({"held_out_under": sum(e < 0 for e in all_signed), "held_out_signed_median": pct(all_signed, 0.5)})
print("\nheld out, all sets: step median |error| %.0f%%, p90 %.0f%% over %d (configuration, strategy; %d under, %d "
      "over, median signed %+.0f%%); ranking right in %d of %d significant pairs; published GPU figures: median "
      "|error| %s%% over %s" %
      (100 * summary["step_median_abs_error"], 100 * summary["step_p90_abs_error"], len(all_held),
       summary["held_out_under"], len(all_signed) - summary["held_out_under"], 100 * pct(all_signed, 0.5), rank_ok,
       rank_sig, mpub, npub))
def clean(o):  # JSON has no NaN: an empty set is null
    if isinstance(o, dict):
        return {k: clean(v) for k, v in o.items()}
    return None if isinstance(o, float) and o != o else o


tmp = a.out + ".tmp"
json.dump(clean(summary), open(tmp, "w"), indent=1)
os.replace(tmp, a.out)
