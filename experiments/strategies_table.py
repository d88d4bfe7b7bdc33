#!/usr/bin/env python3
"""The table of experiments/strategies and experiments/strategies-multinode.

Usage: strategies_table.py TIMED.csv [CHECKED.csv...]
Every row of every file must have check=ok (a failed check is not a measurement). TIMED.csv holds REPS bench
invocations per (ranks, skew), every strategy side by side in each; a repetition is one run_id. Per configuration
(ranks, nodes, skew, k) and strategy: the step (median over repetitions of each run's median step, min..max), the
ratio to tp2ep (median over repetitions of the ratio within the same run, min..max), the exposed comm time (the sum
of the comm phases' rows) and the hidden time (the sum of their hidden_us), the token bytes per rank of dispatch,
combine and their backward (max over ranks) and their ratio to tp2ep's.
"""
import csv
import statistics
import sys

TOKEN = ("dispatch", "combine", "combine_bwd", "dispatch_bwd")


def main():
    for f in sys.argv[1:]:
        for r in csv.DictReader(open(f)):
            if r["check"] != "ok":
                sys.exit("check=%s in %s %s P=%s k=%s (%s): not a valid measurement" % (
                    r["check"], r["op"], r["params"], r["ranks"], r["top_k"], f))
    runs = {}  # (ranks, nodes, skew, k) -> run_id -> spec -> {phase: row}
    for r in csv.DictReader(open(sys.argv[1])):
        spec = r["op"] + (":" + r["params"].replace(";", ",") if r["params"] else "")
        key = (int(r["ranks"]), int(r["nodes"]), float(r["skew"]), int(r["top_k"]))
        runs.setdefault(key, {}).setdefault(r["run_id"], {}).setdefault(spec, {})[r["phase"]] = r
    step = lambda x: float(x["step"]["t_med_us"]) / 1e3
    comm = lambda x: sum(float(v["t_med_us"]) for v in x.values() if v["kind"] == "comm") / 1e3
    hidden = lambda x: sum(float(v["hidden_us"]) for v in x.values() if v["kind"] == "comm") / 1e3
    tok = lambda x: sum(float(x[p]["bytes"]) for p in TOKEN) / 2**20
    hdr = (f"{'P':>2} {'nodes':>5} {'skew':>4} {'k':>2} {'strategy':<26} | {'step ms (min..max)':>26} | "
           f"{'/tp2ep (min..max)':>19} | {'comm ms':>8} {'hidden':>7} | {'tok MiB':>8} {'/tp2ep':>6} | reps")
    print(hdr)
    print("-" * len(hdr))
    for key in sorted(runs):
        reps = runs[key]
        specs = sorted({s for run in reps.values() for s in run}, key=lambda s: (s.split(":")[0] != "tp2ep", s))
        for s in specs:
            have = [run for run in reps.values() if s in run]
            st = [step(run[s]) for run in have]
            ratio = [step(run[s]) / step(run[ref]) for run in have for ref in ("tp2ep:chunks=1",) if ref in run]
            tp = [tok(run[ref]) for run in have for ref in ("tp2ep:chunks=1",) if ref in run]
            rr = "%5.2f (%5.2f..%5.2f)" % (statistics.median(ratio), min(ratio), max(ratio)) if ratio else "-"
            tr = "%6.2f" % (statistics.median([tok(run[s]) for run in have]) / statistics.median(tp)) if tp and \
                statistics.median(tp) > 0 else "-"
            print(f"{key[0]:>2} {key[1]:>5} {key[2]:>4g} {key[3]:>2} {s:<26} | {statistics.median(st):>9.1f} "
                  f"({min(st):>6.1f}..{max(st):>6.1f}) | {rr:>19} | "
                  f"{statistics.median([comm(run[s]) for run in have]):>8.2f} "
                  f"{statistics.median([hidden(run[s]) for run in have]):>7.2f} | "
                  f"{statistics.median([tok(run[s]) for run in have]):>8.2f} {tr:>6} | {len(have)}")
    print("step: median over repetitions of each run's median step (max over ranks per iteration); /tp2ep: the step")
    print("ratio to tp2ep (chunks=1) within each run, median over repetitions (min..max: the spread; 1 inside it is")
    print("no difference); comm ms: the comm phases' rows added (their exposed time; a rank waiting for a busier one")
    print("counts, with skew that is the load imbalance); hidden: the time their collectives were in flight while the")
    print("rank computed (chunks > 1), not in comm ms; tok MiB: bytes per rank of dispatch+combine and their backward,")
    print("max over ranks.")
    if len(sys.argv) > 2:
        n = sum(1 for f in sys.argv[2:] for _ in csv.DictReader(open(f)))
        print("correctness only (not timed): %d rows, every check ok" % n)


main()
