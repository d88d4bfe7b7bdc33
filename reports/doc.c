/* A tiny document model (headings, paragraphs, tables, images) rendered as Markdown and as one
 * self-contained HTML page, so both files always carry the same content. */
#define _POSIX_C_SOURCE 200809L
#include "report.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum btype { B_HEAD, B_PARA, B_TABLE, B_IMAGE };
typedef struct {
    enum btype type;
    int level, ncols;
    char *text;   /* heading, paragraph, image caption */
    char *name;   /* image stem */
    char **cells; /* table: header then rows, row-major */
    size_t ncells, cap;
} block_t;

struct rp_doc {
    block_t *b;
    size_t n, cap;
    int oom;
};

rp_doc_t *rp_doc_new(void)
{
    return calloc(1, sizeof(rp_doc_t));
}

void rp_doc_free(rp_doc_t *doc)
{
    if (!doc) return;
    for (size_t i = 0; i < doc->n; i++) {
        free(doc->b[i].text);
        free(doc->b[i].name);
        for (size_t j = 0; j < doc->b[i].ncells; j++) free(doc->b[i].cells[j]);
        free(doc->b[i].cells);
    }
    free(doc->b);
    free(doc);
}

static block_t *add(rp_doc_t *doc, enum btype t)
{
    if (doc->n == doc->cap) {
        size_t cap = doc->cap ? doc->cap * 2 : 32;
        block_t *nb = realloc(doc->b, cap * sizeof *nb);
        if (!nb) { doc->oom = 1; return NULL; }
        doc->b = nb;
        doc->cap = cap;
    }
    block_t *b = &doc->b[doc->n++];
    memset(b, 0, sizeof *b);
    b->type = t;
    return b;
}

static char *vfmt(rp_doc_t *doc, const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) { doc->oom = 1; return NULL; }
    return s;
}

void rp_doc_heading(rp_doc_t *doc, int level, const char *fmt, ...)
{
    block_t *b = add(doc, B_HEAD);
    if (!b) return;
    b->level = level;
    va_list ap;
    va_start(ap, fmt);
    b->text = vfmt(doc, fmt, ap);
    va_end(ap);
}

void rp_doc_para(rp_doc_t *doc, const char *fmt, ...)
{
    block_t *b = add(doc, B_PARA);
    if (!b) return;
    va_list ap;
    va_start(ap, fmt);
    b->text = vfmt(doc, fmt, ap);
    va_end(ap);
}

static void push_cell(rp_doc_t *doc, block_t *b, char *s)
{
    if (!s) return;
    if (b->ncells == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        char **nc = realloc(b->cells, cap * sizeof *nc);
        if (!nc) { doc->oom = 1; free(s); return; }
        b->cells = nc;
        b->cap = cap;
    }
    b->cells[b->ncells++] = s;
}

void rp_doc_table(rp_doc_t *doc, int ncols, const char *const *header)
{
    block_t *b = add(doc, B_TABLE);
    if (!b) return;
    b->ncols = ncols;
    for (int i = 0; i < ncols; i++) {
        char *s = strdup(header[i]);
        if (!s) doc->oom = 1;
        push_cell(doc, b, s);
    }
}

void rp_doc_cell(rp_doc_t *doc, const char *fmt, ...)
{
    block_t *b = NULL;
    for (size_t i = doc->n; i-- > 0;)
        if (doc->b[i].type == B_TABLE) { b = &doc->b[i]; break; }
    if (!b) return;
    va_list ap;
    va_start(ap, fmt);
    push_cell(doc, b, vfmt(doc, fmt, ap));
    va_end(ap);
}

void rp_doc_image(rp_doc_t *doc, const char *name, const char *caption)
{
    block_t *b = add(doc, B_IMAGE);
    if (!b) return;
    b->name = strdup(name);
    b->text = strdup(caption);
    if (!b->name || !b->text) doc->oom = 1;
}

/* ---- Markdown ---- */

/* Text in Markdown is shown, never interpreted as HTML or code: '<', '>', '&' and '`' are written as entities (a
 * host name "<script>" stays text in every Markdown renderer), a line break as a blank (it would end a heading or a
 * table row), a '|' in a cell escaped, other control bytes as visible \xHH. The report's own markup (**bold**)
 * passes. */
static void md_text(FILE *f, const char *s, int cell)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '`': fputs("&#96;", f); break;
        case '\n': case '\r': fputc(' ', f); break;
        case '|': fputs(cell ? "\\|" : "|", f); break;
        default:
            if (c < 0x20 || c == 0x7f) fprintf(f, "\\x%02x", c);
            else fputc(c, f);
        }
    }
}

