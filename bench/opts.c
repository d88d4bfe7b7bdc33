/* Option parsing and validation: every bad input is one line naming the option and the accepted values. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "epb_config.h"
#include "moe.h"
#include "strategy.h"

#define DEFAULT_CSV "results/epbench.csv"

enum {
    OPT_COLL = 256, OPT_CALIBRATE, OPT_CSV, OPT_RANKS, OPT_BIND, OPT_IMBALANCE, OPT_DTYPE, OPT_SEED, OPT_COMM,
    OPT_VERSION, OPT_STRATEGY, OPT_EXPERTS, OPT_TOPK, OPT_TOKENS, OPT_HIDDEN, OPT_FFN, OPT_ROUTER, OPT_ROUTE_NORM,
    OPT_SKEW, OPT_BIAS_COEFF, OPT_DUMP, OPT_TRAIN, OPT_LR, OPT_LOSS_CSV, OPT_DEVICE, OPT_PER_RANK, OPT_OVERSUB,
    OPT_HOSTFILE, OPT_TIMEOUT, OPT_MODEL, OPT_SCALE_DOWN, OPT_SHARED, OPT_SHARED_FFN, OPT_GATE_BEFORE, OPT_ROUTE_SCALE,
    OPT_GROUPS, OPT_TOPK_GROUPS, OPT_QUIET, OPT_DRY_RUN, OPT_DECODE,
    OPT_DISPATCH_DTYPE, OPT_CAPACITY, OPT_DROP_POLICY, OPT_PAD_CAPACITY, OPT_REDUNDANT,
};

static const struct option long_opts[] = {
    { "coll", required_argument, 0, OPT_COLL },
    { "calibrate", no_argument, 0, OPT_CALIBRATE },
    { "min-bytes", required_argument, 0, 'b' },
    { "max-bytes", required_argument, 0, 'e' },
    { "step-factor", required_argument, 0, 'f' },
    { "iters", required_argument, 0, 'n' },
    { "warmup", required_argument, 0, 'w' },
    { "check", required_argument, 0, 'c' },
    /* nccl-tests' spellings of the same options */
    { "minbytes", required_argument, 0, 'b' },
    { "maxbytes", required_argument, 0, 'e' },
    { "stepfactor", required_argument, 0, 'f' },
    { "warmup_iters", required_argument, 0, 'w' },
    { "json", required_argument, 0, 'J' },
    { "quiet", no_argument, 0, OPT_QUIET },
    { "csv", required_argument, 0, OPT_CSV },
    { "ranks", required_argument, 0, OPT_RANKS },
    { "bind", required_argument, 0, OPT_BIND },
    { "imbalance", required_argument, 0, OPT_IMBALANCE },
    { "dtype", required_argument, 0, OPT_DTYPE },
    { "seed", required_argument, 0, OPT_SEED },
    { "comm", required_argument, 0, OPT_COMM },
    { "device", required_argument, 0, OPT_DEVICE },
    { "strategy", required_argument, 0, OPT_STRATEGY },
    { "experts", required_argument, 0, OPT_EXPERTS },
    { "top-k", required_argument, 0, OPT_TOPK },
    { "tokens", required_argument, 0, OPT_TOKENS },
    { "hidden", required_argument, 0, OPT_HIDDEN },
    { "ffn", required_argument, 0, OPT_FFN },
    { "router", required_argument, 0, OPT_ROUTER },
    { "route-norm", no_argument, 0, OPT_ROUTE_NORM },
    { "skew", required_argument, 0, OPT_SKEW },
    { "bias-coeff", required_argument, 0, OPT_BIAS_COEFF },
    { "dump", required_argument, 0, OPT_DUMP },
    { "train", required_argument, 0, OPT_TRAIN },
    { "lr", required_argument, 0, OPT_LR },
    { "loss-csv", required_argument, 0, OPT_LOSS_CSV },
    { "per-rank", required_argument, 0, OPT_PER_RANK },
    { "oversubscribe", no_argument, 0, OPT_OVERSUB },
    { "hostfile", required_argument, 0, OPT_HOSTFILE },
    { "timeout", required_argument, 0, OPT_TIMEOUT },
    { "model", required_argument, 0, OPT_MODEL },
    { "scale-down", required_argument, 0, OPT_SCALE_DOWN },
    { "shared", required_argument, 0, OPT_SHARED },
    { "shared-ffn", required_argument, 0, OPT_SHARED_FFN },
    { "gate-before", no_argument, 0, OPT_GATE_BEFORE },
    { "route-scale", required_argument, 0, OPT_ROUTE_SCALE },
    { "groups", required_argument, 0, OPT_GROUPS },
    { "topk-groups", required_argument, 0, OPT_TOPK_GROUPS },
    { "decode", no_argument, 0, OPT_DECODE },
    { "dispatch-dtype", required_argument, 0, OPT_DISPATCH_DTYPE },
    { "capacity-factor", required_argument, 0, OPT_CAPACITY },
    { "drop-policy", required_argument, 0, OPT_DROP_POLICY },
    { "pad-to-capacity", no_argument, 0, OPT_PAD_CAPACITY },
    { "redundant", required_argument, 0, OPT_REDUNDANT },
    { "help", no_argument, 0, 'h' },
    { "version", no_argument, 0, OPT_VERSION },
    { "dry-run", no_argument, 0, OPT_DRY_RUN },
    { 0, 0, 0, 0 },
};

static void list_models(FILE *f, const char *indent)
{
    for (int i = 0; i < moe_nmodels; i++) {
        const moe_model_t *m = &moe_models[i];
        fprintf(f, "%s%-16s E=%d k=%d D=%ld F=%ld %s", indent, m->name, m->E, m->k, m->D, m->F,
                moe_router_label(m->router, m->route_norm));
        if (m->route_scale != 1) fprintf(f, " route-scale=%g", m->route_scale);
        if (m->groups > 1) fprintf(f, " groups=%d/%d", m->topk_groups, m->groups);
        if (m->gate_before) fprintf(f, " gate-before");
        if (m->shared) fprintf(f, " shared=%dx%ld", m->shared, m->Fs);
        fprintf(f, " (%s)\n", m->source);
    }
}

