/* SPDX-License-Identifier: MIT */
/*
 * toml: a strict reader for the TOML subset MerkleKV's config files use; see
 * include/arborkv/toml.h.
 *
 * Hand-written on purpose: Debian 12 packages no C TOML library (only C++ ones), and the subset
 * is small. A recursive-descent parser over the whole text that tracks line numbers: [table]
 * headers, `key = value` statements, comments, basic and literal strings, integers, booleans and
 * arrays (which may span lines). Values of other TOML types (floats, dates, times, inline tables)
 * are recognized and handed over as TOML_OTHER, so the caller can skip them for unknown keys and
 * refuse them for known ones; a bare word that is no TOML value is handed over with `bad` set.
 * Everything malformed is an error with its line. Duplicate keys and tables are refused here.
 */
#include "arborkv/toml.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arborkv/buf.h"
#include "arborkv/mem.h"

#define TOML_MAX_DEPTH 16 /* nesting of arrays / inline tables */

struct parser {
    const char *p, *end; /* cursor and end of the text */
    int line;            /* current line, 1-based */
    struct toml_error *err;
    const struct toml_handler *h;
    char table[128]; /* current [table], "" at top level */
    struct buf seen; /* "table\0key\0" pairs already assigned, to refuse duplicates */
};

void toml_value_clear(struct toml_value *v)
{
    free(v->str);
    if (v->items)
        for (size_t i = 0; i < v->nitems; i++)
            free(v->items[i]);
    free(v->items);
    memset(v, 0, sizeof(*v));
}

