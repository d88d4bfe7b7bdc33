#!/usr/bin/env python3
"""Recomputes projections of `report --project` by hand (docs/METHOD.md's formulas, written again here in Python,
independently of reports/project.c) and compares them with the projection.csv it wrote.

Usage: by_hand.py CLUSTER.json FIXTURE.csv PROJECTION.csv
Checked, phase by phase: agrs, tp2ep and dedup at the fixture's own configuration (P=2, one node, the routing skew
fitted from the fixture's busiest rank); the step of agrs, tp2ep, dedup and hier (nodes of 8) for the qwen3-30b-a3b
preset at T=4096 on 16 ranks (two nodes of 8: both link levels) and 64 ranks. TAP output; exit 1 on any difference above 1e-4 relative.
"""
import csv
import json
import math
import sys

cl = json.load(open(sys.argv[1]))
fixture = list(csv.DictReader(open(sys.argv[2])))
proj = list(csv.DictReader(open(sys.argv[3])))

V = lambda k: cl[k]["value"]
GPN, b, COPY, OVH = V("gpus_per_node"), V("elem_bytes"), V("copy_gbps"), V("phase_overhead_us")
PEAK, CM, CE = cl["gemm"]["tflops"], cl["gemm"]["rows"], cl["gemm"]["efficiency"]
INTRA, INTER = cl["intra"], cl["inter"]


def one_call(lnk, nbytes):  # us for one call of nbytes per rank on one level
    return 0.0 if nbytes <= 0 else lnk["lat_us"] + nbytes / (lnk["bw_gbps"] * 1e3)


def both(co, b_in, b_out):  # the node's links and the NIC at once: the slower one
    return max(one_call(INTRA[co], b_in), one_call(INTER[co], b_out))


def ring(co, B, P, G):
    if P < 2 or B <= 0:
        return 0.0
    return both(co, B, 0) if P <= G else both(co, B if G > 1 else 0, B / G)


def eff(m):
    m = max(m, 1)
    if m <= CM[0]:
        return CE[0]
    for i in range(1, len(CM)):
        if m <= CM[i]:
            f = (math.log(m) - math.log(CM[i - 1])) / (math.log(CM[i]) - math.log(CM[i - 1]))
            return CE[i - 1] + f * (CE[i] - CE[i - 1])
    return CE[-1]


def gemm(gflop, m):
    return 0.0 if gflop <= 0 else gflop * 1e3 / (PEAK * eff(m)) + OVH


def copy(rows, D):
    return 0.0 if rows <= 0 else rows * D * b / (COPY * 1e3) + OVH


def expert_shares(E, k, gamma):
    """expert e ~ (e+1)^-gamma of the pairs, none above 1/k"""
    w = [(e + 1) ** -gamma for e in range(E)]
    lo, hi = 0.0, 1.0
    while sum(min(hi * x, 1 / k) for x in w) < 1:
        hi *= 2
    for _ in range(100):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if sum(min(c * x, 1 / k) for x in w) < 1 else (lo, c)
    s = [min(hi * x, 1 / k) for x in w]
    tot = sum(s)
    return [x / tot for x in s]


def shares(E, k, P, gamma):  # rank r holds E/P consecutive experts
    s, El = expert_shares(E, k, gamma), E // P
    return [sum(s[r * El:(r + 1) * El]) for r in range(P)]


def fit_gamma(E, k, P, smax):
    if smax <= max(shares(E, k, P, 0)) + 1e-9:
        return 0.0
    lo, hi = 0.0, 30.0
    for _ in range(60):
        g = (lo + hi) / 2
        lo, hi = (g, hi) if max(shares(E, k, P, g)) < smax else (lo, g)
    return (lo + hi) / 2


def hitq(q, E, k):  # a token's k distinct experts reach a set holding share q of the pairs
    miss = 1.0
    for j in range(k):
        miss *= max(0.0, 1 - q * E / (E - j))
    return 1 - miss


ORDER = ["route", "layout", "permute", "dispatch", "experts_fwd", "unpermute", "combine", "gate", "shared_fwd",
         "gate_bwd", "combine_bwd", "unpermute_bwd", "experts_bwd", "permute_bwd", "dispatch_bwd", "shared_bwd",
         "route_bwd", "grad_sync"]
