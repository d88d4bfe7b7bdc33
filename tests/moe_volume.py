#!/usr/bin/env python3
"""Each strategy's bytes per phase, from its formula on the real routing, against what bench counted.

Usage: moe_volume.py BYTES.csv DUMPDIR P
BYTES.csv holds bench rows (-c 0) of any strategies at top-k values k; DUMPDIR/bd<k>/ holds a --dump of the same
configuration at each k (its topk_idx is the routing every strategy saw: it depends on the seed, not on the
strategy). Prints one line per configuration, NOTE lines for the test's log (dedup's and hier's rows against
tp2ep's), exits 1 when any phase's bytes differ from the formula or a comparison fails.

The formulas (bytes one rank sends to other ranks, maximum over ranks; all-reduces as a ring, 2(P-1)/P):
- local: no tokens; grad_sync all-reduces the router's and every expert's gradient.
- agrs: (P-1) x T x D x 4 each way, plus 8 bytes per pair of routing forward and 4 of gate gradient backward.
- tp2ep, dedup, hier: ranks in groups of ns (tp2ep: ns = P, dedup: ns = 1, hier: node_size, 0 = one host). A token
  goes once to each other group owning any of its experts (to the rank of its source's index there: the relay)
  as D x 4 bytes plus k int32 indices and k float32 gates; inside a group, the relay sends each (token, expert)
  pair to the expert's owner (D x 4). combine returns both (D x 4), combine_bwd repeats dispatch's rows without
  the routing, dispatch_bwd returns combine's with 4k bytes of gate gradients per row between groups. layout: the
  all-reduce of the counts, the all-to-all of N x (1 + ns x E/P) counts per other group and of N x E/P per other
  rank of the group (N chunks).
"""
import csv
import json
import struct
import sys


def load_idx(d, P):
    c = json.load(open(d + "/config.json"))
    T, k = c["tokens"], c["top_k"]
    b = open(d + "/topk_idx.npy", "rb").read()
    hl = struct.unpack("<H", b[8:10])[0]
    assert "'<i4'" in b[10:10 + hl].decode(), "topk_idx is not int32"
    return c, struct.unpack("<%di" % (P * T * k), b[10 + hl:10 + hl + 4 * P * T * k])