static int perr(struct parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int perr(struct parser *ps, const char *fmt, ...)
{
    ps->err->line = ps->line;
    va_list ap;
    va_start(ap, fmt);
    (void) vsnprintf(ps->err->reason, sizeof(ps->err->reason), fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static void skip_blank(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
        ps->p++;
}

/* Skips blanks, comments and newlines (inside arrays). */
static void skip_space_nl(struct parser *ps)
{
    for (;;) {
        skip_blank(ps);
        if (ps->p < ps->end && *ps->p == '#') {
            while (ps->p < ps->end && *ps->p != '\n')
                ps->p++;
        }
        if (ps->p < ps->end && *ps->p == '\r' && ps->p + 1 < ps->end && ps->p[1] == '\n') ps->p++;
        if (ps->p < ps->end && *ps->p == '\n') {
            ps->p++;
            ps->line++;
            continue;
        }
        return;
    }
}

/* After a statement: blanks, an optional comment, then a newline or the end of the file. */
static int end_of_statement(struct parser *ps)
{
    skip_blank(ps);
    if (ps->p < ps->end && *ps->p == '#')
        while (ps->p < ps->end && *ps->p != '\n')
            ps->p++;
    if (ps->p < ps->end && *ps->p == '\r') ps->p++;
    if (ps->p >= ps->end) return 0;
    if (*ps->p != '\n') {
        int n = 0; /* quote at most 20 bytes, and never past the end of the line */
        while (n < 20 && ps->p + n < ps->end && ps->p[n] != '\n' && ps->p[n] != '\r')
            n++;
        return perr(ps, "unexpected text after value: '%.*s'", n, ps->p);
    }
    ps->p++;
    ps->line++;
    return 0;
}

static void put_utf8(struct buf *b, uint32_t cp)
{
    uint8_t u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (uint8_t) cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (uint8_t) (0xC0 | (cp >> 6));
        u[1] = (uint8_t) (0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (uint8_t) (0xE0 | (cp >> 12));
        u[1] = (uint8_t) (0x80 | ((cp >> 6) & 0x3F));
        u[2] = (uint8_t) (0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (uint8_t) (0xF0 | (cp >> 18));
        u[1] = (uint8_t) (0x80 | ((cp >> 12) & 0x3F));
        u[2] = (uint8_t) (0x80 | ((cp >> 6) & 0x3F));
        u[3] = (uint8_t) (0x80 | (cp & 0x3F));
        n = 4;
    }
    buf_append(b, u, n);
}

/* Parses a basic ("...") or literal ('...') string at ps->p into a **new** C string. */
static int parse_string(struct parser *ps, char **out)
{
    char q = *ps->p++;
    struct buf b;
    buf_init(&b);
    buf_append(&b, "", 0);
    if (ps->end - ps->p >= 2 && ps->p[0] == q && ps->p[1] == q) {
        buf_clear(&b);
        return perr(ps, "multi-line strings are not supported");
    }
    for (;;) {
        if (ps->p >= ps->end || *ps->p == '\n') {
            buf_clear(&b);
            return perr(ps, "unterminated string");
        }
        char ch = *ps->p++;
        if (ch == q) break;
        if (ch == '\\' && q == '"') {
            if (ps->p >= ps->end) {
                buf_clear(&b);
                return perr(ps, "unterminated string");
            }
            char e = *ps->p++;
            const char *simple = strchr("btnfr\"\\", e);
            if (e && simple) {
                static const char map[] = "\b\t\n\f\r\"\\";
                buf_append(&b, &map[simple - "btnfr\"\\"], 1);
            } else if (e == 'u' || e == 'U') {
                int nd = e == 'u' ? 4 : 8;
                uint32_t cp = 0;
                for (int i = 0; i < nd; i++) {
                    char h = ps->p < ps->end ? *ps->p : 0;
                    int d = h >= '0' && h <= '9'   ? h - '0'
                            : h >= 'a' && h <= 'f' ? h - 'a' + 10
                            : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                                   : -1;
                    if (d < 0) {
                        buf_clear(&b);
                        return perr(ps, "invalid \\%c escape: expected %d hex digits", e, nd);
                    }
                    cp = cp * 16 + (uint32_t) d;
                    ps->p++;
                }
                if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
                    buf_clear(&b);
                    return perr(ps, "invalid unicode escape U+%04X", cp);
                }
                put_utf8(&b, cp);
            } else {
                buf_clear(&b);
                return perr(ps, "invalid escape sequence '\\%c'", e ? e : '0');
            }
            continue;
        }
        if ((unsigned char) ch < 0x20 && ch != '\t') {
            buf_clear(&b);
            return perr(ps, "control character in string");
        }
        buf_append(&b, &ch, 1);
    }
    if (memchr(b.data, '\0', b.len)) {
        buf_clear(&b);
        return perr(ps, "string contains a NUL character");
    }
    *out = (char *) b.data;
    return 0;
}

static bool is_bare(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-';
}

static int parse_value(struct parser *ps, struct toml_value *v, int depth);

static int parse_array(struct parser *ps, struct toml_value *v, int depth)
{
    ps->p++; /* '[' */
    v->type = TOML_ARRAY;
    v->all_strings = true;
    for (;;) {
        skip_space_nl(ps);
        if (ps->p >= ps->end) return perr(ps, "unterminated array");
        if (*ps->p == ']') {
            ps->p++;
            return 0;
        }
        struct toml_value item = { 0 };
        int rc = parse_value(ps, &item, depth + 1);
        if (rc < 0) {
            toml_value_clear(&item);
            return rc;
        }
        if (item.bad && !v->bad) {
            v->bad = item.bad;
            v->bad_len = item.bad_len;
        }
        if (item.type == TOML_STR) {
            v->items = xrealloc(v->items, (v->nitems + 2) * sizeof(*v->items));
            v->items[v->nitems++] = item.str;
            v->items[v->nitems] = NULL;
            item.str = NULL;
        } else {
            v->all_strings = false;
        }
        toml_value_clear(&item);
        skip_space_nl(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') continue;
        return perr(ps, "expected ',' or ']' in array");
    }
}

/* Inline tables and other TOML types are skipped as opaque (allowed only for unknown keys). */
static int skip_inline_table(struct parser *ps, int depth)
{
    ps->p++; /* '{' */
    for (;;) {
        skip_blank(ps);
        if (ps->p >= ps->end || *ps->p == '\n') return perr(ps, "unterminated inline table");
        if (*ps->p == '}') {
            ps->p++;
            return 0;
        }
        if (*ps->p == '"' || *ps->p == '\'') {
            char *s;
            int rc = parse_string(ps, &s);
            if (rc < 0) return rc;
            free(s);
        } else if (*ps->p == '[' || *ps->p == '{') {
            struct toml_value item = { 0 };
            int rc = parse_value(ps, &item, depth + 1);
            toml_value_clear(&item);
            if (rc < 0) return rc;
        } else {
            ps->p++;
        }
    }
}

/* ---- bare values other than booleans and decimal integers (TOML 1.0) ---- */

/* n digits (of base `digits`) at *p, with single '_' between digits; advances *p. */
static bool digit_run(const char **p, const char *end, const char *digits)
{
    const char *s = *p;
    while (s < end && *s && strchr(digits, *s)) {
        s++;
        if (s + 1 < end && *s == '_' && strchr(digits, s[1])) s++;
    }
    bool ok = s > *p;
    *p = s;
    return ok;
}

/* Exactly n decimal digits at *p; advances *p. */
static bool fixed_digits(const char **p, const char *end, int n)
{
    for (int i = 0; i < n; i++, (*p)++)
        if (*p >= end || **p < '0' || **p > '9') return false;
    return true;
}

/* HH:MM:SS[.frac] */
static bool toml_time(const char **p, const char *end)
{
    if (!fixed_digits(p, end, 2) || *p >= end || *(*p)++ != ':') return false;
    if (!fixed_digits(p, end, 2) || *p >= end || *(*p)++ != ':') return false;
    if (!fixed_digits(p, end, 2)) return false;
    if (*p < end && **p == '.') { /* fraction: plain digits, no '_' */
        const char *f = ++*p;
        while (*p < end && **p >= '0' && **p <= '9')
            (*p)++;
        return *p > f;
    }
    return true;
}

/* A float (1.5, 6e23, -inf, nan), a 0x/0o/0b integer, or a date, time or date-time: the
 * TOML values kept opaque. s..end is the scanned bare token. */
static bool toml_other_value(const char *s, const char *end)
{
    const char *p = s;
    if (end - s > 2 && s[0] == '0' && strchr("xob", s[1])) {
        p = s + 2;
        const char *digits = s[1] == 'x'   ? "0123456789abcdefABCDEF"
                             : s[1] == 'o' ? "01234567"
                                           : "01";
        return digit_run(&p, end, digits) && p == end;
    }
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (end - p == 3 && (!memcmp(p, "inf", 3) || !memcmp(p, "nan", 3))) return true;
    /* Date first: 4 digits then '-' cannot be a number. */
    const char *d = s;
    if (fixed_digits(&d, end, 4) && d < end && *d == '-') {
        d++;
        if (!fixed_digits(&d, end, 2) || d >= end || *d++ != '-' || !fixed_digits(&d, end, 2))
            return false;
        if (d == end) return true; /* local date */
        if (*d != 'T' && *d != 't' && *d != ' ') return false;
        d++;
        if (!toml_time(&d, end)) return false;
        if (d == end) return true; /* local date-time */
        if ((*d == 'Z' || *d == 'z') && d + 1 == end) return true;
        if (*d != '+' && *d != '-') return false;
        d++;
        return fixed_digits(&d, end, 2) && d < end && *d++ == ':' && fixed_digits(&d, end, 2) &&
               d == end;
    }
    const char *t = s;
    if (toml_time(&t, end) && t == end) return true; /* local time */
    /* Float: int part, then a fraction, an exponent, or both. */
    if (!digit_run(&p, end, "0123456789")) return false;
    bool frac = false, exp = false;
    if (p < end && *p == '.') {
        p++;
        if (!digit_run(&p, end, "0123456789")) return false;
        frac = true;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (!digit_run(&p, end, "0123456789")) return false;
        exp = true;
    }
    return p == end && (frac || exp);
}

/* Whether a date at s..end may go on with " HH:MM…" (TOML allows a space for the T). */
static bool date_then_space_time(const char *s, const char *p, const char *end)
{
    return p - s == 10 && s[4] == '-' && s[7] == '-' && end - p >= 4 && p[0] == ' ' &&
           p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' && p[3] == ':';
}

static int parse_value(struct parser *ps, struct toml_value *v, int depth)
{
    if (ps->p >= ps->end || *ps->p == '\n' || *ps->p == '#') return perr(ps, "missing value");
    char ch = *ps->p;
    /* depth counts the arrays and inline tables around this value: at most TOML_MAX_DEPTH. */
    if ((ch == '[' || ch == '{') && depth >= TOML_MAX_DEPTH)
        return perr(ps, "values nested too deeply");
    if (ch == '"' || ch == '\'') {
        v->type = TOML_STR;
        return parse_string(ps, &v->str);
    }
    if (ch == '[') return parse_array(ps, v, depth);
    if (ch == '{') {
        v->type = TOML_OTHER;
        return skip_inline_table(ps, depth);
    }
    const char *start = ps->p;
    while (ps->p < ps->end && (is_bare(*ps->p) || *ps->p == '+' || *ps->p == '.' || *ps->p == ':'))
        ps->p++;
    if (date_then_space_time(start, ps->p, ps->end)) {
        ps->p++;
        while (ps->p < ps->end &&
               (is_bare(*ps->p) || *ps->p == '+' || *ps->p == '.' || *ps->p == ':'))
            ps->p++;
    }
    size_t n = (size_t) (ps->p - start);
    if (n == 0) return perr(ps, "invalid value starting with '%c'", ch);
    if ((n == 4 && !memcmp(start, "true", 4)) || (n == 5 && !memcmp(start, "false", 5))) {
        v->type = TOML_BOOL;
        v->b = n == 4;
        return 0;
    }
    /* Integer: [+-]digits with single '_' between digits; no leading zeros (TOML). */
    size_t i = 0;
    bool neg = false;
    if (start[0] == '+' || start[0] == '-') {
        neg = start[0] == '-';
        i = 1;
    }
    bool is_int = i < n;
    uint64_t acc = 0;
    bool overflow = false;
    for (size_t j = i; j < n && is_int; j++) {
        char d = start[j];
        if (d == '_') {
            if (j == i || j + 1 == n || start[j + 1] == '_') is_int = false;
            continue;
        }
        if (d < '0' || d > '9') {
            is_int = false;
            break;
        }
        if (acc > (UINT64_MAX - (uint64_t) (d - '0')) / 10)
            overflow = true;
        else
            acc = acc * 10 + (uint64_t) (d - '0');
    }
    if (is_int && start[i] == '0' && n - i > 1) is_int = false;
    if (is_int) {
        if (overflow || acc > (uint64_t) INT64_MAX + (neg ? 1 : 0))
            return perr(ps, "integer out of range");
        v->type = TOML_INT;
        v->i = neg ? (int64_t) (0 - acc) : (int64_t) acc;
        return 0;
    }
    /* A float, date or time: kept opaque; a known key refuses it with its own reason. Anything
     * else (a bare word) is not TOML: an unknown key refuses it in parse_statement. */
    v->type = TOML_OTHER;
    if (!toml_other_value(start, ps->p)) {
        v->bad = start;
        v->bad_len = n > 40 ? 40 : (int) n;
    }
    return 0;
}

static int parse_key(struct parser *ps, char *out, size_t outlen)
{
    struct buf b;
    buf_init(&b);
    for (;;) {
        skip_blank(ps);
        if (ps->p < ps->end && (*ps->p == '"' || *ps->p == '\'')) {
            char *s;
            int rc = parse_string(ps, &s);
            if (rc < 0) {
                buf_clear(&b);
                return rc;
            }
            buf_append_str(&b, s);
            free(s);
        } else {
            const char *start = ps->p;
            while (ps->p < ps->end && is_bare(*ps->p))
                ps->p++;
            if (ps->p == start) {
                buf_clear(&b);
                return perr(ps, "expected a key");
            }
            buf_append(&b, start, (size_t) (ps->p - start));
        }
        skip_blank(ps);
        if (ps->p < ps->end && *ps->p == '.') { /* dotted key: kept joined, warned as unknown */
            ps->p++;
            buf_append(&b, ".", 1);
            continue;
        }
        break;
    }
    if (b.len >= outlen) {
        buf_clear(&b);
        return perr(ps, "key too long");
    }
    memcpy(out, b.data, b.len + 1);
    buf_clear(&b);
    return 0;
}

/* Records a table header (is_table) or a key of a table; false when already seen. Entries are
 * kind byte, table, NUL, key, NUL: a table header and a key named "" never collide. */
static bool mark_seen(struct parser *ps, bool is_table, const char *table, const char *key)
{
    char kind = is_table ? 'T' : 'K';
    size_t tl = strlen(table), kl = strlen(key);
    for (size_t pos = 0; pos < ps->seen.len;) {
        const char *e = (const char *) ps->seen.data + pos;
        const char *t = e + 1;
        const char *k = t + strlen(t) + 1;
        if (*e == kind && !strcmp(t, table) && !strcmp(k, key)) return false;
        pos += 1 + strlen(t) + 1 + strlen(k) + 1;
    }
    buf_append(&ps->seen, &kind, 1);
    buf_append(&ps->seen, table, tl + 1);
    buf_append(&ps->seen, key, kl + 1);
    return true;
}

static int parse_statement(struct parser *ps)
{
    if (*ps->p == '[') {
        ps->p++;
        if (ps->p < ps->end && *ps->p == '[') return perr(ps, "arrays of tables are not supported");
        char name[128];
        int rc = parse_key(ps, name, sizeof(name));
        if (rc < 0) return rc;
        if (ps->p >= ps->end || *ps->p != ']') return perr(ps, "expected ']' after table name");
        ps->p++;
        if (!mark_seen(ps, true, name, "")) return perr(ps, "table [%s] defined twice", name);
        (void) snprintf(ps->table, sizeof(ps->table), "%s", name);
        if (ps->h->on_table) ps->h->on_table(ps->h->arg, name, ps->line);
        return end_of_statement(ps);
    }
    char key[128];
    int rc = parse_key(ps, key, sizeof(key));
    if (rc < 0) return rc;
    if (ps->p >= ps->end || *ps->p != '=') return perr(ps, "expected '=' after key '%s'", key);
    ps->p++;
    skip_blank(ps);
    int line = ps->line;
    struct toml_value v = { 0 };
    rc = parse_value(ps, &v, 0);
    if (rc == 0 && !mark_seen(ps, false, ps->table, key)) {
        ps->line = line; /* the key's line, also when its value spans lines */
        rc = perr(ps, "duplicate key '%s'", key);
    }
    char why[sizeof(ps->err->reason)];
    if (rc == 0 && ps->h->on_key(ps->h->arg, ps->table, key, &v, line, why, sizeof(why)) < 0) {
        ps->line = line;
        rc = perr(ps, "%s", why);
    }
    toml_value_clear(&v);
    return rc < 0 ? rc : end_of_statement(ps);
}

int toml_parse(const char *text, size_t len, const struct toml_handler *h, struct toml_error *err)
{
    assert(h && h->on_key && err && (text || len == 0));
    if (len == 0) return 0;
    struct parser ps = { .p = text, .end = text + len, .line = 1, .err = err, .h = h };
    int rc = 0;
    buf_init(&ps.seen);
    if (ps.p && ps.end - ps.p >= 3 && !memcmp(ps.p, "\xEF\xBB\xBF", 3)) ps.p += 3; /* UTF-8 BOM */
    while (rc == 0 && ps.p && ps.p < ps.end) {
        skip_space_nl(&ps);
        if (ps.p >= ps.end) break;
        rc = parse_statement(&ps);
    }
    buf_clear(&ps.seen);
    return rc;
}
