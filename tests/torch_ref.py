#!/usr/bin/env python3
"""PyTorch reference for the GPU job (ci/gpu); torch is installed on the device machine.

  torch_ref.py check DUMP_DIR...     recompute one bench --dump step in float64 with PyTorch autograd (DESIGN.md's
                                     layer, written independently of moe/, with every feature config.json names:
                                     route scale, group-limited routing, gate before the experts, shared experts)
                                     and compare y, dx and every gradient (the shared experts' too),
                                     tokens_per_expert and the updated bias. Exit 1 on a mismatch. With several
                                     dumps (one process: PyTorch loads once), each one's report goes to
                                     DUMP_DIR.ref, ending "exit N" (0 agrees, 1 differs, 2 could not be read);
                                     exit 1 when any did not agree.
  torch_ref.py time T D F E K [DEV]  time the same layer forward+backward in bf16, PyTorch eager on DEV (default
                                     cuda; cpu only to try the script where there is no GPU), looping over
                                     experts with an index_add combine; median of 20 after 5 warm-ups; prints
                                     "torch_eager_us <microseconds>".
"""
import json
import math
import sys
import time

import numpy as np
import torch


def swiglu(h, w1, w3, w2):
    return (torch.nn.functional.silu(h @ w1) * (h @ w3)) @ w2


def capacity_keep(idx, gate, E, group, cap, policy):
    """The expert capacity (GShard, Switch; Megatron's --moe-expert-capacity-factor): in each group of `group`
    consecutive tokens, expert e keeps its `cap` pairs of the largest gate (ties: the earlier token; policy "probs")
    or of the earliest tokens ("position"). A (N,k) bool mask of the pairs kept."""
    N, k = idx.shape
    keep = torch.zeros(N, k, dtype=torch.bool)
    g = gate.detach().float()  # ranked in float32, as bench's router leaves them
    for t0 in range(0, N, group):
        for e in range(E):
            tok, j = torch.nonzero(idx[t0:t0 + group] == e, as_tuple=True)
            order = list(range(tok.numel()))
            if policy == "probs":  # a stable sort on the negated weight: larger first, earlier tokens on ties
                order.sort(key=lambda i: -g[t0 + tok[i], j[i]].item())
            for i in order[:cap]:
                keep[t0 + tok[i], j[i]] = True
    return keep


def layer(x, Wr, bias, w1, w3, w2, k, router, route_norm, skew, route_scale=1.0, groups=1, topk_groups=1,
          gate_before=False, shared=None, capacity=None):
    """y (N,D) and the top-k of DESIGN.md's MoE layer; selection is not differentiated (as in every stack).
    groups G > 1: a group's score is the sum of its two best biased scores (DeepSeek-V3's n_group/topk_group), a
    token chooses among the experts of its topk_groups best groups. gate_before: the expert sees gate * x (Llama 4,
    torchtitan's score_before_experts). shared: (sw1 (D,S*Fs), sw3, sw2 (S*Fs,D), S): S experts every token passes
    through, expert s being columns (rows of sw2) s*Fs..(s+1)*Fs-1, added to y. capacity: (group, cap, policy): the
    pairs capacity_keep drops reach no expert (and add nothing to y)."""
    N, E = x.shape[0], Wr.shape[1]
    logits = x.to(Wr.dtype) @ Wr - skew * torch.log(torch.arange(E, dtype=Wr.dtype, device=Wr.device) + 1)
    scores = torch.softmax(logits, dim=-1) if router == "softmax" else torch.sigmoid(logits)
    biased = (scores + bias).detach()
    if groups > 1:
        gsz = E // groups
        gscore = biased.view(N, groups, gsz).topk(min(2, gsz), dim=-1).values.sum(dim=-1)
        # ties to the lower group: a stable descending sort
        keep = torch.sort(gscore, dim=-1, descending=True, stable=True).indices[:, :topk_groups]
        mask = torch.zeros(N, groups, dtype=torch.bool, device=x.device).scatter(1, keep, True)
        biased = biased.masked_fill(~mask.repeat_interleave(gsz, dim=1), float("-inf"))
    # ties to the lower index: a stable descending sort
    idx = torch.sort(biased, dim=-1, descending=True, stable=True).indices[:, :k]
    gate = torch.gather(scores, 1, idx)
    if route_norm:
        gate = gate / gate.sum(dim=-1, keepdim=True)
    gate = gate * route_scale
    y = torch.zeros_like(x)
    kept = capacity_keep(idx, gate, E, *capacity) if capacity else torch.ones(idx.shape, dtype=torch.bool)
    for e in range(E):
        tok, j = torch.nonzero((idx == e) & kept, as_tuple=True)
        if tok.numel() == 0:
            continue
        g = gate[tok, j].unsqueeze(1).to(x.dtype)
        if gate_before:
            y = y.index_add(0, tok, swiglu(x[tok] * g, w1[e], w3[e], w2[e]))
        else:
            y = y.index_add(0, tok, swiglu(x[tok], w1[e], w3[e], w2[e]) * g)
    if shared is not None:
        sw1, sw3, sw2, S = shared
        Fs = sw1.shape[1] // S
        for s in range(S):
            c = slice(s * Fs, (s + 1) * Fs)
            y = y + swiglu(x, sw1[:, c], sw3[:, c], sw2[c, :])
    return y, idx, gate, kept


