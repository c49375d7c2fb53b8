/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for resp (protocol.md §5): whole request frames, frames split at every byte (and
 * delivered in exactly-sized heap copies so an over-read is caught under ASan), bad lengths,
 * nested garbage, a fixed-seed fuzz loop comparing whole-buffer and byte-at-a-time parses, and
 * the reply encoders byte for byte.
 */
#include "arborkv/resp.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arborkv/buf.h"
#include "harness.h"

/* ---- helpers ---- */

struct want {
    const char *p; /* expected argument bytes (may hold NUL) */
    size_t len;    /* bytes */
};

#define W(lit)                 \
    {                          \
        (lit), sizeof(lit) - 1 \
    }

/* A literal as the (data, len) arguments of resp_parser_next. */
#define LIT(s) (const uint8_t *) (s), sizeof(s) - 1

static void dump_args(const struct resp_parser *p, const uint8_t *data)
{
    for (size_t i = 0; i < p->argc; i++)
        fprintf(stderr, "  arg[%zu] = \"%.*s\" (off %zu, len %zu)\n", i, (int) p->args[i].len,
                (const char *) data + p->args[i].off, p->args[i].off, p->args[i].len);
}

/* Checks that p holds exactly the wanted arguments, resolved against data, all inside the frame. */
static void check_args_at(int at, const struct resp_parser *p, const uint8_t *data, size_t frame,
                          const struct want *want, size_t nwant)
{
    bool same = p->argc == nwant;
    for (size_t i = 0; same && i < nwant; i++)
        same = p->args[i].off + p->args[i].len <= frame && p->args[i].len == want[i].len &&
               memcmp(data + p->args[i].off, want[i].p, want[i].len) == 0;
    if (!same) {
        fprintf(stderr, "%s:%d: argument mismatch, got %zu (want %zu):\n", __FILE__, at, p->argc,
                nwant);
        dump_args(p, data);
        for (size_t i = 0; i < nwant; i++)
            fprintf(stderr, "  want[%zu] = \"%.*s\"\n", i, (int) want[i].len, want[i].p);
        abort();
    }
}

/* Parses a whole frame (a fresh parser, one call) and checks consumed == len and the arguments. */
static void expect_frame_at(int at, const char *in, size_t len, const struct want *want,
                            size_t nwant)
{
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    size_t used = (size_t) -1;
    int rc = resp_parser_next(&p, (const uint8_t *) in, len, &used);
    if (rc != 1 || used != len) {
        fprintf(stderr, "%s:%d: expected a whole frame of %zu bytes, got rc %d, consumed %zu, %s\n",
                __FILE__, at, len, rc, used, p.errstr);
        abort();
    }
    check_args_at(at, &p, (const uint8_t *) in, used, want, nwant);
    resp_parser_clear(&p);
}

/* Parses in (fresh parser, one call) and checks it fails with rc and exactly msg; then that the
 * error is sticky: a later call, even with a valid frame, fails the same way. */
static void expect_err_at(int at, const char *in, size_t len, int want_rc, const char *msg)
{
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    size_t used = 12345;
    int rc = resp_parser_next(&p, (const uint8_t *) in, len, &used);
    if (rc != want_rc || strcmp(p.errstr, msg) != 0 || p.err != want_rc) {
        fprintf(stderr, "%s:%d: \"%.*s\": expected rc %d \"%s\", got rc %d \"%s\"\n", __FILE__, at,
                (int) (len > 60 ? 60 : len), in, want_rc, msg, rc, p.errstr);
        abort();
    }
    ASSERT(p.errstr[0] != '\0');
    ASSERT_EQ(used, 12345); /* consumed is only written on success */
    ASSERT_EQ(resp_parser_next(&p, (const uint8_t *) in, len, &used), want_rc);
    ASSERT_EQ(resp_parser_next(&p, LIT("*1\r\n$4\r\nPING\r\n"), &used), want_rc);
    ASSERT_STR_EQ(p.errstr, msg);
    /* resp_parser_init forgets the error (a new connection). */
    resp_parser_init(&p);
    ASSERT_EQ(resp_parser_next(&p, LIT("*1\r\n$4\r\nPING\r\n"), &used), 1);
    ASSERT_EQ(used, 14);
    ASSERT_EQ(p.err, 0);
    resp_parser_clear(&p);
}

/* String literals (sizeof keeps embedded NULs). */
#define EXPECT_FRAME(in, ...)                                                            \
    do {                                                                                 \
        static const struct want w_[] = { __VA_ARGS__ };                                 \
        expect_frame_at(__LINE__, (in), sizeof(in) - 1, w_, sizeof(w_) / sizeof(w_[0])); \
    } while (0)
#define EXPECT_ERR(in, rc, msg) expect_err_at(__LINE__, (in), sizeof(in) - 1, (rc), (msg))

static const char invalid_mbulk[] = "Protocol error: invalid multibulk length";
static const char invalid_bulk[] = "Protocol error: invalid bulk length";
static const char bad_crlf[] = "Protocol error: expected '\\r\\n' after bulk data";

/*
 * Runs in[0..n) through a parser the way a connection does: bytes arrive in chunks ending at
 * cuts[0] < cuts[1] < ... < cuts[ncuts - 1] == n, are appended to an input buffer (which may move),
 * and every ready frame is consumed. Logs, binary-safe, each frame with arguments (argc 0 results,
 * blank lines and "*0", are skipped as callers do), then either "wait <unconsumed>" or
 * "err <rc> <msg> <unconsumed>". Checks on every result: consumed in 1..len, arguments inside the
 * frame, a non-empty message with every error.
 */
