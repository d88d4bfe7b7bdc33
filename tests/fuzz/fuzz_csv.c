/* libFuzzer harness of the CSV reader and the report path: bytes -> a file -> epb_csv_read (through rp_load) ->
 * grouping -> every comparison, the regression of the data against itself, the plot data files (no gnuplot) and
 * report.md / report.html rendered to /dev/null. Built with clang -fsanitize=fuzzer,address,undefined from the
 * sources themselves (tests/fuzz/meson.build); the seed corpus is tests/fuzz/corpus/. A crash, a sanitizer report
 * or a leak is a finding. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "report.h"

static char dir[64], csv[96];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* a scratch directory for the input file and the plot data; memory-backed when there is one */
    struct stat st;
    snprintf(dir, sizeof dir, "%s/epb_fuzz_XXXXXX", stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(dir)) {
        perror("fuzz_csv: mkdtemp");
        exit(1);
    }
    snprintf(csv, sizeof csv, "%s/in.csv", dir);
    return 0;
}

static void cleanup(void)
{
    rp_outdir_abort(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int registered;
    if (!registered) registered = !atexit(cleanup);
    FILE *f = fopen(csv, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    rp_data_t d;
    epb_err_t err = { "" };
    char *paths[1] = { csv };
    if (rp_load(&d, paths, 1, &err) != EPB_OK) {
        /* refused input: the message must name the file (the contract every error follows) */
        if (!strstr(err.msg, csv) && strcmp(err.msg, "out of memory")) {
            fprintf(stderr, "fuzz_csv: an error that does not name the file: %s\n", err.msg);
            abort();
        }
        return 0;
    }
    rp_rule_t rule = rp_rule_default();
    rule.resamples = 100; /* the statistics are not under test here; the paths to them are */
    rp_match_t *m = NULL;
    size_t nm = 0, nslower = 0;
    if (rp_regress(&d, &d, &rule, &m, &nm, &nslower, &err) == EPB_OK && nslower) {
        fprintf(stderr, "fuzz_csv: data compared with itself is slower (%zu)\n", nslower);
        abort();
    }
    rp_plot_opts_t po = { NULL, "." }; /* no gnuplot: the data files only */
    char names[128][64];
    int nn = 0;
    rp_plots(&d, NULL, dir, &po, names, 128, &nn, &err);
    const char *list[1] = { NULL };
    rp_regress_view_t rv = { m, nm, &rule, "self" };
    rp_doc_t *doc = rp_doc_new();
    if (doc) {
        rp_tables(doc, &d, m ? &rv : NULL, list);
        rp_doc_write_md(doc, "/dev/null", &err);
        rp_doc_write_html(doc, dir, "/dev/null", &err);
        rp_doc_free(doc);
    }
    free(m);
    rp_free(&d);
    return 0;
}
