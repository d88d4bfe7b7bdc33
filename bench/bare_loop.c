/* bare_loop: the reference for the harness-overhead measurement (experiments/overhead). A minimal loop around the bare
 * MPI call, timed the way bench times it (barrier, per-iteration time, max over ranks, median), with none of
 * bench's layers. Usage: mpirun -np P bare_loop alltoall|allgather MIN_BYTES MAX_BYTES ITERS WARMUP */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, P;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    if (argc != 6 || (strcmp(argv[1], "alltoall") && strcmp(argv[1], "allgather"))) {
        if (rank == 0) fprintf(stderr, "usage: bare_loop alltoall|allgather MIN_BYTES MAX_BYTES ITERS WARMUP\n");
        MPI_Finalize();
        return 2;
    }
    int a2a = !strcmp(argv[1], "alltoall");
    size_t lo = strtoull(argv[2], NULL, 10), hi = strtoull(argv[3], NULL, 10);
    int iters = atoi(argv[4]), warmup = atoi(argv[5]);
    double *t = malloc(sizeof(double) * (size_t)iters);
    for (size_t bytes = lo; bytes <= hi; bytes *= 2) {
        /* nccl-tests sizes: alltoall = the send buffer, allgather = the gathered buffer */
        size_t n = bytes / sizeof(float), per = n / (size_t)P;
        float *s = malloc(n * sizeof(float)), *r = malloc(n * sizeof(float));
        /* touch both as bench does: untouched calloc memory reads the shared zero page, faster than real data */
        for (size_t i = 0; i < n; i++) s[i] = (float)(i % 17), r[i] = -1.0f;
        for (int i = 0; i < warmup + iters; i++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            if (a2a) MPI_Alltoall(s, (int)per, MPI_FLOAT, r, (int)per, MPI_FLOAT, MPI_COMM_WORLD);
            else MPI_Allgather(s, (int)per, MPI_FLOAT, r, (int)per, MPI_FLOAT, MPI_COMM_WORLD);
            if (i >= warmup) t[i - warmup] = (MPI_Wtime() - t0) * 1e6;
        }
        MPI_Allreduce(MPI_IN_PLACE, t, iters, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        qsort(t, (size_t)iters, sizeof *t, cmp);
        double med = iters % 2 ? t[iters / 2] : 0.5 * (t[iters / 2 - 1] + t[iters / 2]);
        if (rank == 0) printf("%s %zu %.3f\n", argv[1], bytes, med);
        free(s);
        free(r);
    }
    free(t);
    MPI_Finalize();
    return 0;
}