void bench_list(FILE *f, const bench_opts_t *o)
{
    if (o->list_models) list_models(f, "");
    else bench_list_strategies(f, "");
}

void bench_usage(FILE *f)
{
    fprintf(f,
"usage: bench --strategy LIST [options]  MoE forward+backward under expert-parallel strategies, checked\n"
"       bench --coll NAME [options]      collective microbenchmark (nccl-tests style, CSV out)\n"
"       bench --calibrate [options]      what report --project needs: copy GB/s, the GEMM and the experts' ops by\n"
"                                        rows (at --hidden x --ffn, 1024 each unless given), collectives to -e\n"
"                                        (128M); --device cuda [--dtype bf16]: a GPU's, NCCL's\n"
"       bench --help | --version\n"
"\n"
"Started by hand with --ranks N > 1, bench runs itself under mpirun with N local ranks (printing the launch\n"
"line on stderr), waits, and names a rank lost (exit 3); under mpirun, mpiexec or srun it runs as launched.\n"
"\n"
"MoE mode (comma lists sweep every combination):\n"
"  --strategy LIST       strategies (below), all, or list (print them); NAME:key=val,... sets a strategy's\n"
"                        parameters, e.g. tp2ep:chunks=4 (default tp2ep when another MoE option is given)\n"
"  --experts LIST        experts E, divisible by the ranks (default 16)\n"
"  --top-k LIST          experts per token k <= E (default 2)\n"
"  --tokens LIST         tokens per rank T (default 256); below 256 the default iterations are -n 100 -w 10\n"
"  --decode              decode-size batches: --tokens 1,2,4,...,256 unless given (each at most 256); with\n"
"                        --model NAME the published layer at those sizes. The forward phases are the decode\n"
"                        latency (the step still runs and checks the backward too)\n"
"  --hidden LIST         hidden size D (default 512)\n"
"  --ffn LIST            expert FFN size F (default 1024)\n"
"  --router softmax|sigmoid  (default softmax);  --route-norm  renormalise the k gate weights to sum 1\n"
"  --skew S              hot low-index experts: logits - S*ln(e+1), S >= 0 (default 0)\n"
"  --bias-coeff C        aux-loss-free bias update step (default 0.001)\n"
"  --route-scale X       gate weights (after --route-norm) times X > 0 (DeepSeek-V3: 2.5; default 1)\n"
"  --groups G --topk-groups M  group-limited routing: E/G consecutive experts per group, a group's score the sum\n"
"                        of its two best biased scores; each token chooses among its M best groups only\n"
"  --gate-before         the expert sees gate*x instead of its output being scaled (Llama 4; torchtitan's\n"
"                        score_before_experts)\n"
"  --dispatch-dtype fp8|act  the tokens travel to the experts as FP8 e4m3, a float32 scale per 128 elements\n"
"                        (DeepEP's dispatch format: about half of bf16's bytes), dequantized by the owner; the\n"
"                        check's reference quantizes alike, and the check also states the error against the\n"
"                        unquantized layer. Combine and backward stay in --dtype. Not with --gate-before.\n"
"                        (default act: the activation dtype)\n"
"  --capacity-factor LIST  expert capacity (GShard, Switch, Megatron): each rank's T tokens keep at most\n"
"                        ceil(C*T*k/E) pairs per expert; the rest are dropped (no expert, nothing added to y,\n"
"                        zero gradient), counted in the CSV's dropped column. 0: no capacity (0,1,1.25\n"
"                        compares with the uncapped layer; default 0)\n"
"  --drop-policy probs|position  which pairs an expert over capacity keeps: the largest gate weights, or the\n"
"                        first tokens (default probs); needs --capacity-factor\n"
"  --pad-to-capacity     every (source rank, expert) block of the dispatch padded with zero rows to the\n"
"                        capacity: even all-to-all splits, fixed expert rows (static shapes; tp2ep in one\n"
"                        chunk; at 1 rank nothing is exchanged and nothing padded)\n"
"  --redundant LIST      redundant experts (DeepSeek's EPLB): R more expert slots (R a multiple of the ranks),\n"
"                        the most loaded experts of the first batch replicated and packed by EPLB's greedy rule;\n"
"                        a replicated expert's pairs split among its replicas by token, their gradients summed.\n"
"                        The CSV's load_plain and load_max: the busiest rank's rows without and with. 0: none\n"
"                        (0,4 compares them; default 0). Not with local or --pad-to-capacity\n"
"  --shared S            S shared SwiGLU experts every token passes through, added to y (default 0)\n"
"  --shared-ffn F        their FFN size each (default: the expert FFN size); needs --shared\n"
"  --model NAME|list     a published configuration (E, k, router, route-norm/scale, groups, gate-before, shared\n"
"                        experts, D, F; below); --tokens stays yours and any option given overrides it\n"
"  --scale-down N        divide D, F and the shared FFN by N (E, k, groups and routing stay): a preset too big\n"
"                        for this machine's memory (refused, exit 2, with the estimate) runs here\n"
"  --dump DIR            write the global tensors of one step as .npy + config.json (DESIGN.md contract)\n"
"  --train N             N SGD steps on an MSE loss instead of the benchmark; loss curve to --loss-csv\n"
"  --lr R                SGD learning rate for --train (default 50: the MSE is a mean over all P*T*D outputs)\n"
"  --loss-csv FILE       loss curve rows strategy,ranks,step,loss (default results/loss.csv)\n"
"  --per-rank FILE       every rank's own time, wait, bytes and entries per phase and iteration (CSV)\n"
"  With -c 1 (default) rank 0 gathers y, dx and every gradient, tokens_per_expert and the updated bias,\n"
"  recomputes the global batch on one device and compares (float32: relative error < 1e-5).\n"
"\n"
"Collective microbenchmark:\n"
"  --coll NAME           allgather, reduce_scatter, alltoall, alltoallv, allreduce, or all\n"
"  -b, --min-bytes SIZE  smallest size, K/M/G suffixes (default 64K, rounded up to split evenly over the ranks)\n"
"  -e, --max-bytes SIZE  largest size (default 16M)\n"
"  -f, --step-factor N   multiply the size by N each step, N >= 2 (default 2)\n"
"  -J, --json FILE       also write the results as nccl-tests JSON (version 2 keys: config, devices, results,\n"
"                        out_of_bounds, average_bus_bandwidth), replaced whole: an existing FILE must be JSON\n"
"                        (never the --csv file, nor a results CSV or anything else given by mistake)\n"
"  nccl-tests' spellings work too: --minbytes, --maxbytes, --stepfactor, --iters, --warmup_iters, --check.\n"
"  --imbalance S         alltoallv only: seeded Zipf skew of per-destination counts, S >= 0 (default 0 = even)\n"
"  --dtype f32|bf16      element type (default f32; bf16 reductions add in float32; MoE bf16 needs --device cuda)\n"
"  Sizes count as in nccl-tests: allgather the gathered buffer, reduce_scatter and alltoall(v) the send\n"
"  buffer, allreduce the buffer; a given size must split evenly into elements over the ranks. The table also\n"
"  shows size/P, one rank's block (alltoall: what it sends each peer, OSU's message size). Times are the\n"
"  maximum over ranks per iteration (min/median/mean/p95/max over iterations); # Avg bus bandwidth is the\n"
"  mean busbw over the sizes, as nccl-tests prints it.\n"
"\n"
"Common:\n"
"  -n, --iters N         timed iterations per size (default 20)\n"
"  -w, --warmup N        untimed iterations first (default 5)\n"
"  -c, --check 0|1       verify results against seeded expectations (default 1); wrong elements exit 1\n"
"  --csv FILE            append CSV schema 5 rows (default " DEFAULT_CSV ", its folder created; docs/CSV.md)\n"
"  --ranks N             ranks to launch when started by hand (default 4, or this host's core count (at least\n"
"                        2) when 4 would oversubscribe it; 1 runs in-process); more ranks than cores runs with a\n"
"                        warning (the timings then measure the scheduler); more than 16 per core is refused\n"
"                        unless --oversubscribe or --hostfile says so\n"
"  --quiet               no progress line on stderr (default: one per configuration, updating on a terminal)\n"
"  --hostfile FILE       mpirun's hostfile when bench launches itself (ranks on those hosts)\n"
"  --oversubscribe       allow more local ranks than the bound above\n"
"  --timeout S           end the job (exit 3) when one collective call has not completed after S seconds, naming\n"
"                        this rank, the phase or mode, the call and the ranks of its node that have not arrived\n"
"                        (default 600; 0 = never; a stopped rank otherwise hangs the job for ever)\n"
"  --bind none|core|numa pin each rank to its own core / NUMA node (round-robin when oversubscribed; with\n"
"                        --device cuda, among the CPUs near its GPU). Default, unless the launcher bound the\n"
"                        ranks: the CPUs near the GPU with --device cuda, else a core each when ranks share a node\n"
"  --comm auto|mpi|self|nccl  communicator (default auto: mpi under a launcher, self for one rank; with\n"
"                        --device cuda: nccl when built with it and each rank has its own GPU, else mpi\n"
"                        staging device buffers through pinned host memory)\n"
"  --device cpu|cuda     where the MoE layer runs and the data buffers live (default cuda when a GPU is\n"
"                        visible, else cpu); one GPU per rank by node-local rank, shared when fewer\n"
"  --seed N              seed of every input (default 42)\n"
"  --dry-run             check the options, the sweep and the output files as a run would (exit 2 naming what\n"
"                        is wrong), then exit 0 having run and written nothing\n"
"  -h, --help            this text;  --version  version, git revision and what was built in\n"
"\n"
"Exit codes: 0 ok, 1 a check failed, 2 bad usage or input, 3 runtime failure (MPI, CUDA, NCCL, memory, a rank\n"
"lost, a collective past --timeout), with the rank and phase.\n"
"The CSV columns and units: docs/CSV.md.\n"
"\n"
"Examples:\n"
"  bench --strategy tp2ep --experts 16\n"
"  bench --strategy all --top-k 1,2,4 --tokens 1024 --hidden 1024 --ffn 1024 --ranks 2\n"
"  bench --model deepseek-v3 --scale-down 16 --strategy all --ranks 2\n"
"  bench --coll alltoall -b 64K -e 16M --ranks 2\n"
"  bench --coll alltoallv --imbalance 1.5 --ranks 4 --csv a2av.csv\n"
"  mpirun -np 8 --hostfile hosts bench --coll all -b 1M -e 256M -n 50\n"
"  bench --calibrate --csv results/peak.csv\n");
    fprintf(f, "\nStrategies (--strategy NAME[:key=val,...]):\n");
    bench_list_strategies(f, "  ");
    fprintf(f, "\nModels (--model NAME):\n");
    list_models(f, "  ");
}

