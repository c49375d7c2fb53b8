/* SPDX-License-Identifier: MIT */
/*
 * buf: growable binary-safe byte buffer; see include/arborkv/buf.h.
 *
 * Growth doubles the capacity (at least 64 bytes) so appends are amortized O(1); buf_consume
 * moves the tail to the front, which keeps the layout simple: callers that consume often in small
 * steps should consume in batches (the connection code does one consume per read).
 */
#include "arborkv/buf.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arborkv/mem.h"

void buf_init(struct buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void buf_clear(struct buf *b)
{
    if (!b) return;
    free(b->data);
    buf_init(b);
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void buf_reserve(struct buf *b, size_t extra)
{
    assert(b);
    if (b->cap > b->len + extra) return; /* one spare byte for the NUL */
    size_t need = b->len + extra + 1;
    if (need < b->len) abort(); /* size_t overflow: a caller bug, sizes are limited upstream */
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    assert(b && (p || n == 0));
    buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void buf_append_str(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_append_u64(struct buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char) ('0' + v % 10);
        v /= 10;
    } while (v);
    buf_append(b, tmp + i, sizeof(tmp) - i);
}

void buf_append_i64(struct buf *b, int64_t v)
{
    if (v < 0) {
        buf_append(b, "-", 1);
        buf_append_u64(b, (uint64_t) 0 - (uint64_t) v);
    } else {
        buf_append_u64(b, (uint64_t) v);
    }
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) return;
    buf_reserve(b, (size_t) n);
    (void) vsnprintf((char *) b->data + b->len, (size_t) n + 1, fmt, ap);
    b->len += (size_t) n;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void buf_consume(struct buf *b, size_t n)
{
    assert(b);
    if (n >= b->len) {
        buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void buf_truncate(struct buf *b, size_t n)
{
    assert(b);
    if (n >= b->len) return;
    b->len = n;
    b->data[n] = '\0';
}

bool parse_i64(const uint8_t *p, size_t len, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (len > 0 && (p[0] == '+' || p[0] == '-')) {
        neg = p[0] == '-';
        i = 1;
    }
    if (i == len) return false;
    uint64_t v = 0, limit = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') return false;
        uint64_t d = (uint64_t) (p[i] - '0');
        if (v > (limit - d) / 10) return false;
        v = v * 10 + d;
    }
    if (out) *out = neg ? (int64_t) (0 - v) : (int64_t) v;
    return true;
}

void buf_add_field(struct buf *b, const char *name, uint64_t value)
{
    buf_append_str(b, name);
    buf_append(b, ":", 1);
    buf_append_u64(b, value);
    buf_append(b, "\r\n", 2);
}

int slice_cmp_upper(const struct slice *s, const char *upper)
{
    assert(s && upper && (s->p || s->len == 0));
    size_t i = 0;
    for (; i < s->len && upper[i]; i++) {
        int a = s->p[i] >= 'a' && s->p[i] <= 'z' ? s->p[i] - 32 : s->p[i];
        int b = (unsigned char) upper[i];
        if (a != b) return a - b;
    }
    if (i < s->len) return 1;
    return upper[i] ? -1 : 0;
}

bool slice_is(const struct slice *s, const char *upper)
{
    return slice_cmp_upper(s, upper) == 0;
}

int reason_printf(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}
