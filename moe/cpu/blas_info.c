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
    return epb_blas_coretype_choice(openblas_get_corename(), avx512, getenv("OPENBLAS_CORETYPE"));
#else
    return NULL;
#endif
}