void bench_list_strategies(FILE *f, const char *indent)
{
    for (int i = 0; i < moe_nstrategies; i++) {
        const moe_strategy_t *st = moe_strategies[i];
        fprintf(f, "%s%-8s %s (%s)\n", indent, st->name, st->what, st->anchor);
        for (int p = 0; p < st->nparams; p++)
            fprintf(f, "%s  :%s=N  %s (default %ld, %ld..%ld)\n", indent, st->params[p].key, st->params[p].what,
                    st->params[p].def, st->params[p].lo, st->params[p].hi);
    }
}

int bench_moe_iters(const bench_opts_t *o, long T, int *warmup)
{
    int small = T < BENCH_DECODE_T;
    *warmup = o->warmup_given || !small ? o->warmup : BENCH_DECODE_WARMUP;
    return o->iters_given || !small ? o->iters : BENCH_DECODE_ITERS;
}

static void defaults(bench_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->mode = MODE_NONE;
    o->ranks = 4;
    o->iters = 20;
    o->warmup = 5;
    o->check = 1;
    o->seed = 42;
    o->dtype = EPB_DT_F32;
    o->bind = BIND_AUTO;
    snprintf(o->comm, sizeof o->comm, "auto");
    snprintf(o->csv, sizeof o->csv, DEFAULT_CSV);
    o->min_bytes = 64 << 10;
    o->max_bytes = 16 << 20;
    o->factor = 2;
    o->experts[0] = 16;
    o->top_k[0] = 2;
    o->tokens[0] = 256;
    o->hidden[0] = 512;
    o->ffn[0] = 1024;
    o->bias_coeff = 1e-3;
    o->route_scale = 1;
    o->scale_down = 1;
    o->lr = 50;
    o->timeout_s = 600; /* generous: a collective of a healthy run takes seconds at most */
    snprintf(o->loss_csv, sizeof o->loss_csv, "results/loss.csv");
}