static void run_chunks(const uint8_t *in, size_t n, const size_t *cuts, size_t ncuts,
                       struct buf *log)
{
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    struct buf pending;
    buf_init(&pending);
    buf_reset(log);
    int rc = 0;
    size_t from = 0;
    for (size_t c = 0; c < ncuts && rc >= 0; c++) {
        ASSERT(cuts[c] >= from && cuts[c] <= n);
        buf_append(&pending, in + from, cuts[c] - from);
        from = cuts[c];
        for (;;) {
            size_t used = 0;
            rc = resp_parser_next(&p, pending.data, pending.len, &used);
            if (rc != 1) break;
            ASSERT(used >= 1 && used <= pending.len);
            for (size_t i = 0; i < p.argc; i++)
                ASSERT(p.args[i].off <= used && p.args[i].len <= used - p.args[i].off);
            if (p.argc > 0) {
                buf_printf(log, "frame %zu:", p.argc);
                for (size_t i = 0; i < p.argc; i++) {
                    buf_printf(log, " %zu:", p.args[i].len);
                    buf_append(log, pending.data + p.args[i].off, p.args[i].len);
                }
                buf_append(log, "\n", 1);
            }
            buf_consume(&pending, used);
        }
    }
    if (rc < 0) {
        ASSERT(rc == -EBADMSG || rc == -E2BIG);
        ASSERT(p.errstr[0] != '\0');
        buf_printf(log, "err %d %s %zu\n", rc, p.errstr, pending.len + (n - from));
    } else {
        ASSERT_EQ(rc, 0);
        ASSERT_EQ(from, n);
        buf_printf(log, "wait %zu\n", pending.len);
    }
    buf_clear(&pending);
    resp_parser_clear(&p);
}

static void run_whole(const uint8_t *in, size_t n, struct buf *log)
{
    run_chunks(in, n, &n, 1, log);
}

static void run_bytewise(const uint8_t *in, size_t n, struct buf *log)
{
    size_t *cuts = malloc((n + 1) * sizeof(*cuts));
    ASSERT(cuts != NULL);
    for (size_t i = 0; i <= n; i++)
        cuts[i] = i;
    run_chunks(in, n, cuts, n + 1, log);
    free(cuts);
}

static void expect_same_log(const struct buf *a, const struct buf *b, const char *what)
{
    if (a->len != b->len || (a->len && memcmp(a->data, b->data, a->len) != 0)) {
        fprintf(stderr, "%s: logs differ:\n--- whole\n%.*s--- %s\n%.*s", what, (int) a->len,
                a->len ? (const char *) a->data : "", what, (int) b->len,
                b->len ? (const char *) b->data : "");
        abort();
    }
}

/* ---- frames used by the split tests ---- */

struct frame_case {
    const char *in;      /* the frame */
    size_t len;          /* bytes */
    size_t nargs;        /* expected arguments */
    struct want args[5]; /* expected arguments */
};

#define FRAME(lit) (lit), sizeof(lit) - 1

static const struct frame_case frames[] = {
    { FRAME("*1\r\n$4\r\nPING\r\n"), 1, { W("PING") } },
    { FRAME("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"),
      3,
      { W("SET"), W("key"), W("value") } },
    { FRAME("*2\r\n$4\r\nECHO\r\n$8\r\na\r\n\0\nb\r\n\r\n"),
      2,
      { W("ECHO"), W("a\r\n\0\nb\r\n") } },
    { FRAME("*2\r\n$3\r\nGET\r\n$0\r\n\r\n"), 2, { W("GET"), W("") } },
    { FRAME("*5\r\n$1\r\n*\r\n$1\r\n$\r\n$2\r\n\r\n\r\n$12\r\n0123456789ab\r\n$1\r\n\xff\r\n"),
      5,
      { W("*"), W("$"), W("\r\n"), W("0123456789ab"), W("\xff") } },
    { FRAME("*0\r\n"), 0, { { NULL, 0 } } },
    { FRAME("*-1\r\n"), 0, { { NULL, 0 } } },
};

#define NFRAMES (sizeof(frames) / sizeof(frames[0]))

/* ---- whole frames ---- */

TEST(whole_ping)
{
    EXPECT_FRAME("*1\r\n$4\r\nPING\r\n", W("PING"));
}

TEST(whole_multi_arg)
{
    EXPECT_FRAME("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n", W("SET"), W("key"), W("value"));
    EXPECT_FRAME("*4\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$0\r\n\r\n", W("MSET"), W("a"), W("1"),
                 W(""));
    EXPECT_FRAME("*1\r\n$10\r\n0123456789\r\n", W("0123456789"));
}

TEST(whole_binary_safe)
{
    /* CR, LF, CRLF, NUL and high bytes inside a bulk are data; only the length counts. */
    EXPECT_FRAME("*3\r\n$3\r\nSET\r\n$4\r\nk\0\r\n\r\n$6\r\n\r\n\0\xff\n\r\r\n", W("SET"),
                 W("k\0\r\n"), W("\r\n\0\xff\n\r"));
    EXPECT_FRAME("*1\r\n$2\r\n\r\n\r\n", W("\r\n"));
    EXPECT_FRAME("*1\r\n$1\r\n\0\r\n", W("\0"));
}

TEST(whole_empty_bulk)
{
    EXPECT_FRAME("*1\r\n$0\r\n\r\n", W(""));
    EXPECT_FRAME("*2\r\n$0\r\n\r\n$0\r\n\r\n", W(""), W(""));
}