COMPUTE = {"route", "permute", "experts_fwd", "unpermute", "gate", "shared_fwd", "gate_bwd", "unpermute_bwd",
           "experts_bwd", "permute_bwd", "shared_bwd", "route_bwd"}


def project(strat, T, D, F, E, k, P, gamma):
    """every phase's projected time (the most any rank spends in it) and the step (the critical path), by the
    recipe of docs/METHOD.md: the strategy's messages per rank and level, the busiest rank per call and level, each
    rank's own compute, comm phases starting when the last rank arrives"""
    G = min(GPN, P)
    s = expert_shares(E, k, gamma)
    El = E // P
    S = [sum(s[r * El:(r + 1) * El]) for r in range(P)]
    erows = [[P * T * k * s[e] for e in range(r * El, (r + 1) * El)] for r in range(P)]  # rows per owned expert
    row = D * b
    comm = {ph: 0.0 for ph in ORDER if ph not in COMPUTE}
    copies = {ph: [0.0] * P for ph in ("permute", "unpermute", "gate")}
    rg = 2.0 * (P - 1) / P if P > 1 else 0.0
    comm["layout"] += ring("allreduce", rg * E * 8, P, G)
    comm["grad_sync"] += ring("allreduce", rg * D * E * 4, P, G)

    def a2a(phase, msgs):  # msgs: (src, dst, bytes); the busiest rank's max(sent, received) per level
        sent, recv = {}, {}
        for src, dst, nb in msgs:
            if src == dst:
                continue
            lv = int(src // G != dst // G)
            sent[lv, src] = sent.get((lv, src), 0.0) + nb
            recv[lv, dst] = recv.get((lv, dst), 0.0) + nb
        busy = [max([v for (l, _), v in list(sent.items()) + list(recv.items()) if l == lv] or [0.0]) for lv in (0, 1)]
        comm[phase] += both("alltoall", busy[0], busy[1])

    if strat == "agrs":
        Bt, Bm = (P - 1) * T * row, (P - 1) * T * k * 4
        comm["dispatch"] += ring("allgather", Bt, P, G) + 2 * ring("allgather", Bm, P, G)
        comm["combine"] += ring("reduce_scatter", Bt, P, G)
        comm["combine_bwd"] += ring("allgather", Bt, P, G)
        comm["dispatch_bwd"] += ring("reduce_scatter", Bt, P, G) + ring("reduce_scatter", Bm, P, G)
        for r in range(P):
            copies["permute"][r] = copies["gate"][r] = sum(erows[r]) + P * T
    else:  # the routed exchange in groups of ns: stage A between groups, stage B inside one
        ns = {"tp2ep": P, "dedup": 1, "hier": G}[strat]
        ng = P // ns
        reach = lambda g: T * hitq(sum(S[g * ns:(g + 1) * ns]), E, k)  # a source's tokens needing group g
        if ng > 1:
            a2a("layout", [(r, g * ns + r % ns, (1 + ns * El) * 8) for r in range(P) for g in range(ng)])
        if ns > 1:
            a2a("layout", [(r, o, El * 8) for r in range(P) for o in range(r // ns * ns, (r // ns + 1) * ns)])
        A = [(r, g * ns + r % ns, reach(g)) for r in range(P) for g in range(ng)]  # (source, relay, rows)
        # relay r's pairs to owner o: those of every source of its index (one per group; itself without stage A)
        Bp = [(r, o, (ng if ng > 1 else 1) * T * k * S[o]) for r in range(P) for o in range(r // ns * ns, (r // ns + 1) * ns)]
        if ng > 1:
            a2a("dispatch", [(x, y, n * row) for x, y, n in A])
            a2a("dispatch", [(x, y, n * 4 * k) for x, y, n in A])
            a2a("dispatch", [(x, y, n * 4 * k) for x, y, n in A])
            a2a("combine", [(y, x, n * row) for x, y, n in A])
            a2a("combine_bwd", [(x, y, n * row) for x, y, n in A])
            a2a("dispatch_bwd", [(y, x, n * row) for x, y, n in A])
            a2a("dispatch_bwd", [(y, x, n * 4 * k) for x, y, n in A])
        if ns > 1:
            for phase, rev in (("dispatch", 0), ("combine", 1), ("combine_bwd", 0), ("dispatch_bwd", 1)):
                a2a(phase, [((o, r, n * row) if rev else (r, o, n * row)) for r, o, n in Bp])
        for r in range(P):
            R = sum(erows[r])
            nsA = sum(reach(g) for g in range(ng)) if ng > 1 else 0.0
            relay_pairs = sum(n for x, o, n in Bp if x == r)
            relay_rows = ng * reach(r // ns) if ng > 1 else T
            copies["permute"][r] = nsA + (relay_pairs if ns > 1 else 0.0) + R
            copies["unpermute"][r] = R if ns > 1 else 0.0
            copies["gate"][r] = ((relay_pairs if ns > 1 else R) + relay_rows + nsA + T) if ng > 1 else T * k + T
    own = []
    for r in range(P):
        o = {ph: 0.0 for ph in COMPUTE}
        o["route"], o["route_bwd"] = gemm(2 * T * D * E / 1e9, T), gemm(4 * T * D * E / 1e9, T)
        for ph, f in (("experts_fwd", 6), ("experts_bwd", 12)):
            us = sum(f * m * D * F / 1e9 * 1e3 / (PEAK * eff(m)) for m in erows[r] if m > 0)
            o[ph] = us + OVH if us > 0 else 0.0
        for ph in ("permute", "unpermute", "gate"):
            o[ph] = o[ph + "_bwd"] = copy(copies[ph][r], D)
        own.append(o)
    clock, t = [0.0] * P, {ph: 0.0 for ph in ORDER}
    for ph in ORDER:
        if ph in COMPUTE:
            for r in range(P):
                clock[r] += own[r][ph]
                t[ph] = max(t[ph], own[r][ph])
        else:
            start = max(clock)
            t[ph] = start - min(clock) + comm[ph]
            clock = [start + comm[ph]] * P
    return t, max(clock)


n, bad = 0, 0


def check(what, got, want):
    global n, bad
    n += 1
    ok = abs(got - want) <= 1e-4 * max(abs(want), 1e-9)
    print("%s %d - %s: report %.6g us, by hand %.6g us" % ("ok" if ok else "not ok", n, what, got, want))
    bad += not ok


def proj_row(source, strategy, P, k, phase, config=None):
    for r in proj:
        if r["source"] == source and r["strategy"] == strategy and int(r["ranks"]) == P and int(r["top_k"]) == k \
                and r["phase"] == phase and (config is None or r["config"] == config):
            return float(r["projected_us"])
    raise SystemExit("Bail out! projection.csv has no %s %s P=%d k=%d %s row" % (source, strategy, P, k, phase))


# the fixture's configuration: sizes from its agrs step row, the skew from agrs's busiest rank (expert FLOPs)
moe = [r for r in fixture if r["mode"] == "moe"]
h = next(r for r in moe if r["op"] == "agrs" and r["phase"] == "experts_fwd")
T, D, F, E, k, P = (int(h[c]) for c in ("tokens", "hidden", "ffn", "experts", "top_k", "ranks"))
gamma = fit_gamma(E, k, P, float(h["gflop"]) * 1e9 / (6.0 * D * F * T * k * P))
for strat, label in (("agrs", "agrs"), ("tp2ep", "tp2ep:chunks=1"), ("dedup", "dedup:chunks=1")):
    t, step = project(strat, T, D, F, E, k, P, gamma)
    for ph, want in sorted(t.items()):
        check("%s %s at the fixture's P=%d k=%d" % (label, ph, P, k), proj_row("csv", label, P, k, ph), want)
    check("%s step at the fixture's P=%d k=%d" % (label, P, k), proj_row("csv", label, P, k, "step"), step)
# qwen3-30b-a3b at its published sizes (hidden 2048, expert FFN 768, 128 experts), T=4096, uniform routing
for P, kk in ((16, 8), (64, 2)):
    for strat in ("agrs", "tp2ep", "dedup", "hier"):
        t, step = project(strat, 4096, 2048, 768, 128, kk, P, 0.0)
        check("qwen3-30b-a3b %s step at P=%d k=%d (%d nodes of %d)" % (strat, P, kk, max(1, P // GPN), min(P, GPN)),
              proj_row("sweep", strat, P, kk, "step", "qwen3-30b-a3b (T=4096)"), step)
print("1..%d" % n)
sys.exit(1 if bad else 0)