/* A comma list v of option name: each element through one(tok, i, ctx) (non-zero: not a value; `what` names the
 * values in the message), at most BENCH_MAX_LIST; the count into *n */
static int split_list(const char *name, const char *v, const char *what, int (*one)(const char *, int, void *),
                      void *ctx, int *n, epb_err_t *err)
{
    char buf[256];
    if (strlen(v) >= sizeof buf) return epb_fail(err, EPB_EUSAGE, "%s: list too long", name);
    if (strstr(v, ",,")) return epb_fail(err, EPB_EUSAGE, "%s '%s': empty list element", name, v);
    snprintf(buf, sizeof buf, "%s", v);
    *n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == BENCH_MAX_LIST)
            return epb_fail(err, EPB_EUSAGE, "%s '%s': at most %d values", name, v, BENCH_MAX_LIST);
        if (one(tok, *n, ctx)) return epb_fail(err, EPB_EUSAGE, "%s '%s': '%s' is not %s", name, v, tok, what);
        (*n)++;
    }
    if (*n == 0 || v[strlen(v) - 1] == ',' || v[0] == ',')
        return epb_fail(err, EPB_EUSAGE, "%s '%s': expected a comma list of %s", name, v, what);
    return EPB_OK;
}

typedef struct { long lo, hi, *out; } ilist_t;
static int one_int(const char *tok, int i, void *ctx)
{
    ilist_t *l = ctx;
    return epb_parse_int(tok, l->lo, l->hi, &l->out[i]);
}

/* "1,2,4" into out (at most BENCH_MAX_LIST values, each in [lo, hi]) */
static int list_opt(const char *name, const char *v, long lo, long hi, long *out, int *n, epb_err_t *err)
{
    char what[96];
    snprintf(what, sizeof what, "an integer from %ld to %ld", lo, hi);
    ilist_t l = { lo, hi, out };
    return split_list(name, v, what, one_int, &l, n, err);
}

/* --capacity-factor: numbers from 0 (no capacity) to 1e6 */
static int one_factor(const char *tok, int i, void *ctx)
{
    double *out = ctx;
    return epb_parse_double(tok, 0, 1e6, &out[i]);
}

static int add_strategy(bench_opts_t *o, const char *v, const char *text, epb_err_t *err)
{
    moe_spec_t sp;
    int rc = moe_spec_parse(text, &sp, err);
    if (rc) return rc;
    if (o->nstrategies == BENCH_MAX_LIST)
        return epb_fail(err, EPB_EUSAGE, "--strategy '%s': at most %d strategies", v, BENCH_MAX_LIST);
    moe_spec_format(&sp, o->strategies[o->nstrategies++], sizeof o->strategies[0]);
    return EPB_OK;
}

/* A comma list of NAME or NAME:key=val,key=val; an item with '=' and no ':' continues the previous one's
 * parameters ("tp2ep:chunks=2,node_size=2,agrs"). "all" is every registered strategy ("list" is bench_parse's). */
static int strategy_opt(bench_opts_t *o, const char *v, epb_err_t *err)
{
    char cur[256] = "";
    o->nstrategies = 0;
    if (strlen(v) >= sizeof cur) return epb_fail(err, EPB_EUSAGE, "--strategy: list too long");
    for (const char *p = v;;) {
        const char *end = strchr(p, ',');
        size_t l = end ? (size_t)(end - p) : strlen(p);
        if (l == 0) return epb_fail(err, EPB_EUSAGE, "--strategy '%s': empty item", v);
        int param = memchr(p, '=', l) && !memchr(p, ':', l);
        if (param && !cur[0]) return epb_fail(err, EPB_EUSAGE, "--strategy '%s': '%.*s' belongs to no strategy", v, (int)l, p);
        if (param) {
            size_t cl = strlen(cur);
            snprintf(cur + cl, sizeof cur - cl, ",%.*s", (int)l, p);
        } else {
            if (cur[0] && add_strategy(o, v, cur, err)) return EPB_EUSAGE;
            snprintf(cur, sizeof cur, "%.*s", (int)l, p);
            if (!strcmp(cur, "all")) {
                for (int i = 0; i < moe_nstrategies; i++) {
                    moe_spec_t sp;
                    moe_spec_parse(moe_strategies[i]->name, &sp, err);
                    if (o->nstrategies == BENCH_MAX_LIST)
                        return epb_fail(err, EPB_EUSAGE, "--strategy '%s': at most %d strategies", v, BENCH_MAX_LIST);
                    moe_spec_format(&sp, o->strategies[o->nstrategies++], sizeof o->strategies[0]);
                }
                cur[0] = 0;
            }
        }
        if (!end) break;
        p = end + 1;
    }
    if (cur[0] && add_strategy(o, v, cur, err)) return EPB_EUSAGE;
    return EPB_OK;
}

static int path_opt(const char *name, const char *v, char *out, size_t n, epb_err_t *err)
{
    if (!*v) return epb_fail(err, EPB_EUSAGE, "%s: expected a path", name);
    if (strlen(v) >= n) return epb_fail(err, EPB_EUSAGE, "%s: path too long", name);
    snprintf(out, n, "%s", v);
    return EPB_OK;
}

static int set_mode(bench_opts_t *o, bench_mode_t m, const char *opt, epb_err_t *err)
{
    if (o->mode != MODE_NONE && o->mode != m)
        return epb_fail(err, EPB_EUSAGE, "%s: only one of --strategy, --coll, --calibrate may be given", opt);
    o->mode = m;
    return EPB_OK;
}

static int int_opt(const char *name, const char *v, long lo, long hi, int *out, epb_err_t *err)
{
    long l;
    if (epb_parse_int(v, lo, hi, &l))
        return epb_fail(err, EPB_EUSAGE, "%s '%s': expected an integer from %ld to %ld", name, v, lo, hi);
    *out = (int)l;
    return EPB_OK;
}

