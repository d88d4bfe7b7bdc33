/* bare_loop: the reference for the harness-overhead measurement (experiments/overhead). A minimal loop around
 * the bare MPI call OSU's benchmark of the same collective makes (MPI_Allgather, MPI_Reduce_scatter with equal
 * counts, MPI_Alltoall, MPI_Alltoallv with equal counts, MPI_Allreduce), timed the way bench times it (barrier,
 * per-iteration time, max over ranks, median), with none of bench's layers. Sizes as nccl-tests (and bench) count
 * them: allgather the gathered buffer, reduce_scatter and alltoall(v) the send buffer, allreduce the buffer.
 * Usage: mpirun -np P bare_loop COLL MIN_BYTES MAX_BYTES ITERS WARMUP   (COLL: one of the five, all, or
 * reduce_scatter_block: the call bench made before, kept for the record of why it changed) */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the five bench measures, then MPI_Reduce_scatter_block (by name only: what bench called before, for the record) */
static const char *const colls[] = { "allgather", "reduce_scatter", "alltoall", "alltoallv", "allreduce",
                                     "reduce_scatter_block" };
enum { NCOLL = 5, NNAMED = 6 };

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void call(int c, float *s, float *r, size_t n, int P, int *counts, int *displs)
{
    int per = (int)(n / (size_t)P);
    switch (c) {
    case 0: MPI_Allgather(s, per, MPI_FLOAT, r, per, MPI_FLOAT, MPI_COMM_WORLD); break;
    case 1: MPI_Reduce_scatter(s, r, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
    case 2: MPI_Alltoall(s, per, MPI_FLOAT, r, per, MPI_FLOAT, MPI_COMM_WORLD); break;
    case 3: MPI_Alltoallv(s, counts, displs, MPI_FLOAT, r, counts, displs, MPI_FLOAT, MPI_COMM_WORLD); break;
    case 4: MPI_Allreduce(s, r, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
    default: MPI_Reduce_scatter_block(s, r, per, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, P, which = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    for (int c = 0; argc == 6 && c < NNAMED; c++)
        if (!strcmp(argv[1], colls[c])) which = c;
    if (argc != 6 || (which < 0 && strcmp(argv[1], "all"))) {
        if (rank == 0) fprintf(stderr, "usage: bare_loop allgather|reduce_scatter|alltoall|alltoallv|allreduce|all "
                                       "MIN_BYTES MAX_BYTES ITERS WARMUP\n");
        MPI_Finalize();
        return 2;
    }
    size_t lo = strtoull(argv[2], NULL, 10), hi = strtoull(argv[3], NULL, 10);
    int iters = atoi(argv[4]), warmup = atoi(argv[5]);
    double *t = malloc(sizeof(double) * (size_t)iters);
    int *counts = malloc(sizeof(int) * (size_t)P), *displs = malloc(sizeof(int) * (size_t)P);
    for (int c = 0; c < NNAMED; c++) {
        if (which >= 0 ? c != which : c >= NCOLL) continue;
        for (size_t bytes = lo; bytes <= hi; bytes *= 2) {
            size_t n = bytes / sizeof(float), per = n / (size_t)P;
            for (int p = 0; p < P; p++) counts[p] = (int)per, displs[p] = (int)((size_t)p * per);
            /* the receive side of allreduce and alltoall(v) is as big as the send side; of allgather, the buffer */
            float *s = malloc(n * sizeof(float)), *r = malloc(n * sizeof(float));
            /* touch both as bench does: untouched calloc memory reads the shared zero page, faster than real data */
            for (size_t i = 0; i < n; i++) s[i] = (float)(i % 17), r[i] = -1.0f;
            for (int i = 0; i < warmup + iters; i++) {
                MPI_Barrier(MPI_COMM_WORLD);
                double t0 = MPI_Wtime();
                call(c, s, r, n, P, counts, displs);
                if (i >= warmup) t[i - warmup] = (MPI_Wtime() - t0) * 1e6;
            }
            MPI_Allreduce(MPI_IN_PLACE, t, iters, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            qsort(t, (size_t)iters, sizeof *t, cmp);
            double med = iters % 2 ? t[iters / 2] : 0.5 * (t[iters / 2 - 1] + t[iters / 2]);
            if (rank == 0) printf("%s %zu %.3f\n", colls[c], bytes, med);
            free(s);
            free(r);
        }
    }
    free(t);
    free(counts);
    free(displs);
    MPI_Finalize();
    return 0;
}
