#!/usr/bin/env bash
# Bad input to bench: each case exits 2 with exactly one line on stderr naming the option, prints nothing on
# stdout, and leaves an existing CSV file byte-for-byte unchanged. TAP output.
set -u
BENCH=$(realpath "$1")
source "$(dirname "$0")/tap.sh"
csv=$work/keep.csv
"$BENCH" --coll allreduce -b 1K -e 1K -n 1 -w 0 --ranks 1 --csv "$csv" >/dev/null 2>&1 || { echo "Bail out! bench cannot write a first CSV"; exit 1; }
sum_before=$(cksum < "$csv")
case_() { # expected-substring, then bench arguments
    local want=$1; shift
    "$BENCH" "$@" >"$work/out" 2>"$work/err"
    local rc=$? lines
    lines=$(wc -l < "$work/err")
    if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "$want" "$work/err" && [ ! -s "$work/out" ] &&
       [ "$(cksum < "$csv")" = "$sum_before" ]; then
        tap_ok 0 "$* -> exit 2: $(cat "$work/err")"
    else
        tap_ok 1 "$* -> exit $rc, $lines stderr line(s), want '$want'" "$work/err" "$work/out"
    fi
}
case_ "--coll 'foo': unknown collective (accepted: allgather, reduce_scatter, alltoall, alltoallv, allreduce, all)" --coll foo --csv "$csv"
case_ "--frobnicate: unknown option" --coll all --frobnicate --csv "$csv"
case_ "-x: unknown option" --coll all -x --csv "$csv"
case_ "-b/--min-bytes 16M exceeds -e/--max-bytes 64K" --coll all -b 16M -e 64K --csv "$csv"
case_ "-b/--min-bytes '0': expected a positive size" --coll all -b 0 --csv "$csv"
case_ "-e/--max-bytes '-4K': expected a positive size" --coll all -e -4K --csv "$csv"
case_ "-b/--min-bytes 'lots': expected a positive size" --coll all -b lots --csv "$csv"
case_ "-b/--min-bytes '1.5M'" --coll all -b 1.5M --csv "$csv"
case_ "-n/--iters '0': expected an integer from 1" --coll all -n 0 --csv "$csv"
case_ "-n/--iters 'ten'" --coll all -n ten --csv "$csv"
case_ "-f/--step-factor '1': expected an integer from 2" --coll all -f 1 --csv "$csv"
case_ "cannot be split over 3 ranks for allgather: it must be a positive multiple of 12 bytes" --coll allgather -b 1000 -e 1000 --ranks 3 --csv "$csv"
case_ "cannot be split over 4 ranks for reduce_scatter" --coll reduce_scatter -b 6 -e 6 --ranks 4 --csv "$csv"
case_ "cannot be split over 2 ranks for allreduce: it must be a positive multiple of 2 bytes" --coll allreduce -b 3 -e 3 --dtype bf16 --ranks 2 --csv "$csv"
case_ "--ranks '0': expected an integer from 1" --coll all --ranks 0 --csv "$csv"
case_ "--ranks '-2'" --coll all --ranks -2 --csv "$csv"
case_ "--csv /nonexistent-epb/x.csv: directory /nonexistent-epb does not exist" --coll all --csv /nonexistent-epb/x.csv
case_ "--csv $work: not a regular file" --coll all --csv "$work"
printf 'a,b\n1,2\n' > "$work/foreign.csv"
case_ "foreign.csv:1: not an epbench CSV header" --coll all --csv "$work/foreign.csv"
if [ "$(id -u)" -ne 0 ]; then
    mkdir "$work/ro" && chmod 555 "$work/ro"
    case_ "is not writable" --coll all --csv "$work/ro/x.csv"
fi
case_ "--dtype 'f16': expected f32 or bf16" --coll all --dtype f16 --csv "$csv"
case_ "--bind 'socket': expected none, core or numa" --coll all --bind socket --csv "$csv"
case_ "--imbalance '-1'" --coll alltoallv --imbalance -1 --csv "$csv"
case_ "nothing to run" --csv "$csv"
case_ "'stray': unexpected argument" --coll all stray --csv "$csv"
case_ "--coll: missing value" --csv "$csv" --coll
case_ "only one of --strategy, --coll, --calibrate" --coll all --calibrate --csv "$csv"
case_ "--comm 'nccl2': expected auto, mpi or self" --coll all --comm nccl2 --csv "$csv"
case_ "--strategy 'tp3ep': unknown strategy 'tp3ep' (accepted: local, agrs, tp2ep, all)" --strategy tp3ep --csv "$csv"
case_ "--experts 6 cannot be divided over 4 ranks" --strategy tp2ep --experts 6 --ranks 4 --csv "$csv"
case_ "--top-k 5 exceeds --experts 4" --strategy agrs --experts 4 --top-k 5 --ranks 1 --csv "$csv"
case_ "--top-k '0'" --strategy agrs --top-k 0 --ranks 1 --csv "$csv"
case_ "--tokens '0'" --strategy local --tokens 0 --ranks 1 --csv "$csv"
case_ "--hidden '-8'" --strategy local --hidden -8 --ranks 1 --csv "$csv"
case_ "--experts '4,,8'" --strategy local --experts 4,,8 --ranks 1 --csv "$csv"
case_ "--router 'relu': expected softmax or sigmoid" --strategy local --router relu --ranks 1 --csv "$csv"
case_ "GiB" --strategy tp2ep --experts 16 --tokens 100000 --hidden 8192 --ffn 32768 --ranks 1 --csv "$csv"
case_ "--dump /nonexistent-epb/d: folder /nonexistent-epb does not exist" --strategy local --ranks 1 --dump /nonexistent-epb/d --csv "$csv"
case_ "--dump $csv: exists and is not a folder" --strategy local --ranks 1 --dump "$csv" --csv "$csv"
case_ "MoE options (--experts, --top-k, --train...) need --strategy, not --coll" --coll all --experts 8 --csv "$csv"
EPB_TEST_SLOWDOWN=garbage case_ "EPB_TEST_SLOWDOWN 'garbage'" --coll all --csv "$csv"
[ -f "$work/foreign.csv" ] && [ "$(cat "$work/foreign.csv")" = "$(printf 'a,b\n1,2')" ]
tap_ok $? "a CSV with a foreign header is left unchanged by every case"
tap_done