def check(d):
    cfg = json.load(open(f"{d}/config.json"))
    if cfg.get("dispatch_dtype", "act") != "act":  # bench's own check quantizes its reference alike; this one does not
        print(f"dump {d}: dispatch_dtype {cfg['dispatch_dtype']}: FP8 dispatch is not modelled here FAIL")
        return 1
    ld = lambda n: torch.from_numpy(np.load(f"{d}/{n}.npy"))
    f64 = lambda n: ld(n).double().requires_grad_(n in ("x", "router_w", "w1", "w3", "w2"))
    x, Wr, w1, w3, w2 = (f64(n) for n in ("x", "router_w", "w1", "w3", "w2"))
    bias, dy = ld("expert_bias").double(), ld("dy").double()
    S = cfg.get("shared", 0)  # dumps before issue 14 have none of the features
    shared = None
    if S:
        sw1, sw3, sw2 = (ld(n).double().requires_grad_() for n in ("shared_w1", "shared_w3", "shared_w2"))
        shared = (sw1, sw3, sw2, S)
    cap = None  # the expert capacity: each rank's tokens one group (dumps before issue 22 have none)
    if cfg.get("capacity_factor", 0) > 0:
        cap = (cfg["tokens"], math.ceil(cfg["capacity_factor"] * cfg["tokens"] * cfg["top_k"] / cfg["experts"]),
               cfg["drop_policy"])
        cap = (cap[0], max(1, min(cap[1], cap[0])), cap[2])
        if cap[1] != cfg["capacity"]:
            print(f"dump {d}: capacity {cfg['capacity']} in config.json, {cap[1]} by its definition FAIL")
            return 1
    y, idx, gate, kept = layer(x, Wr, bias, w1, w3, w2, cfg["top_k"], cfg["router"], cfg["route_norm"], cfg["skew"],
                               cfg.get("route_scale", 1.0), cfg.get("groups", 1), cfg.get("topk_groups", 1),
                               cfg.get("gate_before", False), shared, cap)
    y.backward(dy)
    E = cfg["experts"]
    tpe = torch.bincount(idx.flatten(), minlength=E)
    mean = tpe.double().mean()
    delta = cfg["bias_coeff"] * torch.sign(mean - tpe.double())
    bias_after = bias + (delta - delta.mean())
    tol = 1e-2 if cfg["dtype"] == "bf16" else 1e-4
    bad = 0
    if S and tuple(sw1.shape) != (cfg["hidden"], S * cfg["shared_ffn"]):
        print(f"  shared_w1          shape {tuple(sw1.shape)} is not (hidden, shared * shared_ffn) FAIL")
        bad += 1

    def cmp(name, ref):
        nonlocal bad
        got = ld(name).double()
        if cfg["dtype"] == "bf16":  # norm-wise, as bench --check (moe/moe.h, moe_rel_err_l2, says why)
            e = ((got - ref).norm() / max(ref.norm().item(), 1e-30)).item()
        else:
            e = ((got - ref).abs().max() / max(ref.abs().max().item(), 1e-30)).item()
        ok = not math.isnan(e) and e <= tol
        bad += not ok
        print(f"  {name:18s} rel err {e:.2e} {'ok' if ok else 'FAIL'}")

    n_idx = int((ld("topk_idx").long() != idx).sum())
    n_tpe = int((ld("tokens_per_expert").long() != tpe).sum())
    metric = "norm-wise" if cfg["dtype"] == "bf16" else "largest element"
    feats = " ".join(f"{n}={cfg[n]}" for n in ("route_scale", "groups", "topk_groups", "gate_before", "shared",
                                                "shared_ffn", "capacity_factor", "drop_policy", "redundant") if n in cfg)
    if cap:
        feats += f" capacity={cap[1]}: {int((~kept).sum())} of {kept.numel()} pairs dropped"
    print(f"dump {d}: {cfg['strategy']} x{cfg['ranks']} {cfg['dtype']} E={E} k={cfg['top_k']} {feats} "
          f"(tolerance {tol:g}, {metric})")
    print(f"  topk_idx           {n_idx} differ {'ok' if n_idx == 0 else 'FAIL'}")
    print(f"  tokens_per_expert  {n_tpe} differ {'ok' if n_tpe == 0 else 'FAIL'}")
    bad += (n_idx != 0) + (n_tpe != 0)
    cmp("topk_w", gate.detach())
    cmp("y", y.detach())
    cmp("dx", x.grad)
    cmp("d_router_w", Wr.grad)
    cmp("dw1", w1.grad)
    cmp("dw3", w3.grad)
    cmp("dw2", w2.grad)
    if S:
        cmp("d_shared_w1", sw1.grad)
        cmp("d_shared_w3", sw3.grad)
        cmp("d_shared_w2", sw2.grad)
    cmp("expert_bias_after", bias_after)
    print("torch check:", "ok" if bad == 0 else f"{bad} FAILED")
    return 1 if bad else 0