TEST(empty_arrays_give_argc_0)
{
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    size_t used = 0;
    ASSERT_EQ(resp_parser_next(&p, LIT("*0\r\n"), &used), 1);
    ASSERT_EQ(p.argc, 0);
    ASSERT_EQ(used, 4);
    ASSERT_EQ(resp_parser_next(&p, LIT("*-1\r\n"), &used), 1); /* null array */
    ASSERT_EQ(p.argc, 0);
    ASSERT_EQ(used, 5);
    ASSERT_EQ(resp_parser_next(&p, LIT("*0\r\n*1\r\n"), &used), 1);
    ASSERT_EQ(p.argc, 0);
    ASSERT_EQ(used, 4);
    ASSERT_EQ(resp_parser_next(&p, LIT("*1\r\n$1\r\nx\r\n"), &used), 1);
    ASSERT_EQ(p.argc, 1);
    ASSERT_EQ(used, 11);
    resp_parser_clear(&p);
}

TEST(blank_lines_before_a_frame)
{
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    size_t used = 0;
    const char in[] = "\r\n\n\r\n\n*1\r\n$4\r\nPING\r\n";
    const uint8_t *d = (const uint8_t *) in;
    ASSERT_EQ(resp_parser_next(&p, d, sizeof(in) - 1, &used), 1);
    ASSERT_EQ(p.argc, 0);
    ASSERT_EQ(used, 6); /* the whole run of blank lines at once */
    ASSERT_EQ(resp_parser_next(&p, d + 6, sizeof(in) - 1 - 6, &used), 1);
    ASSERT_EQ(p.argc, 1);
    ASSERT_EQ(used, 14);
    ASSERT_SLICE_EQ(d + 6 + p.args[0].off, p.args[0].len, "PING");

    ASSERT_EQ(resp_parser_next(&p, LIT("\r\n"), &used), 1);
    ASSERT_EQ(p.argc, 0);
    ASSERT_EQ(used, 2);
    ASSERT_EQ(resp_parser_next(&p, LIT("\n"), &used), 1);
    ASSERT_EQ(p.argc, 0);
    ASSERT_EQ(used, 1);
    ASSERT_EQ(resp_parser_next(&p, LIT("\r"), &used), 1); /* LF still to come */
    ASSERT_EQ(p.argc, 0);
    ASSERT_EQ(used, 1);
    ASSERT_EQ(resp_parser_next(&p, LIT(""), &used), 0); /* nothing at all */
    resp_parser_clear(&p);
}

TEST(back_to_back_frames_in_one_buffer)
{
    const char in[] = "*1\r\n$4\r\nPING\r\n"
                      "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
                      "\r\n"
                      "*0\r\n"
                      "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na\r\n\r\n"
                      "*1\r\n$4\r\nPI"; /* a partial frame at the end */
    const uint8_t *d = (const uint8_t *) in;
    size_t n = sizeof(in) - 1;
    static const size_t want_used[] = { 14, 20, 2, 4, 29 };
    static const size_t want_argc[] = { 1, 2, 0, 0, 3 };
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    size_t at = 0;
    for (size_t f = 0; f < 5; f++) {
        size_t used = 0;
        ASSERT_EQ(resp_parser_next(&p, d + at, n - at, &used), 1);
        ASSERT_EQ(used, want_used[f]);
        ASSERT_EQ(p.argc, want_argc[f]);
        for (size_t i = 0; i < p.argc; i++)
            ASSERT(p.args[i].off + p.args[i].len + 2 <= used);
        if (f == 1) {
            ASSERT_EQ(p.args[0].off, 8); /* offsets are relative to the frame start */
            ASSERT_SLICE_EQ(d + at + p.args[0].off, p.args[0].len, "GET");
            ASSERT_SLICE_EQ(d + at + p.args[1].off, p.args[1].len, "k");
        }
        if (f == 4) {
            ASSERT_SLICE_EQ(d + at + p.args[0].off, p.args[0].len, "SET");
            ASSERT_SLICE_EQ(d + at + p.args[2].off, p.args[2].len, "a\r\n");
        }
        at += used;
    }
    size_t used = 0;
    ASSERT_EQ(resp_parser_next(&p, d + at, n - at, &used), 0);
    ASSERT_EQ(n - at, 10);
    resp_parser_clear(&p);
}

TEST(table_frames_parse_whole)
{
    for (size_t f = 0; f < NFRAMES; f++)
        expect_frame_at(__LINE__, frames[f].in, frames[f].len, frames[f].args, frames[f].nargs);
}

TEST(many_args_grow_the_table)
{
    /* More than the 1024 slots reserved from the header: push_arg has to grow the table. */
    struct buf in;
    buf_init(&in);
    enum { N = 3000 };
    resp_add_array_len(&in, N);
    for (int i = 0; i < N; i++) {
        char a[16];
        int l = snprintf(a, sizeof(a), "arg%d", i);
        resp_add_bulk(&in, a, (size_t) l);
    }
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    size_t used = 0;
    ASSERT_EQ(resp_parser_next(&p, in.data, in.len, &used), 1);
    ASSERT_EQ(used, in.len);
    ASSERT_EQ(p.argc, N);
    ASSERT(p.args_cap >= N);
    ASSERT_SLICE_EQ(in.data + p.args[0].off, p.args[0].len, "arg0");
    ASSERT_SLICE_EQ(in.data + p.args[N - 1].off, p.args[N - 1].len, "arg2999");
    /* The table is kept for the next frame. */
    struct resp_arg *args = p.args;
    ASSERT_EQ(resp_parser_next(&p, LIT("*1\r\n$1\r\nx\r\n"), &used), 1);
    ASSERT(p.args == args);
    ASSERT_EQ(p.argc, 1);
    buf_clear(&in);
    resp_parser_clear(&p);
    resp_parser_clear(&p); /* idempotent */
}

