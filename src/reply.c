/* SPDX-License-Identifier: MIT */
/*
 * reply: reply encoding for both protocols; see include/arborkv/reply.h and src/cmd_int.h.
 *
 * Below the command files and the connection module alike (conn.c writes protocol errors with
 * it), so neither needs the other to answer a client.
 */
#include "arborkv/reply.h"

#include <assert.h>
#include <stdarg.h>
#include <string.h>

#include "arborkv/buf.h"
#include "arborkv/resp.h"
#include "cmd_int.h"

static void crlf(struct buf *b)
{
    buf_append(b, "\r\n", 2);
}

void reply_ok(struct cmd_ctx *x)
{
    reply_ok_to(x->out, x->resp);
}

void reply_ok_to(struct buf *out, bool resp)
{
    buf_append_str(out, resp ? "+OK\r\n" : "OK\r\n");
}

void reply_error_to(struct buf *out, bool resp, const char *msg, size_t len)
{
    assert(out && (msg || len == 0));
    if (resp) {
        struct buf tmp;
        buf_init(&tmp);
        buf_append(&tmp, "ERR ", 4);
        buf_append(&tmp, msg, len);
        resp_add_error(out, (const char *) tmp.data, tmp.len);
        buf_clear(&tmp);
    } else {
        buf_append(out, "ERROR ", 6);
        buf_append(out, msg, len);
        crlf(out);
    }
}

void reply_error(struct cmd_ctx *x, const char *fmt, ...)
{
    struct cmd_state *st = x->srv->cmd_state;
    va_list ap;
    buf_reset(&st->tmp2);
    va_start(ap, fmt);
    buf_vprintf(&st->tmp2, fmt, ap);
    va_end(ap);
    reply_error_to(x->out, x->resp, (const char *) st->tmp2.data, st->tmp2.len);
}

void reply_error_raw(struct cmd_ctx *x, const char *msg)
{
    resp_add_error(x->out, msg, strlen(msg));
}

void reply_value(struct cmd_ctx *x, const void *p, size_t len)
{
    if (x->resp) {
        resp_add_bulk(x->out, p, len);
    } else {
        buf_reserve(x->out, len + 8);
        buf_append(x->out, "VALUE ", 6);
        buf_append(x->out, p, len);
        crlf(x->out);
    }
}

void reply_not_found(struct cmd_ctx *x)
{
    buf_append_str(x->out, x->resp ? "$-1\r\n" : "NOT_FOUND\r\n");
}

void reply_int_named(struct cmd_ctx *x, const char *name, int64_t n)
{
    if (x->resp) {
        resp_add_int(x->out, n);
    } else {
        buf_append_str(x->out, name);
        buf_append(x->out, " ", 1);
        buf_append_i64(x->out, n);
        crlf(x->out);
    }
}

void reply_text_named(struct cmd_ctx *x, const char *name, const char *text)
{
    if (x->resp) {
        resp_add_bulk_str(x->out, text);
    } else {
        buf_append_str(x->out, name);
        if (*text) {
            buf_append(x->out, " ", 1);
            buf_append_str(x->out, text);
        }
        crlf(x->out);
    }
}

void reply_status(struct cmd_ctx *x, const char *status)
{
    if (x->resp)
        resp_add_simple(x->out, status);
    else {
        buf_append_str(x->out, status);
        crlf(x->out);
    }
}

void reply_lines(struct cmd_ctx *x, const char *header, const struct buf *body)
{
    if (x->resp) {
        resp_add_bulk(x->out, body->data, body->len);
    } else {
        buf_append_str(x->out, header);
        crlf(x->out);
        buf_append(x->out, body->data, body->len);
    }
}

void reply_storage_error(struct cmd_ctx *x)
{
    reply_error(x, "storage error, see the server log");
}