static int size_opt(const char *name, const char *v, uint64_t *out, epb_err_t *err)
{
    if (epb_parse_size(v, out))
        return epb_fail(err, EPB_EUSAGE, "%s '%s': expected a positive size in bytes, e.g. 4096, 64K, 16M, 1G", name, v);
    return EPB_OK;
}

/* --model's preset into what was not given (each option given overrides its part), then the features' own rules:
 * --groups and --topk-groups go together, --shared-ffn needs shared experts */
static int apply_model(bench_opts_t *o, epb_err_t *err)
{
    const moe_model_t *m = o->model[0] ? moe_model_find(o->model) : NULL;
    if (m) {
        if (!o->nexperts) o->experts[0] = m->E, o->nexperts = 1;
        if (!o->ntop_k) o->top_k[0] = m->k, o->ntop_k = 1;
        if (!o->nhidden) o->hidden[0] = m->D, o->nhidden = 1;
        if (!o->nffn) o->ffn[0] = m->F, o->nffn = 1;
        if (!o->router_given) o->router = (int)m->router;
        if (m->route_norm) o->route_norm = 1;
        if (!o->route_scale_given) o->route_scale = m->route_scale;
        if (!o->groups && m->groups > 1) o->groups = m->groups;
        if (!o->topk_groups && m->groups > 1) o->topk_groups = m->topk_groups;
        if (m->gate_before) o->gate_before = 1;
        if (!o->shared_given) o->shared = m->shared;
        if (!o->shared_ffn_given && o->shared) o->shared_ffn = m->Fs;
    }
    if (o->groups > 1 && !o->topk_groups)
        return epb_fail(err, EPB_EUSAGE, "--groups %d needs --topk-groups M (the groups each token may choose from)",
                        o->groups);
    if (o->topk_groups && !o->groups)
        return epb_fail(err, EPB_EUSAGE, "--topk-groups %d needs --groups G", o->topk_groups);
    if (!o->groups) o->groups = 1;
    if (!o->topk_groups) o->topk_groups = 1; /* groups 1 (none) */
    if (o->shared_ffn_given && !o->shared)
        return epb_fail(err, EPB_EUSAGE, "--shared-ffn %ld needs shared experts (--shared S, S >= 1)", o->shared_ffn);
    return EPB_OK;
}

