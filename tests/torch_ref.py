#!/usr/bin/env python3
"""PyTorch reference for the GPU job (ci/gpu); torch is installed on the device machine.

  torch_ref.py check DUMP_DIR        recompute one bench --dump step in float64 with PyTorch autograd (DESIGN.md's
                                     layer, written independently of moe/) and compare y, dx and every gradient,
                                     tokens_per_expert and the updated bias. Exit 1 on a mismatch.
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


def layer(x, Wr, bias, w1, w3, w2, k, router, route_norm, skew):
    """y (N,D) and the top-k of DESIGN.md's MoE layer; selection is not differentiated (as in every stack)."""
    E = Wr.shape[1]
    logits = x.to(Wr.dtype) @ Wr - skew * torch.log(torch.arange(E, dtype=Wr.dtype, device=Wr.device) + 1)
    scores = torch.softmax(logits, dim=-1) if router == "softmax" else torch.sigmoid(logits)
    biased = (scores + bias).detach()
    # ties to the lower index: a stable descending sort
    idx = torch.sort(biased, dim=-1, descending=True, stable=True).indices[:, :k]
    gate = torch.gather(scores, 1, idx)
    if route_norm:
        gate = gate / gate.sum(dim=-1, keepdim=True)
    y = torch.zeros_like(x)
    for e in range(E):
        tok, j = torch.nonzero(idx == e, as_tuple=True)
        if tok.numel() == 0:
            continue
        h = x[tok]
        a1 = h @ w1[e]
        out = (torch.nn.functional.silu(a1) * (h @ w3[e])) @ w2[e]
        y = y.index_add(0, tok, out * gate[tok, j].unsqueeze(1).to(out.dtype))
    return y, idx, gate


def check(d):
    cfg = json.load(open(f"{d}/config.json"))
    ld = lambda n: torch.from_numpy(np.load(f"{d}/{n}.npy"))
    f64 = lambda n: ld(n).double().requires_grad_(n in ("x", "router_w", "w1", "w3", "w2"))
    x, Wr, w1, w3, w2 = (f64(n) for n in ("x", "router_w", "w1", "w3", "w2"))
    bias, dy = ld("expert_bias").double(), ld("dy").double()
    y, idx, gate = layer(x, Wr, bias, w1, w3, w2, cfg["top_k"], cfg["router"], cfg["route_norm"], cfg["skew"])
    y.backward(dy)
    E = cfg["experts"]
    tpe = torch.bincount(idx.flatten(), minlength=E)
    mean = tpe.double().mean()
    delta = cfg["bias_coeff"] * torch.sign(mean - tpe.double())
    bias_after = bias + (delta - delta.mean())
    tol = 1e-2 if cfg["dtype"] == "bf16" else 1e-4
    bad = 0

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
    print(f"dump {d}: {cfg['strategy']} x{cfg['ranks']} {cfg['dtype']} E={E} k={cfg['top_k']} (tolerance {tol:g}, {metric})")
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
        y, _, _ = layer(x, Wr, bias, w1, w3, w2, k, "softmax", False, 0.0)
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


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2]))
    if len(sys.argv) in (7, 8) and sys.argv[1] == "time":
        sys.exit(time_layer(*(int(a) for a in sys.argv[2:7]), *sys.argv[7:]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
