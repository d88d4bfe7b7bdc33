#!/usr/bin/env python3
"""Writes the fuzzer's seed corpus (corpus/) and dictionary (csv.dict) from the report's fixtures. Rerun after a
change of the fixtures or of the CSV header: python3 make_corpus.py (from this directory)."""
import csv, io

FX = "../reports/fixtures/"

def rows(name):
    lines = open(FX + name).read().splitlines()
    return lines[0], lines[1:]

h1, r1 = rows("moe.csv")
# schema 1: one repetition; tp2ep's phases, every step, coll and peak row
keep = [r for r in r1 if r.split(",")[1] == "r0" and
        (",tp2ep," in r or ",step," in r or ",coll," in r or ",peak," in r)][:40]
open("corpus/s1_moe.csv", "w").write(h1 + "\n" + "\n".join(keep) + "\n")
h2, r2 = rows("moe2.csv")
# schema 2: two repetitions; tp2ep's phases, every dispatch and step, coll (the imbalance run too) and peak rows
keep = [r for r in r2 if r.split(",")[1] in ("r0", "r1") and
        ((",tp2ep," in r and ",chunks" not in r) or ",step," in r or ",coll," in r or ",peak," in r or
         ",dispatch," in r)]
open("corpus/s2_moe.csv", "w").write(h2 + "\n" + "\n".join(keep) + "\n")
hb, rb = rows("base.csv")
open("corpus/s1_regress.csv", "w").write(hb + "\n" + "\n".join(rb) + "\n")
# schema 2 with quoting: commas, quotes, a line break, CRLF line ends, a hosts list, params, two collectives
out = io.StringIO()
w = csv.DictWriter(out, fieldnames=h2.split(","), lineterminator="\r\n")
w.writeheader()
for i, r in enumerate(csv.DictReader(io.StringIO(h2 + "\n" + "\n".join(r2[:19 * 2]) + "\n"))):
    if i % 19 == 0:
        r["router"] = 'soft,max "q"'
    r["hosts"] = "a;b;c;d;e;f"
    r["params"] = "chunks=4;x=1" if i >= 19 else ""
    if i == 5:
        r["device_name"] = "line one\nline two"
    if i == 7:
        r["coll"] = "alltoallv+allgather"
    w.writerow(r)
open("corpus/s2_quoted.csv", "w", newline="").write(out.getvalue())
open("corpus/s2_header_only.csv", "w").write(h2 + "\n")

TOKENS = ["moe", "coll", "peak", "compute", "comm", "sync", "total", "step", "ok", "fail", "skipped", "alltoallv",
          "allgather", "reduce_scatter", "allreduce", "alltoall", "gemm", "imbalance=2", "chunks=4", ";", "+", "=",
          ",", '"', '""', "\r\n", "\n", "1e308", "-0", "0.5", "4294967296", "18446744073709551615",
          "9223372036854775807", "2026-01-01T22:00:00Z", "node01", "top_k", "ranks", "experts", "agrs", "tp2ep",
          "local", "dispatch", "combine", "grad_sync", "sync_counts", "layout"]

def esc(s):
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "\\x%02X" % ord(c) for c in s)

with open("csv.dict", "w") as f:
    f.write("# libFuzzer dictionary for epbench CSVs (make_corpus.py): both headers and the values the report "
            "treats specially\n")
    f.write('header1="%s\\x0A"\n' % esc(h1))
    f.write('header2="%s\\x0A"\n' % esc(h2))
    for i, t in enumerate(TOKENS):
        f.write('t%d="%s"\n' % (i, esc(t)))