int bench_parse(int argc, char **argv, bench_opts_t *o, epb_err_t *err)
{
    defaults(o);
    opterr = 0; /* our own messages */
    optind = 1;
    int c, rc = EPB_OK, moe_opt = 0, shape_opt = 0; /* shape_opt: --hidden/--ffn, which --calibrate takes too */
    bench_mode_t act = MODE_NONE; /* --help, --version or a list: acted on once every option has parsed */
    long l;
    char names[256], snames[256], mnames[256];
    while (rc == EPB_OK && (c = getopt_long(argc, argv, ":b:e:f:n:w:c:J:h", long_opts, NULL)) != -1) {
        switch (c) {
        case OPT_COLL:
            if (strcmp(optarg, "all") && !epb_coll_find(optarg))
                return epb_fail(err, EPB_EUSAGE, "--coll '%s': unknown collective (accepted: %s, all)", optarg,
                                epb_coll_names(names, sizeof names));
            snprintf(o->coll, sizeof o->coll, "%s", optarg);
            rc = set_mode(o, MODE_COLL, "--coll", err);
            break;
        case OPT_CALIBRATE: rc = set_mode(o, MODE_CALIBRATE, "--calibrate", err); break;
        case 'b': rc = size_opt("-b/--min-bytes", optarg, &o->min_bytes, err); o->min_given = o->coll_opt_given = 1; break;
        case 'e': rc = size_opt("-e/--max-bytes", optarg, &o->max_bytes, err); o->max_given = 1; break;
        case 'f': rc = int_opt("-f/--step-factor", optarg, 2, 1024, &o->factor, err); o->coll_opt_given = 1; break;
        case 'n': rc = int_opt("-n/--iters", optarg, 1, 100000000, &o->iters, err); o->iters_given = 1; break;
        case 'w': rc = int_opt("-w/--warmup", optarg, 0, 100000000, &o->warmup, err); o->warmup_given = 1; break;
        case 'c': rc = int_opt("-c/--check", optarg, 0, 1, &o->check, err); break;
        case OPT_CSV:
            if (!*optarg) return epb_fail(err, EPB_EUSAGE, "--csv: expected a file path");
            if (strlen(optarg) >= sizeof o->csv) return epb_fail(err, EPB_EUSAGE, "--csv: path too long");
            snprintf(o->csv, sizeof o->csv, "%s", optarg);
            o->csv_given = 1;
            break;
        case OPT_RANKS:
            rc = int_opt("--ranks", optarg, 1, 1 << 20, &o->ranks, err);
            o->ranks_given = 1;
            break;
        case OPT_BIND:
            if (!strcmp(optarg, "none")) o->bind = BIND_NONE;
            else if (!strcmp(optarg, "core")) o->bind = BIND_CORE;
            else if (!strcmp(optarg, "numa")) o->bind = BIND_NUMA;
            else return epb_fail(err, EPB_EUSAGE, "--bind '%s': expected none, core or numa", optarg);
            break;
        case OPT_IMBALANCE:
            if (epb_parse_double(optarg, 0, 16, &o->imbalance))
                return epb_fail(err, EPB_EUSAGE, "--imbalance '%s': expected a number from 0 (even) to 16", optarg);
            o->coll_opt_given = 1;
            break;
        case OPT_DTYPE:
            if (epb_dtype_parse(optarg, &o->dtype))
                return epb_fail(err, EPB_EUSAGE, "--dtype '%s': expected f32 or bf16", optarg);
            break;
        case OPT_SEED:
            if (epb_parse_int(optarg, 0, LONG_MAX, &l))
                return epb_fail(err, EPB_EUSAGE, "--seed '%s': expected a non-negative integer", optarg);
            o->seed = (uint64_t)l;
            break;
        case OPT_COMM:
            if (strcmp(optarg, "auto") && strcmp(optarg, "mpi") && strcmp(optarg, "self") && strcmp(optarg, "nccl"))
                return epb_fail(err, EPB_EUSAGE, "--comm '%s': expected auto, mpi or self, or nccl with --device cuda "
                                "(built in: %s)", optarg, epb_comm_backends());
            snprintf(o->comm, sizeof o->comm, "%s", optarg);
            break;
        case OPT_DEVICE:
            if (!strcmp(optarg, "cpu")) o->device = BENCH_DEV_CPU;
            else if (!strcmp(optarg, "cuda")) o->device = BENCH_DEV_CUDA;
            else return epb_fail(err, EPB_EUSAGE, "--device '%s': expected cpu or cuda", optarg);
            o->device_given = 1;
            break;
        case OPT_STRATEGY:
            if (!strcmp(optarg, "list")) {
                if (act == MODE_NONE) act = MODE_LIST;
                break;
            }
            rc = strategy_opt(o, optarg, err);
            if (!rc) rc = set_mode(o, MODE_MOE, "--strategy", err);
            break;
        case OPT_EXPERTS: rc = list_opt("--experts", optarg, 1, 4096, o->experts, &o->nexperts, err); moe_opt = 1; break;
        case OPT_TOPK: rc = list_opt("--top-k", optarg, 1, 4096, o->top_k, &o->ntop_k, err); moe_opt = 1; break;
        case OPT_TOKENS: rc = list_opt("--tokens", optarg, 1, 1L << 24, o->tokens, &o->ntokens, err); moe_opt = 1; break;
        case OPT_HIDDEN: rc = list_opt("--hidden", optarg, 1, 1L << 20, o->hidden, &o->nhidden, err); shape_opt = 1; break;
        case OPT_FFN: rc = list_opt("--ffn", optarg, 1, 1L << 20, o->ffn, &o->nffn, err); shape_opt = 1; break;
        case OPT_ROUTER: {
            moe_router_t rt;
            if (moe_router_parse(optarg, &rt))
                return epb_fail(err, EPB_EUSAGE, "--router '%s': expected softmax or sigmoid", optarg);
            o->router = (int)rt;
            o->router_given = 1;
            moe_opt = 1;
            break;
        }
        case OPT_MODEL:
            if (!strcmp(optarg, "list")) {
                if (act == MODE_NONE) act = MODE_LIST, o->list_models = 1;
                break;
            }
            if (!moe_model_find(optarg))
                return epb_fail(err, EPB_EUSAGE, "--model '%s': unknown model (accepted: %s, list)", optarg,
                                moe_model_names(mnames, sizeof mnames));
            snprintf(o->model, sizeof o->model, "%s", optarg);
            moe_opt = 1;
            break;
        case OPT_SCALE_DOWN: rc = int_opt("--scale-down", optarg, 1, 1 << 20, &o->scale_down, err); moe_opt = 1; break;
        case OPT_SHARED: rc = int_opt("--shared", optarg, 0, 1024, &o->shared, err); o->shared_given = moe_opt = 1; break;
        case OPT_SHARED_FFN:
            if (epb_parse_int(optarg, 1, 1L << 20, &o->shared_ffn))
                return epb_fail(err, EPB_EUSAGE, "--shared-ffn '%s': expected an integer from 1 to %ld", optarg, 1L << 20);
            o->shared_ffn_given = moe_opt = 1;
            break;
        case OPT_GATE_BEFORE: o->gate_before = 1; moe_opt = 1; break;
        case OPT_ROUTE_SCALE:
            if (epb_parse_double(optarg, 0, 1e6, &o->route_scale) || !(o->route_scale > 0))
                return epb_fail(err, EPB_EUSAGE, "--route-scale '%s': expected a positive number", optarg);
            o->route_scale_given = moe_opt = 1;
            break;
        case OPT_GROUPS: rc = int_opt("--groups", optarg, 1, MOE_MAX_GROUPS, &o->groups, err); moe_opt = 1; break;
        case OPT_DECODE: o->decode = 1; moe_opt = 1; break;
        case OPT_DISPATCH_DTYPE:
            if (strcmp(optarg, "fp8") && strcmp(optarg, "act"))
                return epb_fail(err, EPB_EUSAGE, "--dispatch-dtype '%s': expected fp8 or act (the activation dtype)",
                                optarg);
            o->dispatch_fp8 = !strcmp(optarg, "fp8");
            moe_opt = 1;
            break;
        case OPT_CAPACITY:
            rc = split_list("--capacity-factor", optarg, "a number from 0 (no capacity) to 1e6", one_factor,
                            o->capacity, &o->ncapacity, err);
            moe_opt = 1;
            break;
        case OPT_DROP_POLICY: {
            moe_drop_t d;
            if (moe_drop_parse(optarg, &d))
                return epb_fail(err, EPB_EUSAGE, "--drop-policy '%s': expected probs or position", optarg);
            o->drop_policy = (int)d;
            o->drop_policy_given = moe_opt = 1;
            break;
        }
        case OPT_PAD_CAPACITY: o->pad_to_capacity = 1; moe_opt = 1; break;
        case OPT_REDUNDANT:
            rc = list_opt("--redundant", optarg, 0, MOE_MAX_REDUNDANT, o->redundant, &o->nredundant, err);
            moe_opt = 1;
            break;
        case OPT_TOPK_GROUPS: rc = int_opt("--topk-groups", optarg, 1, MOE_MAX_GROUPS, &o->topk_groups, err); moe_opt = 1; break;
        case OPT_ROUTE_NORM: o->route_norm = 1; moe_opt = 1; break;
        case OPT_SKEW:
            if (epb_parse_double(optarg, 0, 100, &o->skew))
                return epb_fail(err, EPB_EUSAGE, "--skew '%s': expected a number from 0 to 100", optarg);
            moe_opt = 1;
            break;
        case OPT_BIAS_COEFF:
            if (epb_parse_double(optarg, 0, 1e3, &o->bias_coeff))
                return epb_fail(err, EPB_EUSAGE, "--bias-coeff '%s': expected a number >= 0", optarg);
            moe_opt = 1;
            break;
        case OPT_DUMP: rc = path_opt("--dump", optarg, o->dump, sizeof o->dump, err); moe_opt = 1; break;
        case OPT_TRAIN: rc = int_opt("--train", optarg, 1, 1000000, &o->train, err); moe_opt = 1; break;
        case OPT_LR:
            if (epb_parse_double(optarg, 0, 1e6, &o->lr) || o->lr <= 0)
                return epb_fail(err, EPB_EUSAGE, "--lr '%s': expected a positive number", optarg);
            moe_opt = 1;
            break;
        case OPT_LOSS_CSV: rc = path_opt("--loss-csv", optarg, o->loss_csv, sizeof o->loss_csv, err); moe_opt = 1; break;
        case OPT_PER_RANK: rc = path_opt("--per-rank", optarg, o->per_rank, sizeof o->per_rank, err); moe_opt = 1; break;
        case OPT_OVERSUB: o->oversubscribe = 1; break;
        case OPT_QUIET: o->quiet = 1; break;
        case 'J': rc = path_opt("-J/--json", optarg, o->json, sizeof o->json, err); break;
        case OPT_HOSTFILE: rc = path_opt("--hostfile", optarg, o->hostfile, sizeof o->hostfile, err); break;
        case OPT_TIMEOUT:
            if (epb_parse_double(optarg, 0, 604800, &o->timeout_s) || (o->timeout_s > 0 && o->timeout_s < 0.1))
                return epb_fail(err, EPB_EUSAGE, "--timeout '%s': expected seconds, 0 (never) or from 0.1 to 604800",
                                optarg);
            break;
        case 'h': act = MODE_HELP; break;
        case OPT_VERSION: if (act != MODE_HELP) act = MODE_VERSION; break;
        case OPT_DRY_RUN: o->dry_run = 1; break;
        case ':':
            return epb_fail(err, EPB_EUSAGE, "%s: missing value (see bench --help)", argv[optind - 1]);
        default:
            if (optopt) return epb_fail(err, EPB_EUSAGE, "-%c: unknown option (see bench --help)", optopt);
            return epb_fail(err, EPB_EUSAGE, "%s: unknown option (see bench --help)", argv[optind - 1]);
        }
    }
    if (rc) return rc;
    if (optind < argc)
        return epb_fail(err, EPB_EUSAGE, "'%s': unexpected argument (options start with -; see bench --help)",
                        argv[optind]);
    if (act != MODE_NONE) { /* every option given was well formed; what they would run is not asked for */
        o->mode = act;
        return EPB_OK;
    }
    if (o->mode == MODE_CALIBRATE && shape_opt) { /* the calibration's GEMM and experts at D, F */
        if (o->nhidden > 1 || o->nffn > 1)
            return epb_fail(err, EPB_EUSAGE, "--calibrate takes one --hidden and one --ffn (the shape it measures)");
        o->cal_hidden = o->nhidden ? o->hidden[0] : 0;
        o->cal_ffn = o->nffn ? o->ffn[0] : 0;
        shape_opt = 0;
    }
    moe_opt |= shape_opt;
    if (o->mode == MODE_NONE && moe_opt) { /* `bench --experts 16` means the registry's default strategy */
        if ((rc = strategy_opt(o, moe_strategy_default()->name, err))) return rc;
        o->mode = MODE_MOE;
    }
    if (o->mode == MODE_MOE && (o->coll_opt_given || o->max_given))
        return epb_fail(err, EPB_EUSAGE, "-b, -e, -f and --imbalance size the collective microbenchmark: they need "
                        "--coll (size a MoE run with --tokens, --hidden, --ffn)");
    if (o->mode == MODE_CALIBRATE && o->coll_opt_given)
        return epb_fail(err, EPB_EUSAGE, "-b, -f and --imbalance are for --coll (--calibrate takes -e: the largest copy and collective size)");
    if (o->json[0] && o->mode != MODE_COLL)
        return epb_fail(err, EPB_EUSAGE, "-J/--json %s: nccl-tests JSON is written by --coll only", o->json);
    if (moe_opt && o->mode != MODE_MOE)
        return epb_fail(err, EPB_EUSAGE, "MoE options (--experts, --top-k, --train...) need --strategy, not --%s",
                        o->mode == MODE_COLL ? "coll" : "calibrate");
    if (o->mode == MODE_NONE)
        return epb_fail(err, EPB_EUSAGE, "nothing to run: give --strategy LIST (%s, all), --coll NAME (%s, all) or "
                        "--calibrate (see bench --help)", moe_strategy_names(snames, sizeof snames),
                        epb_coll_names(names, sizeof names));
    if ((rc = apply_model(o, err))) return rc;
    int capped = 0;
    for (int i = 0; i < o->ncapacity; i++) capped |= o->capacity[i] > 0;
    if (o->drop_policy_given && !capped)
        return epb_fail(err, EPB_EUSAGE, "--drop-policy %s needs an expert capacity (--capacity-factor C, C > 0)",
                        moe_drop_name((moe_drop_t)o->drop_policy));
    if (o->pad_to_capacity && !capped)
        return epb_fail(err, EPB_EUSAGE, "--pad-to-capacity needs an expert capacity (--capacity-factor C, C > 0)");
    if (!o->ncapacity) o->ncapacity = 1; /* capacity[0] = 0: none */
    if (!o->nredundant) o->nredundant = 1; /* redundant[0] = 0: none */
    if (o->decode && o->train)
        return epb_fail(err, EPB_EUSAGE, "--decode measures decode-size steps; --train %d runs a loss curve instead: "
                        "give one of them", o->train);
    if (o->decode && !o->ntokens) /* 1, 2, 4, ... BENCH_DECODE_T tokens per rank */
        for (long t = 1; t <= BENCH_DECODE_T && o->ntokens < BENCH_MAX_LIST; t *= 2) o->tokens[o->ntokens++] = t;
    for (int i = 0; o->decode && i < o->ntokens; i++)
        if (o->tokens[i] > BENCH_DECODE_T)
            return epb_fail(err, EPB_EUSAGE, "--decode: --tokens %ld is not a decode size (1..%d tokens per rank)",
                            o->tokens[i], BENCH_DECODE_T);
    if (!o->nexperts) o->nexperts = 1;
    if (!o->ntop_k) o->ntop_k = 1;
    if (!o->ntokens) o->ntokens = 1;
    if (!o->nhidden) o->nhidden = 1;
    if (!o->nffn) o->nffn = 1;
    if (o->min_bytes > o->max_bytes) {
        char a[32], b[32];
        epb_fmt_size(o->min_bytes, a, sizeof a);
        epb_fmt_size(o->max_bytes, b, sizeof b);
        return epb_fail(err, EPB_EUSAGE, "-b/--min-bytes %s exceeds -e/--max-bytes %s", a, b);
    }
    /* the device: cuda when a GPU is visible unless told; a GPU asked for must be there. Communicators this build
     * lacks are refused here, before any rank starts (exit 2), not by every rank after the launch. */
    int ngpu = moe_cuda_device_count(), nccl = !strcmp(o->comm, "nccl");
    if (!o->device_given) o->device = ngpu > 0 && o->mode != MODE_CALIBRATE ? BENCH_DEV_CUDA : BENCH_DEV_CPU;
    if (nccl && o->device_given && o->device != BENCH_DEV_CUDA)
        return epb_fail(err, EPB_EUSAGE, "--comm nccl takes device buffers: it needs --device cuda");
    if (nccl && !EPB_HAVE_NCCL)
        return epb_fail(err, EPB_EUSAGE, "--comm nccl: this build has no NCCL (built in: %s; configure with "
                        "-Dcuda=enabled where NCCL is installed, or -Dnccl_home=DIR)", epb_comm_backends());
    if (!strcmp(o->comm, "mpi") && !epb_have_mpi())
        return epb_fail(err, EPB_EUSAGE, "--comm mpi: this build has no MPI (built in: %s)", epb_comm_backends());
    if (o->device != BENCH_DEV_CUDA && o->mode == MODE_CALIBRATE && o->dtype == EPB_DT_BF16)
        return epb_fail(err, EPB_EUSAGE, "--calibrate --dtype bf16: the CPU backend runs f32 (bf16 needs --device cuda)");
    if (o->device == BENCH_DEV_CUDA && ngpu == 0)
        return epb_fail(err, EPB_EUSAGE, "--device cuda: no CUDA device is visible here (%s); use --device cpu",
                        EPB_HAVE_CUDA ? "cudaGetDeviceCount found none or failed" : "this build has no CUDA");
    if (nccl && o->device != BENCH_DEV_CUDA)
        return ngpu == 0 ? epb_fail(err, EPB_EUSAGE, "--comm nccl needs a GPU per rank, and no CUDA device is visible "
                                    "here; use --comm mpi or auto")
                         : epb_fail(err, EPB_EUSAGE, "--comm nccl takes device buffers: it needs --device cuda");
    if (!strcmp(o->comm, "self") && o->ranks_given && o->ranks > 1)
        return epb_fail(err, EPB_EUSAGE, "--comm self runs one rank, but --ranks is %d", o->ranks);
    if (o->mode == MODE_CALIBRATE && !o->ranks_given) o->ranks = 1; /* a per-core ceiling unless asked */
    return EPB_OK;
}

