/* Files a program is given: what kind each is, whether two names are one file, opening an input without
 * blocking on a FIFO; and text shown on a terminal with its control bytes made visible. */
#define _POSIX_C_SOURCE 200809L
#include "epb.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *epb_printable(const char *s, char *buf, size_t n)
{
    size_t k = 0;
    if (!n) return buf;
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        char e[8];
        if (c >= 0x20 && c != 0x7f) e[0] = (char)c, e[1] = 0;
        else if (c == '\n') memcpy(e, "\\n", 3);
        else if (c == '\r') memcpy(e, "\\r", 3);
        else if (c == '\t') memcpy(e, "\\t", 3);
        else snprintf(e, sizeof e, "\\x%02x", c);
        size_t l = strlen(e);
        if (k + l >= n) break; /* whole escapes only */
        memcpy(buf + k, e, l);
        k += l;
    }
    buf[k] = 0;
    return buf;
}

const char *epb_file_kind(mode_t mode)
{
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a file";
}

int epb_open_regular(const char *path, int *fd, epb_err_t *err)
{
    struct stat st;
    *fd = -1;
    /* stat first: opening a device can have effects of its own (a tape rewinds) */
    if (stat(path, &st)) return epb_fail(err, EPB_EUSAGE, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return epb_fail(err, EPB_EUSAGE, "%s: not a regular file (%s)", path, epb_file_kind(st.st_mode));
    /* O_NONBLOCK: a FIFO swapped in since the stat must not block the open; fstat then says what was opened */
    int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (f < 0) return epb_fail(err, EPB_EUSAGE, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(f, &st) || !S_ISREG(st.st_mode)) {
        close(f);
        return epb_fail(err, EPB_EUSAGE, "%s: not a regular file (%s)", path, epb_file_kind(st.st_mode));
    }
    int fl = fcntl(f, F_GETFL);
    if (fl >= 0) fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    *fd = f;
    return EPB_OK;
}

/* The canonical path of a file that may not exist yet: its folder's real path, then its name. */
static int canonical(const char *path, char *out, size_t n)
{
    char dir[PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (!realpath(dir, real)) return -1;
    return snprintf(out, n, "%s/%s", strcmp(real, "/") ? real : "", name) < (int)n ? 0 : -1;
}

int epb_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    int ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
    if (ea && eb) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    if (ea != eb) return 0; /* one exists, the other is still to be made */
    char ca[PATH_MAX + 1], cb[PATH_MAX + 1];
    if (canonical(a, ca, sizeof ca) || canonical(b, cb, sizeof cb)) return !strcmp(a, b);
    return !strcmp(ca, cb);
}

int epb_json_output_ok(const char *opt, const char *path, epb_err_t *err)
{
    struct stat st;
    if (stat(path, &st)) {
        if (errno == ENOENT) return EPB_OK;
        return epb_fail(err, EPB_EUSAGE, "%s %s: %s", opt, path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return epb_fail(err, EPB_EUSAGE, "%s %s: exists and is %s, not a regular file", opt, path,
                        epb_file_kind(st.st_mode));
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return epb_fail(err, EPB_EUSAGE, "%s %s: cannot read it: %s", opt, path, strerror(errno));
    char head[256];
    ssize_t r = read(fd, head, sizeof head);
    close(fd);
    ssize_t i = 0;
    while (i < r && (head[i] == ' ' || head[i] == '\t' || head[i] == '\n' || head[i] == '\r')) i++;
    if (i < r && head[i] != '{')
        return epb_fail(err, EPB_EUSAGE, "%s %s: exists and is not a JSON file (it would be replaced whole); remove it "
                        "or name another file", opt, path);
    return EPB_OK;
}
