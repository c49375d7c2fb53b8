/* SPDX-License-Identifier: MIT */
/*
 * resp: RESP2 request parser and reply encoder; see include/arborkv/resp.h and protocol.md §5.
 *
 * The parser is a resumable state machine over the unconsumed input. It keeps `pos` (bytes of
 * the current frame already parsed) and the header/payload it expects next, so each byte is
 * looked at once however the frame is split; arguments are stored as offsets from the frame start
 * because the caller's buffer may move between calls. Header lines are searched for "\r\n" only
 * past what was already scanned (`scan`). Error messages follow Redis 7 so clients recognize them.
 */
#include "arborkv/resp.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arborkv/mem.h"

#define ARGS_INITIAL_CAP 16   /* argument slots allocated up front */
#define ARGS_RESERVE_MAX 1024 /* never reserve more than this from an announced count */

enum {
    ST_ARRAY_HDR = 0, /* expecting "*<n>\r\n" */
    ST_BULK_HDR,      /* expecting "$<len>\r\n" */
    ST_BULK_DATA,     /* expecting <len> bytes and "\r\n" */
};

void resp_parser_init(struct resp_parser *p)
{
    struct resp_arg *args = p->args;
    size_t cap = p->args_cap;
    memset(p, 0, sizeof(*p));
    p->args = args;
    p->args_cap = cap;
    p->state = ST_ARRAY_HDR;
    p->bulk_len = -1;
}

void resp_parser_clear(struct resp_parser *p)
{
    free(p->args);
    p->args = NULL;
    p->args_cap = 0;
    resp_parser_init(p);
}

static int fail(struct resp_parser *p, int err, const char *msg)
{
    p->err = err;
    (void) snprintf(p->errstr, sizeof(p->errstr), "%s", msg);
    return err;
}

/*
 * Finds the header line starting at data[p->pos]. Returns 1 with *val parsed and *line_end the
 * offset just past "\r\n", 0 when incomplete, <0 on error (too long or not a number).
 * min is the smallest value accepted (-1 for "*-1", 0 otherwise).
 */
static int header(struct resp_parser *p, const uint8_t *data, size_t len, char type, int64_t *val,
                  size_t *line_end)
{
    size_t start = p->pos;
    if (start >= len) return 0;
    if (data[start] != (uint8_t) type) {
        char msg[64];
        if (type == '$') {
            (void) snprintf(msg, sizeof(msg), "Protocol error: expected '$', got '%c'",
                            data[start] >= 0x20 && data[start] < 0x7f ? data[start] : '?');
            return fail(p, -EBADMSG, msg);
        }
        return fail(p, -EBADMSG, "Protocol error: expected '*'");
    }
    size_t from = p->scan > start + 1 ? p->scan : start + 1;
    size_t limit = start + RESP_MAX_LINE_BYTES < len ? start + RESP_MAX_LINE_BYTES : len;
    const uint8_t *cr = from < limit ? memchr(data + from, '\r', limit - from) : NULL;
    if (!cr || (size_t) (cr - data) + 1 >= len) {
        if (len - start >= RESP_MAX_LINE_BYTES)
            return fail(p, -E2BIG,
                        type == '*' ? "Protocol error: too big mbulk count string"
                                    : "Protocol error: too big bulk count string");
        /* Remember how far we looked (a '\r' at the very end still needs its '\n'). */
        p->scan = cr ? (size_t) (cr - data) : limit;
        return 0;
    }
    size_t crpos = (size_t) (cr - data);
    const char *bad = type == '*' ? "Protocol error: invalid multibulk length"
                                  : "Protocol error: invalid bulk length";
    if (data[crpos + 1] != '\n') return fail(p, -EBADMSG, bad);
    /* Strict decimal: optional '-' only for "*-1"/"$-1", digits, at most 18 of them. */
    size_t i = start + 1;
    bool neg = false;
    if (i < crpos && data[i] == '-') {
        neg = true;
        i++;
    }
    if (i == crpos || crpos - i > 18) return fail(p, -EBADMSG, bad);
    int64_t v = 0;
    for (; i < crpos; i++) {
        if (data[i] < '0' || data[i] > '9') return fail(p, -EBADMSG, bad);
        v = v * 10 + (data[i] - '0');
    }
    *val = neg ? -v : v;
    *line_end = crpos + 2;
    p->scan = 0;
    return 1;
}

static void push_arg(struct resp_parser *p, size_t off, size_t len)
{
    if (p->argc == p->args_cap) {
        size_t cap = p->args_cap ? p->args_cap * 2 : ARGS_INITIAL_CAP;
        p->args = xrealloc(p->args, cap * sizeof(*p->args));
        p->args_cap = cap;
    }
    p->args[p->argc++] = (struct resp_arg){ .off = off, .len = len };
}