TEST(announced_count_does_not_preallocate)
{
    /* "*1048576" is a legal count; the parser reserves at most 1024 slots before data arrives. */
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    size_t used = 0;
    ASSERT_EQ(resp_parser_next(&p, LIT("*1048576\r\n"), &used), 0);
    ASSERT(p.args_cap <= 1024);
    ASSERT_EQ(p.err, 0);
    resp_parser_clear(&p);

    resp_parser_init(&p);
    ASSERT_EQ(resp_parser_next(&p, LIT("*1\r\n$67108864\r\n"), &used), 0);
    ASSERT_EQ(p.err, 0); /* exactly RESP_MAX_BULK_BYTES: waits for the data */
    resp_parser_clear(&p);
}

TEST(encoded_request_round_trips)
{
    struct buf in;
    buf_init(&in);
    resp_add_array_len(&in, 4);
    resp_add_bulk_str(&in, "SET");
    resp_add_bulk(&in, "k\0\r\n", 4);
    resp_add_bulk(&in, "", 0);
    resp_add_bulk_str(&in, "*1\r\n$1\r\nx\r\n");
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    size_t used = 0;
    ASSERT_EQ(resp_parser_next(&p, in.data, in.len, &used), 1);
    ASSERT_EQ(used, in.len);
    static const struct want w[] = { W("SET"), W("k\0\r\n"), W(""), W("*1\r\n$1\r\nx\r\n") };
    check_args_at(__LINE__, &p, in.data, used, w, 4);
    buf_clear(&in);
    resp_parser_clear(&p);
}

/* ---- partial frames ---- */

TEST(split_every_prefix_same_start)
{
    /* One parser; the same frame start with 1, 2, ..., n bytes, each call in a heap copy of exactly
     * that many bytes (the caller's buffer may move, and ASan sees any read past len). */
    for (size_t f = 0; f < NFRAMES; f++) {
        const struct frame_case *fc = &frames[f];
        struct resp_parser p;
        memset(&p, 0, sizeof(p));
        resp_parser_init(&p);
        for (size_t k = 1; k <= fc->len; k++) {
            uint8_t *copy = malloc(k);
            ASSERT(copy != NULL);
            memcpy(copy, fc->in, k);
            size_t used = 0;
            int rc = resp_parser_next(&p, copy, k, &used);
            if (k < fc->len) {
                if (rc != 0) {
                    fprintf(stderr, "frame %zu prefix %zu: rc %d (%s)\n", f, k, rc, p.errstr);
                    abort();
                }
            } else {
                ASSERT_EQ(rc, 1);
                ASSERT_EQ(used, fc->len);
                check_args_at(__LINE__, &p, copy, used, fc->args, fc->nargs);
            }
            free(copy);
        }
        resp_parser_clear(&p);
    }
}

TEST(split_at_every_byte_two_calls)
{
    /* For every split point s: a fresh parser sees s bytes (needs more), then all n. */
    for (size_t f = 0; f < NFRAMES; f++) {
        const struct frame_case *fc = &frames[f];
        for (size_t s = 1; s < fc->len; s++) {
            struct resp_parser p;
            memset(&p, 0, sizeof(p));
            resp_parser_init(&p);
            uint8_t *part = malloc(s);
            ASSERT(part != NULL);
            memcpy(part, fc->in, s);
            size_t used = 0;
            ASSERT_EQ(resp_parser_next(&p, part, s, &used), 0);
            free(part);
            uint8_t *whole = malloc(fc->len);
            ASSERT(whole != NULL);
            memcpy(whole, fc->in, fc->len);
            ASSERT_EQ(resp_parser_next(&p, whole, fc->len, &used), 1);
            ASSERT_EQ(used, fc->len);
            check_args_at(__LINE__, &p, whole, used, fc->args, fc->nargs);
            free(whole);
            resp_parser_clear(&p);
        }
    }
}

TEST(split_at_every_pair_of_points)
{
    for (size_t f = 0; f < NFRAMES; f++) {
        const struct frame_case *fc = &frames[f];
        for (size_t s1 = 1; s1 < fc->len; s1++) {
            for (size_t s2 = s1; s2 < fc->len; s2++) {
                struct resp_parser p;
                memset(&p, 0, sizeof(p));
                resp_parser_init(&p);
                size_t used = 0;
                const uint8_t *d = (const uint8_t *) fc->in;
                ASSERT_EQ(resp_parser_next(&p, d, s1, &used), 0);
                ASSERT_EQ(resp_parser_next(&p, d, s2, &used), 0);
                ASSERT_EQ(resp_parser_next(&p, d, fc->len, &used), 1);
                ASSERT_EQ(used, fc->len);
                check_args_at(__LINE__, &p, d, used, fc->args, fc->nargs);
                resp_parser_clear(&p);
            }
        }
    }
}

