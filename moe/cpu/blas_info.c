/* Which BLAS runs the CPU experts, and whether a faster OpenBLAS core type is available.
 *
 * Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not recognise AMD Zen 4 as an AVX-512 core and picks its
 * Haswell/Zen (AVX2) kernels, about half the sgemm rate this CPU reaches with the SkylakeX kernels.
 * OPENBLAS_CORETYPE overrides the choice, but OpenBLAS reads it once when the library loads, so the caller must
 * set it and re-execute itself before any BLAS call. */
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

const char *epb_blas_better_coretype(void)
{
#if EPB_MOE_OPENBLAS && defined(__x86_64__)
    if (getenv("OPENBLAS_CORETYPE")) return NULL; /* the user chose; never override */
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")))
        return NULL;
    /* OpenBLAS's AVX2-only core names on x86_64 (DYNAMIC_ARCH); anything AVX-512 already is fine */
    static const char *const avx2_cores[] = { "haswell", "zen", "excavator", "steamroller", "piledriver",
                                              "bulldozer", "sandybridge" };
    const char *core = openblas_get_corename();
    for (size_t i = 0; core && i < sizeof avx2_cores / sizeof *avx2_cores; i++)
        if (!strcasecmp(core, avx2_cores[i])) return "SkylakeX";
#endif
    return NULL;
}