int resp_parser_next(struct resp_parser *p, const uint8_t *data, size_t len, size_t *consumed)
{
    assert(p && (data || len == 0) && consumed);
    if (p->err) return p->err;
    for (;;) {
        if (p->pos > RESP_MAX_FRAME_BYTES)
            return fail(p, -E2BIG, "Protocol error: request too large");
        int64_t v;
        size_t end;
        int rc;
        switch (p->state) {
        case ST_ARRAY_HDR:
            if (p->pos == 0 && len > 0 && (data[0] == '\r' || data[0] == '\n')) {
                /* Blank lines between frames are skipped, as Redis does (redis-cli --pipe
                 * sends "\r\n" before its final ECHO). */
                size_t n = 0;
                while (n < len && (data[n] == '\r' || data[n] == '\n'))
                    n++;
                *consumed = n;
                p->argc = 0;
                return 1;
            }
            rc = header(p, data, len, '*', &v, &end);
            if (rc <= 0) return rc;
            if (v > RESP_MAX_ARGS || v < -1)
                return fail(p, -EBADMSG, "Protocol error: invalid multibulk length");
            p->pos = end;
            p->argc = 0;
            if (v <= 0) { /* "*0" and "*-1": an empty request, skipped by the caller */
                *consumed = p->pos;
                resp_parser_init(p);
                return 1;
            }
            p->nargs = v;
            if (p->args_cap < (size_t) v && p->args_cap < ARGS_RESERVE_MAX) {
                size_t cap = (size_t) v < ARGS_RESERVE_MAX ? (size_t) v : ARGS_RESERVE_MAX;
                p->args = xrealloc(p->args, cap * sizeof(*p->args));
                p->args_cap = cap;
            }
            p->state = ST_BULK_HDR;
            break;
        case ST_BULK_HDR:
            rc = header(p, data, len, '$', &v, &end);
            if (rc <= 0) return rc;
            if (v < 0 || v > RESP_MAX_BULK_BYTES)
                return fail(p, -EBADMSG, "Protocol error: invalid bulk length");
            if ((uint64_t) end + (uint64_t) v > RESP_MAX_FRAME_BYTES)
                return fail(p, -E2BIG, "Protocol error: request too large");
            p->pos = end;
            p->bulk_len = v;
            p->state = ST_BULK_DATA;
            break;
        case ST_BULK_DATA: {
            size_t need = (size_t) p->bulk_len + 2;
            if (len - p->pos < need) return 0;
            if (data[p->pos + (size_t) p->bulk_len] != '\r' ||
                data[p->pos + (size_t) p->bulk_len + 1] != '\n')
                return fail(p, -EBADMSG, "Protocol error: expected '\\r\\n' after bulk data");
            push_arg(p, p->pos, (size_t) p->bulk_len);
            p->pos += need;
            p->bulk_len = -1;
            if ((int64_t) p->argc == p->nargs) {
                *consumed = p->pos;
                size_t argc = p->argc;
                p->pos = 0;
                p->nargs = 0;
                p->scan = 0;
                p->state = ST_ARRAY_HDR;
                p->argc = argc; /* valid until the next call */
                return 1;
            }
            p->state = ST_BULK_HDR;
            break;
        }
        default:
            return fail(p, -EBADMSG, "Protocol error: internal parser state");
        }
    }
}

/* ---- reply encoders ---- */

void resp_add_simple(struct buf *out, const char *s)
{
    buf_append(out, "+", 1);
    buf_append_str(out, s);
    buf_append(out, "\r\n", 2);
}

void resp_add_error(struct buf *out, const char *msg, size_t len)
{
    assert(out && (msg || len == 0));
    buf_reserve(out, len + 3);
    buf_append(out, "-", 1);
    size_t start = out->len;
    buf_append(out, msg, len);
    for (size_t i = start; i < out->len; i++)
        if (out->data[i] == '\r' || out->data[i] == '\n') out->data[i] = ' ';
    buf_append(out, "\r\n", 2);
}

void resp_add_int(struct buf *out, int64_t v)
{
    buf_append(out, ":", 1);
    buf_append_i64(out, v);
    buf_append(out, "\r\n", 2);
}

void resp_add_bulk(struct buf *out, const void *p, size_t len)
{
    assert(out && (p || len == 0));
    buf_reserve(out, len + 24);
    buf_append(out, "$", 1);
    buf_append_u64(out, len);
    buf_append(out, "\r\n", 2);
    buf_append(out, p, len);
    buf_append(out, "\r\n", 2);
}

void resp_add_bulk_str(struct buf *out, const char *s)
{
    resp_add_bulk(out, s, strlen(s));
}

void resp_add_null(struct buf *out)
{
    buf_append(out, "$-1\r\n", 5);
}

void resp_add_array_len(struct buf *out, size_t n)
{
    buf_append(out, "*", 1);
    buf_append_u64(out, n);
    buf_append(out, "\r\n", 2);
}

void resp_add_null_array(struct buf *out)
{
    buf_append(out, "*-1\r\n", 5);
}