TEST(one_byte_at_a_time_all_frames)
{
    /* Every table frame back to back, with blank lines between, arriving one byte per read into a
     * buffer that is consumed (moved) after each frame: same frames as the whole-buffer parse. */
    struct buf all;
    buf_init(&all);
    for (size_t f = 0; f < NFRAMES; f++) {
        buf_append(&all, frames[f].in, frames[f].len);
        if (f % 2) buf_append(&all, "\r\n", 2);
    }
    buf_append(&all, "*2\r\n$3\r\nGET\r\n$1", 15); /* and a partial one */
    struct buf whole, bytewise;
    buf_init(&whole);
    buf_init(&bytewise);
    run_whole(all.data, all.len, &whole);
    run_bytewise(all.data, all.len, &bytewise);
    expect_same_log(&whole, &bytewise, "one byte at a time");
    /* The whole-buffer log lists the table's frames with arguments and 15 bytes left over. */
    struct buf want;
    buf_init(&want);
    for (size_t f = 0; f < NFRAMES; f++) {
        if (!frames[f].nargs) continue;
        buf_printf(&want, "frame %zu:", frames[f].nargs);
        for (size_t i = 0; i < frames[f].nargs; i++) {
            buf_printf(&want, " %zu:", frames[f].args[i].len);
            buf_append(&want, frames[f].args[i].p, frames[f].args[i].len);
        }
        buf_append(&want, "\n", 1);
    }
    buf_append_str(&want, "wait 15\n");
    expect_same_log(&want, &whole, "expected");
    buf_clear(&want);
    buf_clear(&whole);
    buf_clear(&bytewise);
    buf_clear(&all);
}

TEST(header_scan_resumes)
{
    /* A header line arriving one byte at a time is searched for "\r\n" only past what was seen. */
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    const uint8_t *d = (const uint8_t *) "*12\r\n";
    size_t used = 0;
    for (size_t k = 1; k < 5; k++)
        ASSERT_EQ(resp_parser_next(&p, d, k, &used), 0);
    ASSERT_EQ(resp_parser_next(&p, d, 5, &used), 0); /* header done, args still to come */
    ASSERT_EQ(p.nargs, 12);
    resp_parser_clear(&p);
}

/* ---- bad lengths ---- */

TEST(bad_array_lengths)
{
    EXPECT_ERR("*-5\r\n", -EBADMSG, invalid_mbulk);
    EXPECT_ERR("*-2\r\n", -EBADMSG, invalid_mbulk);
    EXPECT_ERR("*abc\r\n", -EBADMSG, invalid_mbulk);
    EXPECT_ERR("*1a\r\n", -EBADMSG, invalid_mbulk);
    EXPECT_ERR("*+1\r\n", -EBADMSG, invalid_mbulk);
    EXPECT_ERR("* 1\r\n", -EBADMSG, invalid_mbulk);
    EXPECT_ERR("*\r\n", -EBADMSG, invalid_mbulk);
    EXPECT_ERR("*-\r\n", -EBADMSG, invalid_mbulk);
    EXPECT_ERR("*1\r\r\n", -EBADMSG, invalid_mbulk); /* CR not followed by LF */
    EXPECT_ERR("*1\rx", -EBADMSG, invalid_mbulk);
    EXPECT_ERR("*1048577\r\n", -EBADMSG, invalid_mbulk); /* RESP_MAX_ARGS + 1 */
    EXPECT_ERR("*99999999999999999\r\n", -EBADMSG, invalid_mbulk);
    EXPECT_ERR("*9999999999999999999\r\n", -EBADMSG, invalid_mbulk); /* 19 digits */
    EXPECT_ERR("*99999999999999999999999999999999\r\n", -EBADMSG, invalid_mbulk);
}

TEST(bad_bulk_lengths)
{
    EXPECT_ERR("*1\r\n$-1\r\n", -EBADMSG, invalid_bulk); /* a null bulk is not a request arg */
    EXPECT_ERR("*2\r\n$1\r\na\r\n$-1\r\n", -EBADMSG, invalid_bulk);
    EXPECT_ERR("*1\r\n$-5\r\n", -EBADMSG, invalid_bulk);
    EXPECT_ERR("*1\r\n$abc\r\n", -EBADMSG, invalid_bulk);
    EXPECT_ERR("*1\r\n$\r\n", -EBADMSG, invalid_bulk);
    EXPECT_ERR("*1\r\n$3x\r\n", -EBADMSG, invalid_bulk);
    EXPECT_ERR("*1\r\n$3\rabc", -EBADMSG, invalid_bulk);
    EXPECT_ERR("*1\r\n$67108865\r\n", -EBADMSG, invalid_bulk); /* RESP_MAX_BULK_BYTES + 1 */
    EXPECT_ERR("*1\r\n$999999999999999999\r\n", -EBADMSG, invalid_bulk);
    EXPECT_ERR("*1\r\n$9999999999999999999\r\n", -EBADMSG, invalid_bulk);
}

TEST(bulk_length_mismatch)
{
    EXPECT_ERR("*1\r\n$3\r\nabcd\r\n", -EBADMSG, bad_crlf); /* longer than announced */
    EXPECT_ERR("*1\r\n$3\r\nab\r\n\r\n", -EBADMSG, bad_crlf);
    EXPECT_ERR("*1\r\n$3\r\nabc\n\r", -EBADMSG, bad_crlf);
    EXPECT_ERR("*1\r\n$3\r\nabc\rx", -EBADMSG, bad_crlf);
    EXPECT_ERR("*1\r\n$0\r\nxx", -EBADMSG, bad_crlf);
    EXPECT_ERR("*2\r\n$1\r\na\r\n$1\r\nbc\r\n", -EBADMSG, bad_crlf);
    /* Shorter than announced: indistinguishable from "more to come". */
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    size_t used = 0;
    ASSERT_EQ(resp_parser_next(&p, LIT("*1\r\n$5\r\nab\r\n"), &used), 0);
    ASSERT_EQ(resp_parser_next(&p, LIT("*1\r\n$5\r\nab\r\nxyz"), &used), -EBADMSG);
    ASSERT_STR_EQ(p.errstr, bad_crlf);
    resp_parser_clear(&p);
}

