/* Minimal TAP producer for the unit tests (meson test runs them with protocol 'tap'). Every assertion is a
 * TAP line; the exit code is non-zero when any failed. */
#ifndef EPB_TAP_H
#define EPB_TAP_H
#include <stdio.h>
#include <stdlib.h>

static int tap_n, tap_failed;

#define TAP_OK(cond, ...)                                                                                      \
    do {                                                                                                       \
        int tap_c_ = !!(cond);                                                                                 \
        printf("%s %d - ", tap_c_ ? "ok" : "not ok", ++tap_n);                                                 \
        printf(__VA_ARGS__);                                                                                   \
        printf("\n");                                                                                          \
        if (!tap_c_) {                                                                                         \
            tap_failed++;                                                                                      \
            printf("# failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);                                      \
        }                                                                                                      \
    } while (0)

/* A check that cannot run here: "ok N # SKIP why" (TAP counts it as neither pass nor failure). */
#define TAP_SKIP(...)                                                                                          \
    do {                                                                                                       \
        printf("ok %d # SKIP ", ++tap_n);                                                                      \
        printf(__VA_ARGS__);                                                                                   \
        printf("\n");                                                                                          \
    } while (0)

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    if (tap_failed) printf("# %d of %d failed\n", tap_failed, tap_n);
    return tap_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
#endif
