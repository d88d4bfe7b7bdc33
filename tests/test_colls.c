/* Unit tests of collectives/: the self communicator, each microbenchmark's check on a correct and on a
 * corrupted result (the check must be able to fail), the Zipf count matrix, size rules and bf16 sums. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "collectives.h"
#include "tap.h"

static void test_checks_detect_corruption(epb_comm_t *self)
{
    for (int c = 0; c < epb_ncolls; c++) {
        for (int d = 0; d < 2; d++) {
            epb_err_t err;
            epb_coll_ctx_t x = { .comm = self, .dt = d ? EPB_DT_BF16 : EPB_DT_F32, .seed = 5, .imbalance = 1.0,
                                 .bytes = 4096 };
            const epb_coll_t *k = &epb_colls[c];
            TAP_OK(epb_coll_ctx_setup(k, &x, &err) == EPB_OK, "%s %s set-up", k->name, epb_dtype_name(x.dt));
            TAP_OK(k->check(&x) == (long)x.recv_elems, "%s %s: an untouched output is all wrong (%ld)", k->name,
                   epb_dtype_name(x.dt), k->check(&x));
            TAP_OK(k->run(&x) == EPB_OK && k->check(&x) == 0, "%s %s: a real run checks clean", k->name,
                   epb_dtype_name(x.dt));
            size_t es = epb_dtype_size(x.dt);
            ((unsigned char *)x.recv)[(x.recv_elems / 2) * es + es - 1] ^= 0x40; /* flip an exponent bit */
            TAP_OK(k->check(&x) == 1, "%s %s: one corrupted element is counted", k->name, epb_dtype_name(x.dt));
            epb_coll_ctx_free(&x);
        }
    }
}

static void test_zipf(void)
{
    size_t counts[8 * 8];
    epb_zipf_counts(1000, 8, 0, 1, counts);
    int even = 1;
    for (int i = 0; i < 64; i++) even &= counts[i] == 125;
    TAP_OK(even, "S=0 splits 1000 evenly over 8 destinations");
    epb_zipf_counts(10, 4, 0, 1, counts);
    TAP_OK(counts[0] == 3 && counts[1] == 3 && counts[2] == 2 && counts[3] == 2, "remainders go to the lowest destinations");
    epb_zipf_counts(100000, 8, 1.5, 9, counts);
    int rows_ok = 1, same_hot = 1, hot = 0;
    for (int d = 1; d < 8; d++) if (counts[d] > counts[hot]) hot = d;
    for (int s = 0; s < 8; s++) {
        size_t sum = 0, mx = 0;
        int h = 0;
        for (int d = 0; d < 8; d++) {
            sum += counts[s * 8 + d];
            if (counts[s * 8 + d] > mx) { mx = counts[s * 8 + d]; h = d; }
        }
        rows_ok &= sum == 100000;
        same_hot &= h == hot;
    }
    TAP_OK(rows_ok, "every sender's counts sum to its elements");
    TAP_OK(same_hot, "the hot destination is the same for every sender (a hot expert)");
    size_t mn = counts[0];
    for (int d = 0; d < 8; d++) mn = counts[d] < mn ? counts[d] : mn;
    double ratio = (double)counts[hot] / (double)mn;
    TAP_OK(fabs(ratio - pow(8, 1.5)) < 0.1, "hottest/coldest = 8^1.5 for S=1.5 (%.2f)", ratio);
    size_t again[64];
    epb_zipf_counts(100000, 8, 1.5, 9, again);
    TAP_OK(!memcmp(counts, again, sizeof again), "the matrix is a function of the seed");
    epb_zipf_counts(100000, 8, 1.5, 10, again);
    TAP_OK(memcmp(counts, again, sizeof again), "another seed, another hot destination order");
}

static void test_sizes(void)
{
    epb_err_t err;
    const epb_coll_t *ag = epb_coll_find("allgather"), *ar = epb_coll_find("allreduce");
    TAP_OK(ag && ar && !epb_coll_find("broadcast"), "registry lookup by name");
    TAP_OK(epb_coll_check_size(ag, 48, 3, EPB_DT_F32, &err) == EPB_OK, "48 bytes split over 3 f32 ranks");
    TAP_OK(epb_coll_check_size(ag, 40, 3, EPB_DT_F32, &err) == EPB_EUSAGE && strstr(err.msg, "multiple of 12"),
           "40 bytes do not: %s", err.msg);
    TAP_OK(epb_coll_check_size(ar, 40, 3, EPB_DT_F32, &err) == EPB_OK, "allreduce needs only whole elements");
    TAP_OK(epb_coll_round_size(65536, 3, EPB_DT_F32) == 65544, "64K rounds up to 65544 for 3 ranks");
}

static void test_bf16_sum(epb_comm_t *self)
{
    (void)self;
    /* the host reduction used by the MPI bf16 operations adds in float32 and rounds once per add */
    epb_bf16 a[3] = { epb_f32_to_bf16(1.0f), epb_f32_to_bf16(256.0f), epb_f32_to_bf16(-3.0f) };
    epb_bf16 b[3] = { epb_f32_to_bf16(2.0f), epb_f32_to_bf16(1.0f), epb_f32_to_bf16(3.0f) };
    float want[3] = { 3.0f, 256.0f, 0.0f }; /* 257 is not a bf16: rounds to even, 256 */
    extern void epb_reduce_host(void *inout, const void *in, size_t n, epb_dtype_t dt, epb_redop_t op);
    epb_reduce_host(a, b, 3, EPB_DT_BF16, EPB_SUM);
    TAP_OK(epb_bf16_to_f32(a[0]) == want[0] && epb_bf16_to_f32(a[1]) == want[1] && epb_bf16_to_f32(a[2]) == want[2],
           "bf16 sums round to nearest even");
}

/* each collective's own bus-bandwidth factor (nccl-tests' conventions), from the table */
static void test_busbw(void)
{
    const epb_coll_t *ag = epb_coll_find("allgather"), *rs = epb_coll_find("reduce_scatter"),
                     *a2a = epb_coll_find("alltoall"), *a2av = epb_coll_find("alltoallv"), *ar = epb_coll_find("allreduce");
    TAP_OK(ar && ar->busbw_factor(4) == 1.5, "allreduce 2(P-1)/P at P=4");
    TAP_OK(ag && ag->busbw_factor(4) == 0.75, "allgather (P-1)/P");
    TAP_OK(rs && rs->busbw_factor(2) == 0.5, "reduce_scatter (P-1)/P");
    TAP_OK(a2a && a2a->busbw_factor(8) == 0.875, "alltoall (P-1)/P");
    TAP_OK(a2av && a2av->busbw_factor(3) == 2.0 / 3, "alltoallv (P-1)/P");
    TAP_OK(a2a && a2a->busbw_factor(1) == 0 && ar->busbw_factor(1) == 0, "one rank moves nothing over the bus");
    TAP_OK(a2av && a2av->uneven && !a2a->uneven, "only alltoallv takes --imbalance");
    char names[256];
    TAP_OK(!strcmp(epb_coll_names(names, sizeof names), "allgather, reduce_scatter, alltoall, alltoallv, allreduce"),
           "names from the table: %s", names);
}

int main(void)
{
    epb_comm_t *self;
    epb_err_t err;
    if (epb_comm_create("self", &self, &err)) return 99;
    TAP_OK(self->size == 1 && self->rank == 0 && self->mem == EPB_MEM_HOST, "self communicator: one host rank");
    test_checks_detect_corruption(self);
    test_zipf();
    test_sizes();
    test_bf16_sum(self);
    test_busbw();
    epb_comm_destroy(self);
    return tap_done();
}