def exchange(idx, P, T, k, El, ns):
    """Rows (token, group) and pairs (token, expert) each rank sends to / receives from other ranks."""
    sA, rA, sB, rB = [0] * P, [0] * P, [0] * P, [0] * P
    inter_pairs = 0  # tp2ep's pairs that cross groups, for the comparison
    for src in range(P):
        for t in range(T):
            es = idx[(src * T + t) * k:(src * T + t + 1) * k]
            for g in sorted({e // El // ns for e in es}):
                relay = g * ns + src % ns
                if relay != src:
                    sA[src] += 1
                    rA[relay] += 1
                for e in es:
                    o = e // El
                    if o // ns != g:
                        continue
                    if src // ns != o // ns:
                        inter_pairs += 1
                    if o != relay:
                        sB[relay] += 1
                        rB[o] += 1
    return sA, rA, sB, rB, inter_pairs


def formula(strat, params, c, idx, P):
    T, D, E, k, F = c["tokens"], c["hidden"], c["experts"], c["top_k"], c["ffn"]
    El = E // P
    ring = lambda n: 2.0 * (P - 1) / P * n if P > 1 else 0.0
    want = {"layout": ring(E * 8), "grad_sync": ring(4 * D * E)}
    info = {}
    if strat == "agrs":
        want.update({"dispatch": (P - 1) * (T * D * 4 + 8 * T * k), "combine": (P - 1) * T * D * 4,
                     "combine_bwd": (P - 1) * T * D * 4, "dispatch_bwd": (P - 1) * (T * D * 4 + 4 * T * k)})
    elif strat == "local":
        want["grad_sync"] = ring(4 * D * E + 3 * 4 * E * D * F)
    else:
        N = int(params.get("chunks", 1))
        ns = {"tp2ep": P, "dedup": 1}.get(strat) or int(params.get("node_size", 0)) or P
        ng = P // ns
        sA, rA, sB, rB, inter = exchange(idx, P, T, k, El, ns)
        row, meta = D * 4, 8 * k
        want["layout"] += (ng - 1) * N * (1 + ns * El) * 8 + (ns - 1) * N * El * 8
        want["dispatch"] = max(sA[r] * (row + meta) + sB[r] * row for r in range(P))
        want["combine"] = max((rA[r] + rB[r]) * row for r in range(P))
        want["combine_bwd"] = max((sA[r] + sB[r]) * row for r in range(P))
        want["dispatch_bwd"] = max(rB[r] * row + rA[r] * (row + 4 * k) for r in range(P))
        info = {"rows": sA, "pairs": sB, "inter_rows": sum(sA), "inter_pairs": inter, "ns": ns}
    return want, info


def main():
    f, work, P = sys.argv[1], sys.argv[2], int(sys.argv[3])
    got = {}
    for r in csv.DictReader(open(f)):
        key = (r["op"], r["params"], int(r["top_k"]))
        got.setdefault(key, {})[r["phase"]] = float(r["bytes"])
    bad, seen, infos = [], 0, {}
    for (strat, ptext, k), g in sorted(got.items()):
        c, idx = load_idx("%s/bd%d" % (work, k), P)
        assert c["top_k"] == k
        params = dict(kv.split("=") for kv in ptext.split(";") if kv)
        want, info = formula(strat, params, c, idx, P)
        infos[(strat, ptext, k)] = (info, g)
        for p in g:
            want.setdefault(p, 0.0)
        want["step"] = sum(v for p, v in want.items() if p != "step")
        diff = ["%s %g != %g" % (p, g.get(p, -1), v) for p, v in want.items() if abs(g.get(p, -1) - v) > 0.5]
        seen += 1
        print("%-8s %-22s k=%d: %s" % (strat, ptext, k, "; ".join(diff) if diff else
                                         "ok (dispatch %d bytes, rows %s pairs %s)" % (g["dispatch"], info.get("rows"), info.get("pairs"))))
        if diff:
            bad.append((strat, ptext, k))
        if P > 1 and strat == "tp2ep" and not sum(info["pairs"]):
            bad.append("no pair left its rank: the test proves nothing")
    # dedup's dispatch rows against tp2ep's; hier's rows between groups against tp2ep's pairs between the same groups
    for (strat, ptext, k), (info, g) in sorted(infos.items()):
        t = infos.get(("tp2ep", "chunks=1", k))
        if not t or P == 1:
            continue
        if strat == "dedup" and ptext == "chunks=1":
            print("NOTE k=%d: dedup dispatch %d bytes (%d rows) vs tp2ep %d bytes (%d pairs): %.3f" % (
                k, g["dispatch"], max(info["rows"]), t[1]["dispatch"], max(t[0]["pairs"]), g["dispatch"] / t[1]["dispatch"]))
        if strat == "hier" and 1 < info["ns"] < P and ptext.endswith("chunks=1"):
            inter_t = info["inter_pairs"]  # the same routing: tp2ep sends these pairs across groups
            print("NOTE k=%d: hier node_size=%d moves %d token rows between nodes, tp2ep %d pairs" % (
                k, info["ns"], info["inter_rows"], inter_t))
            if k > 1 and not info["inter_rows"] < inter_t:
                bad.append("hier k=%d: %d rows between nodes, not fewer than tp2ep's %d" % (k, info["inter_rows"], inter_t))
            if info["inter_rows"] > inter_t:
                bad.append("hier k=%d: more rows between nodes than tp2ep's pairs" % k)
        # hier on one node moves tp2ep's bytes; on one rank per node, dedup's (measured against measured)
        for ns, other in ((P, ("tp2ep", "chunks=1", k)), (1, ("dedup", "chunks=1", k))):
            if strat == "hier" and info["ns"] == ns and ptext.endswith("chunks=1") and other in infos:
                o = infos[other][1]
                same = all(g[p] == o[p] for p in ("dispatch", "combine", "combine_bwd", "dispatch_bwd"))
                print("NOTE k=%d: hier node_size=%d moves %s's token bytes: %s" % (k, ns, other[0], same))
                if not same:
                    bad.append("hier node_size=%d k=%d differs from %s" % (ns, k, other[0]))
    if not seen:
        bad.append("no rows")
    print("FAILED: %s" % bad if bad else "all %d configurations agree" % seen)
    sys.exit(1 if bad else 0)


main()
