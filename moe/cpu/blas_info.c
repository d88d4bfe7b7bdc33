/* Which BLAS runs the CPU experts, and whether a faster OpenBLAS core type is available.
 *
 * A DYNAMIC_ARCH OpenBLAS picks its kernels from the CPUID it knows; a CPU newer than the library (an AVX-512
 * part it does not recognise) gets the AVX2 Haswell/Zen kernels. OPENBLAS_CORETYPE overrides the choice, but
 * OpenBLAS reads it once when the library loads, so bench sets it and re-executes itself before any BLAS call
 * (bench/main.c). Measured on the Zen 4 VM of our CI (OpenBLAS 0.3.21 picks Cooperlake there): Haswell, SkylakeX
 * and Cooperlake kernels all reach ~105 GFLOP/s per core, since Zen 4 executes AVX-512 FMAs 256 bits at a time;
 * on Intel AVX-512 cores the SkylakeX kernels are up to ~2x the AVX2 ones. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "moe.h"

#if EPB_MOE_OPENBLAS
#include <cblas.h>
#endif

void epb_blas_info(char *buf, size_t n)
{
#if EPB_MOE_OPENBLAS
    const char *env = getenv("OPENBLAS_CORETYPE");
    snprintf(buf, n, "%s; core=%s%s%s", openblas_get_config(), openblas_get_corename(),
             env ? "; OPENBLAS_CORETYPE=" : "", env ? env : "");
#else
    snprintf(buf, n, "cblas (not OpenBLAS: core type unknown)");
#endif
}

const char *epb_blas_corename(void)
{
#if EPB_MOE_OPENBLAS
    return openblas_get_corename();
#else
    return "unknown";
#endif
}

int epb_blas_threads(void)
{
#if EPB_MOE_OPENBLAS
    return openblas_get_num_threads();
#else
    return 1; /* another CBLAS: its threading is unknown here; the reference and generic CBLAS run one */
#endif
}

const char *epb_blas_coretype_choice(const char *picked_core, int cpu_has_avx512, const char *env_coretype)
{
    if (env_coretype || !picked_core || !cpu_has_avx512) return NULL; /* the user chose, or nothing better */
    /* OpenBLAS's AVX2-class core names on x86_64 (DYNAMIC_ARCH); an AVX-512 core is already the best */
    static const char *const avx2_cores[] = { "haswell", "zen", "excavator", "steamroller", "piledriver",
                                              "bulldozer", "sandybridge" };
    for (size_t i = 0; i < sizeof avx2_cores / sizeof *avx2_cores; i++)
        if (!strcasecmp(picked_core, avx2_cores[i])) return "SkylakeX";
    return NULL;
}

const char *epb_blas_better_coretype(void)
{
#if EPB_MOE_OPENBLAS && defined(__x86_64__)
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    /* EPB_TEST_BLAS_CORE (test-only) stands in for the core OpenBLAS picked, to exercise the re-exec path on a
     * machine where OpenBLAS already picks an AVX-512 core */
    const char *picked = getenv("EPB_TEST_BLAS_CORE");
    return epb_blas_coretype_choice(picked ? picked : openblas_get_corename(), avx512, getenv("OPENBLAS_CORETYPE"));
#else
    return NULL;
#endif
}