int rp_doc_write_md(const rp_doc_t *doc, const char *path, epb_err_t *err)
{
    if (doc->oom) return epb_fail(err, EPB_ESYS, "out of memory building the report");
    FILE *f = fopen(path, "w");
    if (!f) return epb_fail(err, EPB_ESYS, "%s: cannot create: %s", path, strerror(errno));
    for (size_t i = 0; i < doc->n; i++) {
        const block_t *b = &doc->b[i];
        switch (b->type) {
        case B_HEAD:
            fprintf(f, "%.*s ", b->level, "######");
            md_text(f, b->text, 0);
            fputs("\n\n", f);
            break;
        case B_PARA:
            md_text(f, b->text, 0);
            fputs("\n\n", f);
            break;
        case B_IMAGE:
            fputs("![", f);
            md_text(f, b->text, 0);
            fprintf(f, "](plots/%s.svg)\n\n", b->name);
            break;
        case B_TABLE:
            for (size_t j = 0; j < b->ncells; j++) {
                int col = (int)(j % (size_t)b->ncols);
                fputs(col ? " " : "| ", f);
                md_text(f, b->cells[j], 1);
                fputs(" |", f);
                if (col == b->ncols - 1) {
                    fputc('\n', f);
                    if (j + 1 == (size_t)b->ncols) {
                        fputc('|', f);
                        for (int c = 0; c < b->ncols; c++) fputs(c ? "---:|" : "---|", f);
                        fputc('\n', f);
                    }
                }
            }
            if (b->ncells % (size_t)b->ncols) fputc('\n', f);
            fputc('\n', f);
            break;
        }
    }
    return rp_close_output(f, path, err);
}

/* ---- HTML ---- */

static void html_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* Copies an SVG file into the page, without its XML prolog and doctype (not allowed inside HTML). */
static int inline_svg(FILE *f, const char *path)
{
    FILE *in = fopen(path, "rb");
    if (!in) return -1;
    char *data = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&data, &len);
    if (!mem) { fclose(in); return -1; }
    char buf[65536];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, r, mem);
    fclose(in);
    fclose(mem);
    const char *p = strstr(data ? data : "", "<svg");
    if (p) fputs(p, f);
    free(data);
    return p ? 0 : -1;
}

int rp_doc_write_html(const rp_doc_t *doc, const char *dir, const char *path, epb_err_t *err)
{
    if (doc->oom) return epb_fail(err, EPB_ESYS, "out of memory building the report");
    FILE *f = fopen(path, "w");
    if (!f) return epb_fail(err, EPB_ESYS, "%s: cannot create: %s", path, strerror(errno));
    fputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>epbench report</title>\n<style>\n"
          "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}\n"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:2px 6px}\n"
          "td{text-align:right;font-variant-numeric:tabular-nums}td:first-child{text-align:left}\n"
          "th{background:#eee}td.fail{background:#fdd;color:#900;font-weight:bold}figure svg{max-width:100%;height:auto}\n</style></head><body>\n", f);
    for (size_t i = 0; i < doc->n; i++) {
        const block_t *b = &doc->b[i];
        switch (b->type) {
        case B_HEAD:
            fprintf(f, "<h%d>", b->level);
            html_text(f, b->text);
            fprintf(f, "</h%d>\n", b->level);
            break;
        case B_PARA:
            fputs("<p>", f);
            html_text(f, b->text);
            fputs("</p>\n", f);
            break;
        case B_IMAGE: {
            char svg[4096];
            snprintf(svg, sizeof svg, "%s/plots/%s.svg", dir, b->name);
            fputs("<figure>\n", f);
            if (inline_svg(f, svg)) fputs("<p>(plot missing)</p>", f);
            fputs("\n<figcaption>", f);
            html_text(f, b->text);
            fputs("</figcaption></figure>\n", f);
            break;
        }
        case B_TABLE:
            fputs("<table>\n", f);
            for (size_t j = 0; j < b->ncells; j++) {
                int col = (int)(j % (size_t)b->ncols), head = j < (size_t)b->ncols;
                if (col == 0) fputs("<tr>", f);
                /* a failed check is the one cell a reader must not miss */
                fputs(head ? "<th>" : !strncmp(b->cells[j], "FAILED", 6) ? "<td class=\"fail\">" : "<td>", f);
                html_text(f, b->cells[j]);
                fputs(head ? "</th>" : "</td>", f);
                if (col == b->ncols - 1) fputs("</tr>\n", f);
            }
            fputs("</table>\n", f);
            break;
        }
    }
    fputs("</body></html>\n", f);
    return rp_close_output(f, path, err);
}
