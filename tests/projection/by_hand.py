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


def shares(E, k, P, gamma):
    """expert e ~ (e+1)^-gamma of the pairs, none above 1/k; rank r holds E/P consecutive experts"""
    w = [(e + 1) ** -gamma for e in range(E)]
    lo, hi = 0.0, 1.0
    while sum(min(hi * x, 1 / k) for x in w) < 1:
        hi *= 2
    for _ in range(100):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if sum(min(c * x, 1 / k) for x in w) < 1 else (lo, c)
    s = [min(hi * x, 1 / k) for x in w]
    tot = sum(s)
    s = [x / tot for x in s]
    El = E // P
    return [sum(s[r * El:(r + 1) * El]) for r in range(P)]


def fit_gamma(E, k, P, smax):
    if smax <= max(shares(E, k, P, 0)) + 1e-9:
        return 0.0
    lo, hi = 0.0, 30.0
    for _ in range(60):
        g = (lo + hi) / 2
        lo, hi = (g, hi) if max(shares(E, k, P, g)) < smax else (lo, g)
    return (lo + hi) / 2


def project(strat, T, D, F, E, k, P, gamma):
    G = min(GPN, P)
    S = shares(E, k, P, gamma)
    R = P * T * k * max(S)   # rows on the busiest owner
    m = R / (E / P)          # per expert
    row = D * b
    rg = 2.0 * (P - 1) / P if P > 1 else 0.0
    t = {"route": gemm(2 * T * D * E / 1e9, T), "route_bwd": gemm(4 * T * D * E / 1e9, T),
         "experts_fwd": gemm(6 * R * D * F / 1e9, m), "experts_bwd": gemm(12 * R * D * F / 1e9, m),
         "layout": ring("allreduce", rg * E * 8, P, G), "grad_sync": ring("allreduce", rg * D * E * 4, P, G)}
    if strat == "agrs":
        Bt, Bm = (P - 1) * T * row, (P - 1) * T * k * 4
        t["dispatch"] = ring("allgather", Bt, P, G) + 2 * ring("allgather", Bm, P, G)
        t["combine"] = ring("reduce_scatter", Bt, P, G)
        t["combine_bwd"] = ring("allgather", Bt, P, G)
        t["dispatch_bwd"] = ring("reduce_scatter", Bt, P, G) + ring("reduce_scatter", Bm, P, G)
        t["permute"] = t["permute_bwd"] = copy(R + P * T, D)
        t["gate"] = t["gate_bwd"] = copy(R + P * T, D)
        t["unpermute"] = t["unpermute_bwd"] = 0.0
        return t
    node = lambda r: r // G
    if strat == "hier":  # groups of G (the node): a token once to each other node, then its pairs inside the node
        return project_hier(t, T, D, E, k, P, G, S, R, row)
    send = {(l, r): 0.0 for l in (0, 1) for r in range(P)}
    recv = dict(send)
    if strat == "tp2ep":  # each (token, expert) pair to the expert's owner
        for r in range(P):
            for o in range(P):
                if o != r:
                    lv = int(node(o) != node(r))
                    send[lv, r] += T * k * S[o]
                    recv[lv, o] += T * k * S[o]
        meta, calls = 0, 1
    else:  # dedup: a token once to each other rank holding any of its k experts (indices and gates with it)
        for r in range(P):
            for o in range(P):
                if o != r:
                    miss = 1.0
                    for j in range(k):
                        miss *= max(0.0, 1 - S[o] * E / (E - j))
                    lv = int(node(o) != node(r))
                    send[lv, r] += T * (1 - miss)
                    recv[lv, o] += T * (1 - miss)
        meta, calls = 8 * k, 3
    busiest = [max(max(send[l, r], recv[l, r]) for r in range(P)) for l in (0, 1)]
    a2a = lambda per_row: both("alltoall", busiest[0] * per_row, busiest[1] * per_row)
    if strat == "tp2ep":
        t["dispatch"] = t["combine"] = t["combine_bwd"] = t["dispatch_bwd"] = a2a(row)
        cnt = (P - 1) * (E // P) * 8  # count all-to-all: E/P int64 to each other rank
        t["layout"] += both("alltoall", cnt * (G - 1) / (P - 1), cnt * (P - G) / (P - 1))
        src = T * k
    else:
        t["dispatch"] = a2a(row) + 2 * a2a(4 * k)
        t["combine"] = t["combine_bwd"] = a2a(row)
        t["dispatch_bwd"] = a2a(row) + a2a(4 * k)
        cnt = (P - 1) * (1 + E // P) * 8  # rows, then pairs per local expert, to each other rank
        t["layout"] += both("alltoall", cnt * (G - 1) / (P - 1), cnt * (P - G) / (P - 1))
        src = 0.0  # rows a source gathers: once per rank its token reaches (its own included)
        for o in range(P):
            miss = 1.0
            for j in range(k):
                miss *= max(0.0, 1 - S[o] * E / (E - j))
            src += T * (1 - miss)
    t["permute"] = t["permute_bwd"] = copy(src + R, D)
    t["unpermute"] = t["unpermute_bwd"] = copy(R, D)
    t["gate"] = t["gate_bwd"] = copy(R + T, D)
    return t


def hitq(q, E, k):  # a token's k experts reach a set holding share q
    miss = 1.0
    for j in range(k):
        miss *= max(0.0, 1 - q * E / (E - j))
    return 1 - miss


def project_hier(t, T, D, E, k, P, G, S, R, row):
    ns, ng = G, P // G
    Sg = [sum(S[g * ns:(g + 1) * ns]) for g in range(ng)]
    z = lambda: {(l, r): 0.0 for l in (0, 1) for r in range(P)}
    sA, rA, sB, rB = z(), z(), z(), z()
    for r in range(P):
        for g in range(ng):
            if g != r // ns:  # to the rank of r's index in node g
                relay = g * ns + r % ns
                lv = int(relay // G != r // G)
                sA[lv, r] += T * hitq(Sg[g], E, k)
                rA[lv, relay] += T * hitq(Sg[g], E, k)
        for o in range((r // ns) * ns, (r // ns + 1) * ns):
            if o != r:  # the relay's pairs of every source node to the owners of its node
                lv = int(o // G != r // G)
                sB[lv, r] += ng * T * k * S[o]
                rB[lv, o] += ng * T * k * S[o]
    A = [max(max(sA[l, r], rA[l, r]) for r in range(P)) for l in (0, 1)]
    B = [max(max(sB[l, r], rB[l, r]) for r in range(P)) for l in (0, 1)]
    stA = lambda per_row: both("alltoall", A[0] * per_row, A[1] * per_row) if ng > 1 else 0.0
    stB = lambda per_row: both("alltoall", B[0] * per_row, B[1] * per_row) if ns > 1 else 0.0
    t["dispatch"] = stA(row) + 2 * stA(4 * k) + stB(row)
    t["combine"] = stB(row) + stA(row)
    t["combine_bwd"] = stA(row) + stB(row)
    t["dispatch_bwd"] = stB(row) + stA(row) + stA(4 * k)
    if ng > 1:  # the counts: per other node (1 + ns E/P) int64 across, per other rank of the node E/P inside
        t["layout"] += both("alltoall", 0, (ng - 1) * (1 + ns * (E // P)) * 8)
    if ns > 1:
        t["layout"] += both("alltoall", (ns - 1) * (E // P) * 8, 0)
    src = sum(T * hitq(x, E, k) for x in Sg)
    t["permute"] = t["permute_bwd"] = copy(src + R, D)
    t["unpermute"] = t["unpermute_bwd"] = copy(R, D)
    t["gate"] = t["gate_bwd"] = copy(R + T, D)
    return t


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
    t = project(strat, T, D, F, E, k, P, gamma)
    for ph, want in sorted(t.items()):
        check("%s %s at the fixture's P=%d k=%d" % (label, ph, P, k), proj_row("csv", label, P, k, ph), want)
    check("%s step at the fixture's P=%d k=%d" % (label, P, k), proj_row("csv", label, P, k, "step"), sum(t.values()))
# qwen3-30b-a3b at its published sizes (hidden 2048, expert FFN 768, 128 experts), T=4096, uniform routing
for P, kk in ((16, 8), (64, 2)):
    for strat in ("agrs", "tp2ep", "dedup", "hier"):
        t = project(strat, 4096, 2048, 768, 128, kk, P, 0.0)
        check("qwen3-30b-a3b %s step at P=%d k=%d (%d nodes of %d)" % (strat, P, kk, max(1, P // GPN), min(P, GPN)),
              proj_row("sweep", strat, P, kk, "step", "qwen3-30b-a3b (T=4096)"), sum(t.values()))
print("1..%d" % n)
sys.exit(1 if bad else 0)