def time_layer(T, D, F, E, k, dev="cuda"):
    dev = torch.device(dev)
    g = torch.Generator(device=dev).manual_seed(1)
    bf = torch.bfloat16
    x = (torch.rand(T, D, device=dev, generator=g) * 2 - 1).to(bf).requires_grad_()
    Wr = ((torch.rand(D, E, device=dev, generator=g) * 2 - 1) / math.sqrt(D)).requires_grad_()
    w1 = ((torch.rand(E, D, F, device=dev, generator=g) * 2 - 1) / math.sqrt(D)).to(bf).requires_grad_()
    w3 = ((torch.rand(E, D, F, device=dev, generator=g) * 2 - 1) / math.sqrt(D)).to(bf).requires_grad_()
    w2 = ((torch.rand(E, F, D, device=dev, generator=g) * 2 - 1) / math.sqrt(F)).to(bf).requires_grad_()
    bias = torch.zeros(E, device=dev)
    dy = (torch.rand(T, D, device=dev, generator=g) * 2 - 1).to(bf)

    def step():
        for t in (x, Wr, w1, w3, w2):
            t.grad = None
        y = layer(x, Wr, bias, w1, w3, w2, k, "softmax", False, 0.0)[0]
        y.backward(dy)

    for _ in range(5):
        step()
    ts = []
    if dev.type == "cuda":
        torch.cuda.synchronize()
        for _ in range(20):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            step()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b) * 1e3)
    else:
        for _ in range(20):
            t0 = time.perf_counter()
            step()
            ts.append((time.perf_counter() - t0) * 1e6)
    ts.sort()
    print(f"torch_eager_us {(ts[9] + ts[10]) / 2:.1f}")
    return 0


def check_each(dirs):
    """check() of every dump, each report into DIR.ref; 1 when any did not agree"""
    import contextlib
    import traceback
    worst = 0
    for d in dirs:
        with open(d.rstrip("/") + ".ref", "w") as f, contextlib.redirect_stdout(f):
            try:
                rc = check(d)
            except Exception:  # a dump that cannot be read is that dump's failure, not the others'
                traceback.print_exc(file=f)
                rc = 2
            print(f"exit {rc}")
        worst = max(worst, rc != 0)
    return worst


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2]))
    if len(sys.argv) > 3 and sys.argv[1] == "check":
        sys.exit(check_each(sys.argv[2:]))
    if len(sys.argv) in (7, 8) and sys.argv[1] == "time":
        sys.exit(time_layer(*(int(a) for a in sys.argv[2:7]), *sys.argv[7:]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