static void long_header_at(int at, const char *prefix, size_t header_bytes, int want_rc,
                           const char *msg)
{
    /* prefix, then a header line of header_bytes bytes ("*" or "$" followed by '1's), no CRLF. */
    size_t pl = strlen(prefix), n = pl + header_bytes;
    uint8_t *in = malloc(n);
    ASSERT(in != NULL);
    memcpy(in, prefix, pl);
    memset(in + pl + 1, '1', header_bytes - 1);
    in[pl] = pl ? '$' : '*';
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    size_t used = 0;
    int rc = resp_parser_next(&p, in, n, &used);
    if (rc != want_rc || (msg && strcmp(p.errstr, msg) != 0)) {
        fprintf(stderr, "%s:%d: %zu-byte header: expected rc %d \"%s\", got %d \"%s\"\n", __FILE__,
                at, header_bytes, want_rc, msg ? msg : "", rc, p.errstr);
        abort();
    }
    if (rc < 0) ASSERT_EQ(resp_parser_next(&p, in, n, &used), rc); /* sticky */
    resp_parser_clear(&p);
    free(in);
}

TEST(header_line_too_long)
{
    static const char mbulk[] = "Protocol error: too big mbulk count string";
    static const char bulk[] = "Protocol error: too big bulk count string";
    long_header_at(__LINE__, "", RESP_MAX_LINE_BYTES - 1, 0, NULL); /* may still end */
    long_header_at(__LINE__, "", RESP_MAX_LINE_BYTES, -E2BIG, mbulk);
    long_header_at(__LINE__, "", RESP_MAX_LINE_BYTES + 100, -E2BIG, mbulk);
    long_header_at(__LINE__, "*1\r\n", RESP_MAX_LINE_BYTES - 1, 0, NULL);
    long_header_at(__LINE__, "*1\r\n", RESP_MAX_LINE_BYTES, -E2BIG, bulk);
    long_header_at(__LINE__, "*2\r\n$1\r\na\r\n", RESP_MAX_LINE_BYTES * 2, -E2BIG, bulk);
}

TEST(header_line_too_long_arriving_slowly)
{
    /* The same line fed in 1000-byte steps: the limit is found as soon as it is crossed. */
    size_t n = RESP_MAX_LINE_BYTES + 5000;
    uint8_t *in = malloc(n);
    ASSERT(in != NULL);
    in[0] = '*';
    memset(in + 1, '7', n - 1);
    struct resp_parser p;
    memset(&p, 0, sizeof(p));
    resp_parser_init(&p);
    size_t used = 0, k;
    int rc = 0;
    for (k = 1000; k <= n && rc == 0; k += 1000)
        rc = resp_parser_next(&p, in, k, &used);
    ASSERT_EQ(rc, -E2BIG);
    ASSERT_EQ(k - 1000, 66000); /* the first step with at least 65536 bytes */
    ASSERT_STR_EQ(p.errstr, "Protocol error: too big mbulk count string");
    resp_parser_clear(&p);
    free(in);
}

/* ---- nested garbage ---- */

TEST(nested_arrays_refused)
{
    EXPECT_ERR("*1\r\n*1\r\n$1\r\na\r\n", -EBADMSG, "Protocol error: expected '$', got '*'");
    EXPECT_ERR("*2\r\n$1\r\na\r\n*0\r\n", -EBADMSG, "Protocol error: expected '$', got '*'");
}

TEST(other_types_inside_an_array_refused)
{
    EXPECT_ERR("*1\r\n+OK\r\n", -EBADMSG, "Protocol error: expected '$', got '+'");
    EXPECT_ERR("*1\r\n:1\r\n", -EBADMSG, "Protocol error: expected '$', got ':'");
    EXPECT_ERR("*1\r\n-ERR x\r\n", -EBADMSG, "Protocol error: expected '$', got '-'");
    EXPECT_ERR("*1\r\nPING\r\n", -EBADMSG, "Protocol error: expected '$', got 'P'");
    EXPECT_ERR("*1\r\n\r\n$1\r\na\r\n", -EBADMSG, "Protocol error: expected '$', got '?'");
    EXPECT_ERR("*1\r\n\0", -EBADMSG, "Protocol error: expected '$', got '?'");
    EXPECT_ERR("*1\r\n\xff", -EBADMSG, "Protocol error: expected '$', got '?'");
}

TEST(frame_not_starting_with_star_refused)
{
    /* Inline commands belong to the line protocol; the caller dispatches on the first byte. */
    EXPECT_ERR("PING\r\n", -EBADMSG, "Protocol error: expected '*'");
    EXPECT_ERR("$4\r\nPING\r\n", -EBADMSG, "Protocol error: expected '*'");
    EXPECT_ERR(" *1\r\n", -EBADMSG, "Protocol error: expected '*'");
}

TEST(error_after_good_frames_is_sticky)
{
    const char in[] = "*1\r\n$4\r\nPING\r\n*1\r\n:5\r\n*1\r\n$4\r\nPING\r\n";
    struct buf log;
    buf_init(&log);
    run_whole((const uint8_t *) in, sizeof(in) - 1, &log);
    struct buf want;
    buf_init(&want);
    buf_printf(&want, "frame 1: 4:PING\nerr %d Protocol error: expected '$', got ':' 22\n",
               -EBADMSG);
    ASSERT_SLICE_EQ(log.data, log.len, (const char *) want.data);
    buf_clear(&want);
    buf_clear(&log);
}

