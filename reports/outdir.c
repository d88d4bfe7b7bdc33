/* The output directory appears whole or not at all: everything is written into a temporary directory next
 * to it (same file system) and renamed into place at the end. */
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void parent_of(const char *path, char *buf, size_t n)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    snprintf(buf, n, "%s", dirname(tmp));
}

int rp_outdir_begin(const char *final, char *tmp, size_t n, epb_err_t *err)
{
    char parent[4096], base[4096], c[4096];
    parent_of(final, parent, sizeof parent);
    snprintf(c, sizeof c, "%s", final);
    snprintf(base, sizeof base, "%s", basename(c));
    struct stat st;
    if (stat(parent, &st) || !S_ISDIR(st.st_mode))
        return epb_fail(err, EPB_EUSAGE, "-o %s: parent directory %s does not exist", final, parent);
    if (!stat(final, &st) && !S_ISDIR(st.st_mode))
        return epb_fail(err, EPB_EUSAGE, "-o %s: exists and is not a directory", final);
    snprintf(tmp, n, "%s/.%s.tmp-XXXXXX", parent, base);
    if (!mkdtemp(tmp)) return epb_fail(err, EPB_ESYS, "-o %s: cannot create a temporary directory in %s: %s", final,
                                       parent, strerror(errno));
    chmod(tmp, 0755); /* mkdtemp makes it 0700; the report is meant to be shared */
    return EPB_OK;
}

int rp_close_output(FILE *f, const char *path, epb_err_t *err)
{
    int e = fflush(f) ? errno : 0; /* an earlier failed write left its bytes in the buffer: they fail again here */
    if (!e && ferror(f)) e = EIO;
    if (fclose(f) && !e) e = errno;
    return e ? epb_fail(err, EPB_ESYS, "%s: write failed: %s", path, strerror(e)) : EPB_OK;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

void rp_outdir_abort(const char *tmp)
{
    nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int rp_outdir_commit(const char *tmp, const char *final, epb_err_t *err)
{
    struct stat st;
    if (rename(tmp, final) == 0) return EPB_OK; /* new name, or an empty directory */
    if (errno != ENOTEMPTY && errno != EEXIST) {
        int e = errno;
        rp_outdir_abort(tmp);
        return epb_fail(err, EPB_ESYS, "rename %s -> %s: %s", tmp, final, strerror(e));
    }
    /* replace only what a previous run made: never delete a directory that is not a report */
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/report.md", final);
    if (stat(marker, &st)) {
        rp_outdir_abort(tmp);
        return epb_fail(err, EPB_EUSAGE, "-o %s: exists, is not empty and holds no report.md; refusing to replace it",
                        final);
    }
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
        rp_outdir_abort(tmp); /* tmp now holds the old report */
        return EPB_OK;
    }
    /* no RENAME_EXCHANGE (old kernel, some file systems): move the old one aside, then the new one in */
    char aside[4200];
    snprintf(aside, sizeof aside, "%s.old-XXXXXX", tmp);
    if (!mkdtemp(aside) || rmdir(aside) || rename(final, aside)) {
        int e = errno;
        rp_outdir_abort(tmp);
        return epb_fail(err, EPB_ESYS, "-o %s: cannot move the previous report aside: %s", final, strerror(e));
    }
    if (rename(tmp, final)) {
        int e = errno;
        if (rename(aside, final)) {}
        rp_outdir_abort(tmp);
        return epb_fail(err, EPB_ESYS, "rename %s -> %s: %s", tmp, final, strerror(e));
    }
    rp_outdir_abort(aside);
    return EPB_OK;
}