/* a file we will create or append to: its folder must exist and be writable */
static int writable_parent(const char *opt, const char *path, epb_err_t *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) return epb_fail(err, EPB_EUSAGE, "%s %s: folder %s does not exist", opt, path, dir);
    if (access(dir, W_OK | X_OK)) return epb_fail(err, EPB_EUSAGE, "%s %s: folder %s is not writable", opt, path, dir);
    return EPB_OK;
}

/* No two outputs may be one file (-J over the results CSV would replace it with JSON): each pair that would be
 * written, compared by device and inode, or by canonical path when not made yet. */
static int distinct_outputs(const bench_opts_t *o, epb_err_t *err)
{
    const struct { const char *opt, *path; } out[] = {
        { "--csv", o->train ? "" : o->csv },
        { "-J/--json", o->json },
        { "--per-rank", o->per_rank },
        { "--loss-csv", o->train ? o->loss_csv : "" },
    };
    int n = (int)(sizeof out / sizeof out[0]);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (out[i].path[0] && out[j].path[0] && epb_same_file(out[i].path, out[j].path))
                return epb_fail(err, EPB_EUSAGE, "%s %s and %s %s name the same file: each output needs its own",
                                out[i].opt, out[i].path, out[j].opt, out[j].path);
    return EPB_OK;
}