static uint32_t xorshift32(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

/* Fills b with up to max bytes of protocol-flavoured noise or mutated valid frames. */
static size_t random_input(uint32_t *s, uint8_t *b, size_t max, bool *valid)
{
    static const char *const tokens[] = { "*",       "$",
                                          "\r\n",    "\r",
                                          "\n",      "0",
                                          "1",       "2",
                                          "3",       "9",
                                          "-",       "-1",
                                          "a",       "+OK",
                                          ":",       "\0",
                                          "\xff",    "*1\r\n",
                                          "*2\r\n",  "$0\r\n",
                                          "$1\r\n",  "$3\r\n",
                                          "abc",     "*0\r\n",
                                          "*-1\r\n", "99999999999999999999" };
    static const size_t ntokens = sizeof(tokens) / sizeof(tokens[0]);
    size_t n = 0;
    *valid = false;
    uint32_t mode = xorshift32(s) % 4;
    if (mode == 0) { /* token soup, usually starting like a request */
        size_t want = xorshift32(s) % max;
        if (want && xorshift32(s) % 8) b[n++] = '*';
        while (n < want) {
            uint32_t t = xorshift32(s) % (ntokens + 1);
            const char *tok = t < ntokens ? tokens[t] : NULL;
            size_t tl = tok ? (tok[0] ? strlen(tok) : 1) : 1;
            if (n + tl > want) break;
            if (tok)
                memcpy(b + n, tok, tl);
            else
                b[n] = (uint8_t) xorshift32(s);
            n += tl;
        }
        return n;
    }
    /* One to three well-formed frames with random binary arguments. */
    struct buf f;
    buf_init(&f);
    int nframes = 1 + (int) (xorshift32(s) % 3);
    for (int i = 0; i < nframes; i++) {
        if (xorshift32(s) % 5 == 0) buf_append(&f, "\r\n", 2);
        size_t argc = xorshift32(s) % 5;
        resp_add_array_len(&f, argc);
        for (size_t a = 0; a < argc; a++) {
            uint8_t arg[8];
            size_t al = xorshift32(s) % sizeof(arg);
            for (size_t j = 0; j < al; j++)
                arg[j] = (uint8_t) "ab\r\n\0*$1"[xorshift32(s) % 8];
            resp_add_bulk(&f, arg, al);
        }
    }
    size_t full = f.len;
    n = full < max ? full : max;
    memcpy(b, f.data, n);
    buf_clear(&f);
    if (mode == 1) { /* mutate one to three bytes */
        int muts = 1 + (int) (xorshift32(s) % 3);
        for (int m = 0; m < muts && n; m++)
            b[xorshift32(s) % n] = (uint8_t) "*$\r\n-0159a\0+:"[xorshift32(s) % 13];
    } else if (mode == 2 && n) { /* truncate */
        n = xorshift32(s) % n;
    } else {
        *valid = n == full;
    }
    return n;
}

TEST(fuzz_never_crashes_and_splits_agree)
{
    /* Fixed seed: the same 100,000 inputs every run. Whole-buffer, byte-at-a-time and a random
     * two-way split must produce the same frames and the same final state; run_chunks checks
     * consumed and argument bounds on every frame. */
    uint32_t seed = 0x2545F491u;
    uint8_t in[96];
    struct buf whole, other;
    buf_init(&whole);
    buf_init(&other);
    for (int iter = 0; iter < 100000; iter++) {
        bool valid;
        size_t n = random_input(&seed, in, sizeof(in), &valid);
        /* An exactly-sized heap copy so that ASan catches a read past the end. */
        uint8_t *copy = malloc(n ? n : 1);
        ASSERT(copy != NULL);
        memcpy(copy, in, n);
        run_whole(copy, n, &whole);
        if (valid) {
            /* Complete well-formed input parses to its frames with nothing left over. */
            ASSERT(whole.len >= 7 && !memcmp(whole.data + whole.len - 7, "wait 0\n", 7));
        }
        run_bytewise(copy, n, &other);
        expect_same_log(&whole, &other, "byte at a time");
        size_t cuts[2] = { n ? xorshift32(&seed) % n : 0, n };
        run_chunks(copy, n, cuts, 2, &other);
        expect_same_log(&whole, &other, "two chunks");
        free(copy);
    }
    buf_clear(&whole);
    buf_clear(&other);
}

/* ---- reply encoders ---- */

TEST(encode_simple)
{
    struct buf b;
    buf_init(&b);
    resp_add_simple(&b, "OK");
    ASSERT_SLICE_EQ(b.data, b.len, "+OK\r\n");
    buf_reset(&b);
    resp_add_simple(&b, "");
    ASSERT_SLICE_EQ(b.data, b.len, "+\r\n");
    buf_reset(&b);
    resp_add_simple(&b, "PONG");
    resp_add_simple(&b, "QUEUED");
    ASSERT_SLICE_EQ(b.data, b.len, "+PONG\r\n+QUEUED\r\n");
    buf_clear(&b);
}

TEST(encode_error)
{
    struct buf b;
    buf_init(&b);
    resp_add_error(&b, "ERR unknown command", 19);
    ASSERT_SLICE_EQ(b.data, b.len, "-ERR unknown command\r\n");
    buf_reset(&b);
    resp_add_error(&b, "ERR a\r\nb\nc\rd\r", 13); /* every CR and LF becomes a space */
    ASSERT_SLICE_EQ(b.data, b.len, "-ERR a  b c d \r\n");
    buf_reset(&b);
    resp_add_error(&b, "ERR x\0y", 7); /* length-delimited */
    ASSERT_EQ(b.len, 10);
    ASSERT_MEM_EQ(b.data, "-ERR x\0y\r\n", 10);
    buf_reset(&b);
    resp_add_simple(&b, "OK"); /* only the message itself is rewritten */
    resp_add_error(&b, "\n", 1);
    ASSERT_SLICE_EQ(b.data, b.len, "+OK\r\n- \r\n");
    buf_reset(&b);
    resp_add_error(&b, "", 0);
    ASSERT_SLICE_EQ(b.data, b.len, "-\r\n");
    buf_clear(&b);
}

TEST(encode_int)
{
    struct buf b;
    buf_init(&b);
    resp_add_int(&b, 0);
    resp_add_int(&b, 1);
    resp_add_int(&b, -1);
    resp_add_int(&b, 1000);
    ASSERT_SLICE_EQ(b.data, b.len, ":0\r\n:1\r\n:-1\r\n:1000\r\n");
    buf_reset(&b);
    resp_add_int(&b, INT64_MAX);
    ASSERT_SLICE_EQ(b.data, b.len, ":9223372036854775807\r\n");
    buf_reset(&b);
    resp_add_int(&b, INT64_MIN);
    ASSERT_SLICE_EQ(b.data, b.len, ":-9223372036854775808\r\n");
    buf_reset(&b);
    resp_add_int(&b, INT64_MIN + 1);
    ASSERT_SLICE_EQ(b.data, b.len, ":-9223372036854775807\r\n");
    buf_clear(&b);
}

TEST(encode_bulk)
{
    struct buf b;
    buf_init(&b);
    resp_add_bulk(&b, "hello", 5);
    ASSERT_SLICE_EQ(b.data, b.len, "$5\r\nhello\r\n");
    buf_reset(&b);
    resp_add_bulk(&b, "", 0);
    ASSERT_SLICE_EQ(b.data, b.len, "$0\r\n\r\n");
    buf_reset(&b);
    resp_add_bulk(&b, "a\r\n\0b", 5); /* binary-safe, CR/LF kept */
    ASSERT_EQ(b.len, 11);
    ASSERT_MEM_EQ(b.data, "$5\r\na\r\n\0b\r\n", 11);
    buf_reset(&b);
    resp_add_bulk_str(&b, "value");
    resp_add_bulk_str(&b, "");
    ASSERT_SLICE_EQ(b.data, b.len, "$5\r\nvalue\r\n$0\r\n\r\n");
    buf_reset(&b);
    char big[1000];
    memset(big, 'x', sizeof(big));
    resp_add_bulk(&b, big, sizeof(big));
    ASSERT_EQ(b.len, 1 + 4 + 2 + 1000 + 2);
    ASSERT_MEM_EQ(b.data, "$1000\r\nxxx", 10);
    ASSERT_MEM_EQ(b.data + b.len - 3, "x\r\n", 3);
    buf_clear(&b);
}

TEST(encode_null_and_arrays)
{
    struct buf b;
    buf_init(&b);
    resp_add_null(&b);
    ASSERT_SLICE_EQ(b.data, b.len, "$-1\r\n");
    buf_reset(&b);
    resp_add_null_array(&b);
    ASSERT_SLICE_EQ(b.data, b.len, "*-1\r\n");
    buf_reset(&b);
    resp_add_array_len(&b, 0);
    ASSERT_SLICE_EQ(b.data, b.len, "*0\r\n");
    buf_reset(&b);
    resp_add_array_len(&b, 3);
    resp_add_bulk_str(&b, "a");
    resp_add_null(&b);
    resp_add_int(&b, 7);
    ASSERT_SLICE_EQ(b.data, b.len, "*3\r\n$1\r\na\r\n$-1\r\n:7\r\n");
    buf_reset(&b);
    resp_add_array_len(&b, 1048576);
    ASSERT_SLICE_EQ(b.data, b.len, "*1048576\r\n");
    buf_clear(&b);
}

TEST_LIST{
    TEST_ENTRY(whole_ping),
    TEST_ENTRY(whole_multi_arg),
    TEST_ENTRY(whole_binary_safe),
    TEST_ENTRY(whole_empty_bulk),
    TEST_ENTRY(empty_arrays_give_argc_0),
    TEST_ENTRY(blank_lines_before_a_frame),
    TEST_ENTRY(back_to_back_frames_in_one_buffer),
    TEST_ENTRY(table_frames_parse_whole),
    TEST_ENTRY(many_args_grow_the_table),
    TEST_ENTRY(announced_count_does_not_preallocate),
    TEST_ENTRY(encoded_request_round_trips),
    TEST_ENTRY(split_every_prefix_same_start),
    TEST_ENTRY(split_at_every_byte_two_calls),
    TEST_ENTRY(split_at_every_pair_of_points),
    TEST_ENTRY(one_byte_at_a_time_all_frames),
    TEST_ENTRY(header_scan_resumes),
    TEST_ENTRY(bad_array_lengths),
    TEST_ENTRY(bad_bulk_lengths),
    TEST_ENTRY(bulk_length_mismatch),
    TEST_ENTRY(header_line_too_long),
    TEST_ENTRY(header_line_too_long_arriving_slowly),
    TEST_ENTRY(nested_arrays_refused),
    TEST_ENTRY(other_types_inside_an_array_refused),
    TEST_ENTRY(frame_not_starting_with_star_refused),
    TEST_ENTRY(error_after_good_frames_is_sticky),
    TEST_ENTRY(fuzz_never_crashes_and_splits_agree),
    TEST_ENTRY(encode_simple),
    TEST_ENTRY(encode_error),
    TEST_ENTRY(encode_int),
    TEST_ENTRY(encode_bulk),
    TEST_ENTRY(encode_null_and_arrays),
};

TEST_MAIN()
