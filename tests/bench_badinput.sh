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
    local args="$*"
    args=${args//[[:cntrl:]]/?} # a TAP line is one line
    if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "$want" "$work/err" && [ ! -s "$work/out" ] &&
       [ "$(cksum < "$csv")" = "$sum_before" ]; then
        tap_ok 0 "$args -> exit 2: $(cat "$work/err")"
    else
        tap_ok 1 "$args -> exit $rc, $lines stderr line(s), want '$want'" "$work/err" "$work/out"
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
names=$("$BENCH" --strategy list | awk '/^[a-z]/ {printf "%s%s", n++ ? ", " : "", $1}') # the registry's
case_ "--strategy 'tp3ep': unknown strategy 'tp3ep' (accepted: $names, all)" --strategy tp3ep --csv "$csv"
case_ "tp2ep:chunks='0' must be an integer from 1 to 16" --strategy tp2ep:chunks=0 --csv "$csv"
case_ "--strategy hier:node_size=3 does not divide 4 ranks" --strategy hier:node_size=3 --ranks 4 --csv "$csv"
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
EPB_TEST_DELAY=nophase:5 case_ "EPB_TEST_DELAY 'nophase:5': no MoE phase 'nophase'" --strategy local --ranks 1 --csv "$csv"
# issue 12 items 7, 10, 11: what was silently accepted or ran away
case_ "--strategy 'agrs,,tp2ep': empty item" --strategy agrs,,tp2ep --ranks 1 --csv "$csv"
case_ "--strategy 'tp2ep,': empty item" --strategy tp2ep, --ranks 1 --csv "$csv"
case_ "--strategy 'tp2ep:nosuch=2': tp2ep has no parameter 'nosuch'" --strategy tp2ep:nosuch=2 --ranks 1 --csv "$csv"
case_ "--strategy 'nosuch': unknown strategy 'nosuch'" --strategy nosuch --ranks 1 --csv "$csv"
case_ "-b, -e, -f and --imbalance size the collective microbenchmark: they need --coll" --strategy tp2ep -b 1M --ranks 1 --csv "$csv"
case_ "-b, -e, -f and --imbalance size the collective microbenchmark" --strategy tp2ep --imbalance 2 --ranks 1 --csv "$csv"
case_ "--skew '0x10': expected a number from 0 to 100" --strategy tp2ep --skew 0x10 --ranks 1 --csv "$csv"
case_ "--ranks 1048576: more than 16 ranks per core" --coll alltoall --ranks 1048576 --csv "$csv"
cp "$csv" "$work/torn.csv"; printf '2,run' >> "$work/torn.csv" # a row cut short
case_ "torn.csv: its last row is torn" --coll allreduce -b 1K -e 1K -n 1 -w 0 --ranks 1 --csv "$work/torn.csv"
# issue 14: the layer features and the presets
case_ "--topk-groups 5 exceeds --groups 4" --strategy tp2ep --experts 8 --groups 4 --topk-groups 5 --ranks 1 --csv "$csv"
case_ "--groups 3 does not divide --experts 8" --strategy tp2ep --experts 8 --groups 3 --topk-groups 1 --ranks 1 --csv "$csv"
case_ "--top-k 3 exceeds the 2 experts of the --topk-groups 1 best groups (--groups 4 of 2 experts each)" \
    --strategy dedup --experts 8 --groups 4 --topk-groups 1 --top-k 3 --ranks 1 --csv "$csv"
case_ "--groups 4 needs --topk-groups M" --strategy tp2ep --experts 8 --groups 4 --ranks 1 --csv "$csv"
case_ "--topk-groups 2 needs --groups G" --strategy tp2ep --experts 8 --topk-groups 2 --ranks 1 --csv "$csv"
case_ "--groups '65': expected an integer from 1 to 64" --strategy tp2ep --experts 130 --groups 65 --topk-groups 1 --ranks 1 --csv "$csv"
case_ "--shared-ffn 64 needs shared experts (--shared S, S >= 1)" --strategy tp2ep --shared-ffn 64 --ranks 1 --csv "$csv"
case_ "--shared-ffn 64 needs shared experts" --strategy tp2ep --model deepseek-v3 --shared 0 --shared-ffn 64 --ranks 1 --csv "$csv"
case_ "--shared '-1': expected an integer from 0" --strategy tp2ep --shared -1 --ranks 1 --csv "$csv"
case_ "--route-scale '0': expected a positive number" --strategy tp2ep --route-scale 0 --ranks 1 --csv "$csv"
case_ "--dispatch-dtype 'e5m2': expected fp8 or act" --strategy tp2ep --dispatch-dtype e5m2 --ranks 1 --csv "$csv"
case_ "--dispatch-dtype fp8 with --gate-before" --strategy tp2ep --dispatch-dtype fp8 --gate-before --ranks 1 --csv "$csv"
case_ "--dispatch-dtype fp8 with --gate-before" --strategy agrs --model llama4-scout --scale-down 64 --dispatch-dtype fp8 --ranks 1 --csv "$csv"
# the expert capacity (issue 22)
case_ "--capacity-factor '-1': '-1' is not a number from 0" --strategy tp2ep --capacity-factor -1 --ranks 1 --csv "$csv"
case_ "--capacity-factor 'nan': 'nan' is not a number" --strategy tp2ep --capacity-factor nan --ranks 1 --csv "$csv"
case_ "--capacity-factor '1,,2': empty list element" --strategy tp2ep --capacity-factor 1,,2 --ranks 1 --csv "$csv"
case_ "--drop-policy 'first': expected probs or position" --strategy tp2ep --capacity-factor 1 --drop-policy first --ranks 1 --csv "$csv"
case_ "--drop-policy position needs an expert capacity" --strategy tp2ep --drop-policy position --ranks 1 --csv "$csv"
case_ "--drop-policy probs needs an expert capacity" --strategy tp2ep --capacity-factor 0 --drop-policy probs --ranks 1 --csv "$csv"
case_ "--pad-to-capacity needs an expert capacity" --strategy tp2ep --pad-to-capacity --ranks 1 --csv "$csv"
case_ "--pad-to-capacity: dedup has no per-expert block" --strategy dedup --capacity-factor 1 --pad-to-capacity --ranks 1 --csv "$csv"
case_ "--pad-to-capacity: tp2ep in chunks has no per-expert block" --strategy tp2ep:chunks=2 --capacity-factor 1 --pad-to-capacity --ranks 1 --csv "$csv"
case_ "--pad-to-capacity: local has no per-expert block" --strategy all --capacity-factor 1 --pad-to-capacity --ranks 1 --csv "$csv"
# redundant experts (issue 22)
case_ "--redundant '-2': '-2' is not an integer from 0" --strategy tp2ep --redundant -2 --ranks 1 --csv "$csv"
case_ "--redundant 'x': 'x' is not an integer" --strategy tp2ep --redundant x --ranks 1 --csv "$csv"
case_ "--redundant 3 cannot be divided over 2 ranks" --strategy tp2ep --experts 4 --redundant 3 --ranks 2 --csv "$csv"
case_ "--redundant 2: local holds every expert on every rank" --strategy local --redundant 2 --ranks 1 --csv "$csv"
case_ "--pad-to-capacity with --redundant" --strategy tp2ep --capacity-factor 1 --pad-to-capacity --redundant 0,2 --ranks 2 --csv "$csv"
models=$("$BENCH" --model list | awk '{printf "%s%s", n++ ? ", " : "", $1}') # the presets' own list
case_ "--model 'gpt-5': unknown model (accepted: $models, list)" --strategy tp2ep --model gpt-5 --ranks 1 --csv "$csv"
case_ "--scale-down '0': expected an integer from 1" --model deepseek-v3 --scale-down 0 --ranks 1 --csv "$csv"
case_ "--decode: --tokens 512 is not a decode size (1..256 tokens per rank)" --decode --tokens 1,512 --ranks 1 --csv "$csv"
case_ "--decode measures decode-size steps; --train 3 runs a loss curve instead" --decode --train 3 --ranks 1 --csv "$csv"
case_ "MoE options (--experts, --top-k, --train...) need --strategy, not --coll" --coll alltoall --decode --csv "$csv"
case_ "--scale-down 'x4': expected an integer" --model deepseek-v3 --scale-down x4 --ranks 1 --csv "$csv"
case_ "--scale-down 4096 leaves nothing of --hidden 7168, --ffn 2048 or --shared-ffn" --model deepseek-v3 --scale-down 4096 \
    --ranks 1 --csv "$csv"
case_ "layer too large for memory: needs .* GiB .*--experts 256 --top-k 8 --shared 1 --shared-ffn 2048) .*; --scale-down [0-9]* fits" \
    --model deepseek-v3 --strategy all --ranks 2 --csv "$csv"
case_ "--topk-groups 4 exceeds --groups 1" --model deepseek-v3 --scale-down 16 --groups 1 --ranks 2 --csv "$csv"
# issue 20: outputs that are one file, -J over what is not JSON, options after --version or a list, control bytes
# in a value, --dry-run
case_ "--csv $csv and -J/--json $csv name the same file" --coll allreduce -b 1K -e 1K --ranks 1 --csv "$csv" -J "$csv"
case_ "--csv $work/n1.csv and -J/--json $work/./n1.csv name the same file" --coll allreduce --ranks 1 \
    --csv "$work/n1.csv" -J "$work/./n1.csv"
case_ "--csv $csv and --per-rank $csv name the same file" --strategy local --ranks 1 --csv "$csv" --per-rank "$csv"
case_ "-J/--json $csv: exists and is not a JSON file" --coll allreduce --ranks 1 --csv "$work/n2.csv" -J "$csv"
mkfifo "$work/fifo"
case_ "-J/--json $work/fifo: exists and is a FIFO, not a regular file" --coll allreduce --ranks 1 --csv "$work/n3.csv" -J "$work/fifo"
case_ "--bogus: unknown option" --version --bogus
case_ "--bogus: unknown option" --strategy list --bogus
case_ "--coll 'all\\\\nfoo': unknown collective" --coll $'all\nfoo' --csv "$csv"
case_ "--csv $work/x\\\\x1b\\[2J.csv/y: directory" --coll all --csv "$work/x"$'\e'"[2J.csv/y" --ranks 1
case_ "-n/--iters '0'" --coll all -n 0 --dry-run --csv "$csv"
case_ "more than 16 ranks per core" --coll all --ranks 100000 --dry-run --csv "$csv"
"$BENCH" --strategy tp2ep --ranks 2 --csv "$work/dry.csv" --dry-run >"$work/out" 2>"$work/err"
rc=$?; [ $rc = 0 ] && [ ! -s "$work/out" ] && [ ! -s "$work/err" ] && [ ! -e "$work/dry.csv" ]
tap_ok $? "--dry-run: exit 0, nothing printed, nothing written (exit $rc)" "$work/err" "$work/out"
[ ! -e "$work/n1.csv" ] && [ ! -e "$work/n2.csv" ] && [ ! -e "$work/n3.csv" ] && [ -p "$work/fifo" ]
tap_ok $? "the refused outputs were not created, the FIFO is still a FIFO"
[ -f "$work/foreign.csv" ] && [ "$(cat "$work/foreign.csv")" = "$(printf 'a,b\n1,2')" ]
tap_ok $? "a CSV with a foreign header is left unchanged by every case"
# a full disk (the file size limit stands in for it; SIGXFSZ ignored so that the write fails instead): a runtime
# failure, exit 3; a new CSV is not left behind as a 0-byte file; --dump's write failure is 3, not 2
# (the limit holds for every file the process writes: its output goes through a pipe)
(trap '' XFSZ; ulimit -f 0; exec "$BENCH" --coll allreduce -b 1K -e 1K -n 1 -w 0 --ranks 1 --csv "$work/full.csv") \
    2>&1 | cat >"$work/err"
rc=${PIPESTATUS[0]}; [ $rc = 3 ] && [ ! -e "$work/full.csv" ] && grep -q "write failed" "$work/err"
tap_ok $? "a CSV write that fails (full disk) exits 3 and leaves no new file behind (exit $rc)" "$work/err"
(trap '' XFSZ; ulimit -f 8; exec "$BENCH" --strategy local --ranks 1 -n 1 -w 0 --tokens 64 --hidden 64 --ffn 64 \
    --dump "$work/dump" --csv "$work/full2.csv") 2>&1 | cat >"$work/err"
rc=${PIPESTATUS[0]}; [ $rc = 3 ] && grep -q -- "--dump: writing" "$work/err"
tap_ok $? "a --dump write that fails (full disk) exits 3 (exit $rc)" "$work/err"
tap_done