int bench_validate_files(bench_opts_t *o, epb_err_t *err)
{
    struct stat st;
    int rc = distinct_outputs(o, err);
    if (rc) return rc;
    if (o->dump[0]) {
        if (stat(o->dump, &st) == 0) {
            if (!S_ISDIR(st.st_mode)) return epb_fail(err, EPB_EUSAGE, "--dump %s: exists and is not a folder", o->dump);
            if (access(o->dump, W_OK | X_OK)) return epb_fail(err, EPB_EUSAGE, "--dump %s: folder is not writable", o->dump);
        } else if (writable_parent("--dump", o->dump, err)) return EPB_EUSAGE;
    }
    if (o->train) {
        if (!strcmp(o->loss_csv, "results/loss.csv") && mkdir("results", 0755) && errno != EEXIST)
            return epb_fail(err, EPB_EUSAGE, "--loss-csv %s: cannot create folder results", o->loss_csv);
        if (stat(o->loss_csv, &st) == 0 ? (!S_ISREG(st.st_mode) || access(o->loss_csv, W_OK))
                                        : writable_parent("--loss-csv", o->loss_csv, err) != EPB_OK)
            return epb_fail(err, EPB_EUSAGE, "--loss-csv %s: cannot write there", o->loss_csv);
        return EPB_OK; /* training writes the loss curve, not schema-1 rows */
    }
    if (o->json[0]) {
        if ((rc = epb_json_output_ok("-J/--json", o->json, err))) return rc;
        if (writable_parent("-J/--json", o->json, err)) return EPB_EUSAGE;
    }
    if (!o->csv_given) { /* the default folder is ours to create */
        if (mkdir("results", 0755) && errno != EEXIST)
            return epb_fail(err, EPB_EUSAGE, "--csv %s: cannot create folder results: %s", o->csv, strerror(errno));
    }
    return epb_csv_probe(o->csv, err);
}
