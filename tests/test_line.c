/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for line: framing (protocol.md §1) including adversarial splits and the 1 MiB limit,
 * and the grammar (§2, §3): every table row, every parser error string, every conformance example.
 * The two INC/DEC errors about stored values ("Value for key ... is not a valid number",
 * "increment or decrement would overflow") come from the command handlers, not the parser.
 */
#include "arborkv/line.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arborkv/buf.h"
#include "harness.h"

/* ---- helpers ---- */

static void dump_argv(const struct line_cmd *c)
{
    for (size_t i = 0; i < c->argc; i++)
        fprintf(stderr, "  argv[%zu] = \"%.*s\"\n", i, (int) c->argv[i].len,
                (const char *) c->argv[i].p);
}

/* Parses line and checks the canonical argv against the NULL-terminated want list. */
static void expect_argv_at(int at, const uint8_t *line, size_t len, const char *const *want)
{
    struct line_cmd c;
    line_cmd_init(&c);
    int rc = line_parse(&c, line, len);
    if (rc != 0) {
        fprintf(stderr, "%s:%d: \"%.*s\": expected argv, got rc %d, error \"%.*s\"\n", __FILE__, at,
                (int) len, (const char *) line, rc, (int) c.err.len, (const char *) c.err.data);
        abort();
    }
    size_t n = 0;
    while (want[n])
        n++;
    bool same = c.argc == n;
    for (size_t i = 0; same && i < n; i++)
        same = c.argv[i].len == strlen(want[i]) && memcmp(c.argv[i].p, want[i], c.argv[i].len) == 0;
    if (!same) {
        fprintf(stderr, "%s:%d: \"%.*s\": argv mismatch, got %zu entries:\n", __FILE__, at,
                (int) len, (const char *) line, c.argc);
        dump_argv(&c);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "  want[%zu] = \"%s\"\n", i, want[i]);
        abort();
    }
    line_cmd_clear(&c);
}

/* Parses line and checks that it fails with exactly msg (the text after "ERROR "). */
static void expect_err_at(int at, const uint8_t *line, size_t len, const char *msg)
{
    struct line_cmd c;
    line_cmd_init(&c);
    int rc = line_parse(&c, line, len);
    if (rc != -EBADMSG || c.argc != 0 || c.err.len != strlen(msg) ||
        memcmp(c.err.data, msg, c.err.len) != 0) {
        fprintf(stderr, "%s:%d: \"%.*s\": expected error \"%s\", got rc %d, error \"%.*s\"\n",
                __FILE__, at, (int) len, (const char *) line, msg, rc, (int) c.err.len,
                c.err.data ? (const char *) c.err.data : "");
        dump_argv(&c);
        abort();
    }
    line_cmd_clear(&c);
}

/* Both take string literals (sizeof keeps embedded NULs). */
#define EXPECT_ARGV(line, ...)                                           \
    expect_argv_at(__LINE__, (const uint8_t *) (line), sizeof(line) - 1, \
                   (const char *const[]){ __VA_ARGS__, NULL })
#define EXPECT_ERR(line, msg) \
    expect_err_at(__LINE__, (const uint8_t *) (line), sizeof(line) - 1, (msg))

/* A connection's input side: bytes arrive in chunks; complete lines are collected in order. */
struct feed {
    struct line_parser p;
    struct buf in;    /* unconsumed input */
    struct buf lines; /* every line returned so far, each followed by '|' */
    size_t nlines;    /* lines returned */
    int last_rc;      /* last line_next result */
};

static void feed_init(struct feed *f)
{
    line_parser_init(&f->p);
    buf_init(&f->in);
    buf_init(&f->lines);
    f->nlines = 0;
    f->last_rc = 0;
}

static void feed_clear(struct feed *f)
{
    buf_clear(&f->in);
    buf_clear(&f->lines);
}

/* Appends n bytes and pulls every complete line, as conn.c does after each read. */
static void feed_bytes(struct feed *f, const void *p, size_t n, bool eof)
{
    buf_append(&f->in, p, n);
    for (;;) {
        const uint8_t *line = NULL;
        size_t line_len = 0, used = 0;
        f->last_rc = line_next(&f->p, f->in.data, f->in.len, eof, &line, &line_len, &used);
        if (f->last_rc != 1) break;
        ASSERT(used > 0 && used <= f->in.len);
        ASSERT(line == f->in.data);
        ASSERT(line_len <= used);
        buf_append(&f->lines, line, line_len);
        buf_append(&f->lines, "|", 1);
        f->nlines++;
        buf_consume(&f->in, used);
    }
}

/* ---- framing (protocol.md §1) ---- */

TEST(frame_lf)
{
    struct line_parser p;
    line_parser_init(&p);
    const uint8_t *line;
    size_t len, used;
    ASSERT_EQ(line_next(&p, (const uint8_t *) "GET k\nrest", 10, false, &line, &len, &used), 1);
    ASSERT_SLICE_EQ(line, len, "GET k");
    ASSERT_EQ(used, 6);
    ASSERT_EQ(p.scanned, 0);
}

TEST(frame_crlf_drops_cr)
{
    struct line_parser p;
    line_parser_init(&p);
    const uint8_t *line;
    size_t len, used;
    ASSERT_EQ(line_next(&p, (const uint8_t *) "GET k\r\n", 7, false, &line, &len, &used), 1);
    ASSERT_SLICE_EQ(line, len, "GET k");
    ASSERT_EQ(used, 7);
}

TEST(frame_only_one_cr_dropped)
{
    struct line_parser p;
    line_parser_init(&p);
    const uint8_t *line;
    size_t len, used;
    ASSERT_EQ(line_next(&p, (const uint8_t *) "GET k\r\r\n", 8, false, &line, &len, &used), 1);
    ASSERT_SLICE_EQ(line, len, "GET k\r");
    ASSERT_EQ(used, 8);
}

TEST(frame_bare_cr_in_middle_is_data)
{
    struct line_parser p;
    line_parser_init(&p);
    const uint8_t *line;
    size_t len, used;
    const char *in = "SET k a\rb\r\n";
    ASSERT_EQ(line_next(&p, (const uint8_t *) in, strlen(in), false, &line, &len, &used), 1);
    ASSERT_SLICE_EQ(line, len, "SET k a\rb");
    struct line_cmd c;
    line_cmd_init(&c);
    ASSERT_OK(line_parse(&c, line, len));
    ASSERT_EQ(c.argc, 3);
    ASSERT_SLICE_EQ(c.argv[2].p, c.argv[2].len, "a\rb");
    line_cmd_clear(&c);
}

TEST(frame_needs_more_and_remembers_scan)
{
    struct line_parser p;
    line_parser_init(&p);
    const uint8_t *line;
    size_t len, used;
    const uint8_t *in = (const uint8_t *) "GET key\n";
    for (size_t n = 0; n < 8; n++) {
        ASSERT_EQ(line_next(&p, in, n, false, &line, &len, &used), 0);
        ASSERT_EQ(p.scanned, n); /* each byte is looked at once */
    }
    ASSERT_EQ(line_next(&p, in, 8, false, &line, &len, &used), 1);
    ASSERT_SLICE_EQ(line, len, "GET key");
    ASSERT_EQ(p.scanned, 0);
}

TEST(frame_scanned_larger_than_data_rescans)
{
    struct line_parser p;
    line_parser_init(&p);
    p.scanned = 100; /* a caller bug: data shrank without a consumed line */
    const uint8_t *line;
    size_t len, used;
    ASSERT_EQ(line_next(&p, (const uint8_t *) "a\n", 2, false, &line, &len, &used), 1);
    ASSERT_SLICE_EQ(line, len, "a");
}

TEST(frame_pipelined)
{
    struct feed f;
    feed_init(&f);
    feed_bytes(&f, "SET a 1\nGET a\r\nPING\n", 20, false);
    ASSERT_EQ(f.nlines, 3);
    ASSERT_SLICE_EQ(f.lines.data, f.lines.len, "SET a 1|GET a|PING|");
    ASSERT_EQ(f.in.len, 0);
    feed_clear(&f);
}

TEST(frame_empty_lines)
{
    struct feed f;
    feed_init(&f);
    feed_bytes(&f, "\n\r\n \t\n", 6, false);
    ASSERT_EQ(f.nlines, 3);
    ASSERT_SLICE_EQ(f.lines.data, f.lines.len, "|| \t|");
    feed_clear(&f);
    EXPECT_ERR("", "Empty command");
    EXPECT_ERR("\r", "Empty command");
    EXPECT_ERR(" \t\r\v\f ", "Empty command");
}

TEST(frame_eof_trailing_line)
{
    struct feed f;
    feed_init(&f);
    feed_bytes(&f, "GET a\nGET b", 11, false);
    ASSERT_EQ(f.nlines, 1);
    ASSERT_EQ(f.last_rc, 0);
    feed_bytes(&f, "", 0, true);
    ASSERT_EQ(f.nlines, 2);
    ASSERT_SLICE_EQ(f.lines.data, f.lines.len, "GET a|GET b|");
    ASSERT_EQ(f.in.len, 0);
    ASSERT_EQ(f.last_rc, 0); /* nothing left: no empty extra line */
    feed_clear(&f);
}

TEST(frame_eof_nothing_pending)
{
    struct line_parser p;
    line_parser_init(&p);
    const uint8_t *line;
    size_t len, used;
    ASSERT_EQ(line_next(&p, (const uint8_t *) "", 0, true, &line, &len, &used), 0);
}

TEST(frame_eof_whitespace_is_a_line)
{
    /* Data after the last '\n' is one more request, even if parsing it says "Empty command". */
    struct feed f;
    feed_init(&f);
    feed_bytes(&f, "PING\n  ", 7, true);
    ASSERT_EQ(f.nlines, 2);
    ASSERT_SLICE_EQ(f.lines.data, f.lines.len, "PING|  |");
    feed_clear(&f);
}

TEST(frame_binary_bytes)
{
    struct feed f;
    feed_init(&f);
    feed_bytes(&f, "SET k a\0b\xff\n", 11, false);
    ASSERT_EQ(f.nlines, 1);
    ASSERT_MEM_EQ(f.lines.data, "SET k a\0b\xff|", 11);
    feed_clear(&f);
}

/* Input for the split tests: CRLF, LF, bare CR, an empty line, padding, and a line ended by EOF. */
static const char split_input[] = "SET k v w\r\nGET k\nPING  hi \r\n\r\nMGET a b\rc\n \t\nQUIT";
static const char split_lines[] = "SET k v w|GET k|PING  hi ||MGET a b\rc| \t|QUIT|";

TEST(frame_split_at_every_boundary)
{
    size_t n = sizeof(split_input) - 1;
    for (size_t k = 0; k <= n; k++) {
        struct feed f;
        feed_init(&f);
        feed_bytes(&f, split_input, k, false);
        feed_bytes(&f, split_input + k, n - k, true);
        ASSERT_EQ(f.nlines, 7);
        ASSERT_SLICE_EQ(f.lines.data, f.lines.len, split_lines);
        ASSERT_EQ(f.in.len, 0);
        feed_clear(&f);
    }
}

TEST(frame_split_at_every_pair_of_boundaries)
{
    size_t n = sizeof(split_input) - 1;
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j++) {
            struct feed f;
            feed_init(&f);
            feed_bytes(&f, split_input, i, false);
            feed_bytes(&f, split_input + i, j - i, false);
            feed_bytes(&f, split_input + j, n - j, true);
            ASSERT_SLICE_EQ(f.lines.data, f.lines.len, split_lines);
            feed_clear(&f);
        }
    }
}

TEST(frame_one_byte_at_a_time)
{
    size_t n = sizeof(split_input) - 1;
    struct feed f;
    feed_init(&f);
    for (size_t i = 0; i < n; i++)
        feed_bytes(&f, split_input + i, 1, false);
    ASSERT_EQ(f.nlines, 6); /* "QUIT" waits for EOF */
    ASSERT_SLICE_EQ(f.in.data, f.in.len, "QUIT");
    feed_bytes(&f, "", 0, true);
    ASSERT_SLICE_EQ(f.lines.data, f.lines.len, split_lines);
    feed_clear(&f);
}

/* Returns **new** buffer of n bytes: 'a' repeated, then the terminator tail; release with free().
 */
static uint8_t *long_line(size_t n, const char *tail)
{
    size_t t = strlen(tail);
    uint8_t *b = malloc(n);
    ASSERT(b != NULL && n >= t);
    memset(b, 'a', n - t);
    memcpy(b + n - t, tail, t);
    return b;
}

TEST(frame_exactly_max_with_lf_accepted)
{
    uint8_t *b = long_line(LINE_MAX_BYTES, "\n");
    struct line_parser p;
    line_parser_init(&p);
    const uint8_t *line;
    size_t len, used;
    ASSERT_EQ(line_next(&p, b, LINE_MAX_BYTES, false, &line, &len, &used), 1);
    ASSERT_EQ(len, LINE_MAX_BYTES - 1);
    ASSERT_EQ(used, LINE_MAX_BYTES);
    free(b);
}

TEST(frame_exactly_max_with_crlf_accepted)
{
    uint8_t *b = long_line(LINE_MAX_BYTES, "\r\n");
    struct line_parser p;
    line_parser_init(&p);
    const uint8_t *line;
    size_t len, used;
    ASSERT_EQ(line_next(&p, b, LINE_MAX_BYTES, false, &line, &len, &used), 1);
    ASSERT_EQ(len, LINE_MAX_BYTES - 2);
    ASSERT_EQ(used, LINE_MAX_BYTES);
    free(b);
}

TEST(frame_max_plus_one_with_lf_rejected)
{
    uint8_t *b = long_line(LINE_MAX_BYTES + 1, "\n");
    struct line_parser p;
    line_parser_init(&p);
    const uint8_t *line;
    size_t len, used;
    ASSERT_EQ(line_next(&p, b, LINE_MAX_BYTES + 1, false, &line, &len, &used), -E2BIG);
    ASSERT_EQ(line_next(&p, b, LINE_MAX_BYTES + 1, true, &line, &len, &used), -E2BIG);
    free(b);
}

TEST(frame_max_plus_one_with_crlf_rejected)
{
    uint8_t *b = long_line(LINE_MAX_BYTES + 1, "\r\n");
    struct line_parser p;
    line_parser_init(&p);
    const uint8_t *line;
    size_t len, used;
    ASSERT_EQ(line_next(&p, b, LINE_MAX_BYTES + 1, false, &line, &len, &used), -E2BIG);
    free(b);
}

TEST(frame_overlong_detected_without_newline)
{
    /* The server never buffers more than LINE_MAX_BYTES of one line: the first byte beyond it,
     * still without a '\n', is the error. Fed in 64 KiB reads to use the incremental scan. */
    uint8_t *b = long_line(LINE_MAX_BYTES + 1, "");
    struct feed f;
    feed_init(&f);
    size_t chunk = 64 * 1024;
    for (size_t off = 0; off < LINE_MAX_BYTES; off += chunk) {
        feed_bytes(&f, b + off, chunk, false);
        ASSERT_EQ(f.last_rc, 0);
        ASSERT_EQ(f.p.scanned, off + chunk);
    }
    ASSERT_EQ(f.in.len, LINE_MAX_BYTES);
    feed_bytes(&f, b + LINE_MAX_BYTES, 1, false);
    ASSERT_EQ(f.last_rc, -E2BIG);
    ASSERT_EQ(f.nlines, 0);
    feed_clear(&f);
    free(b);
}

TEST(frame_overlong_after_a_good_line)
{
    uint8_t *b = long_line(LINE_MAX_BYTES + 1, "");
    struct feed f;
    feed_init(&f);
    feed_bytes(&f, "PING\n", 5, false);
    feed_bytes(&f, b, LINE_MAX_BYTES + 1, false);
    ASSERT_EQ(f.nlines, 1);
    ASSERT_EQ(f.last_rc, -E2BIG);
    feed_clear(&f);
    free(b);
}

TEST(frame_eof_trailing_line_at_max)
{
    /* At EOF a line has no terminator; exactly LINE_MAX_BYTES bytes is still within the limit. */
    uint8_t *b = long_line(LINE_MAX_BYTES + 1, "");
    struct line_parser p;
    line_parser_init(&p);
    const uint8_t *line;
    size_t len, used;
    ASSERT_EQ(line_next(&p, b, LINE_MAX_BYTES, false, &line, &len, &used), 0);
    ASSERT_EQ(line_next(&p, b, LINE_MAX_BYTES, true, &line, &len, &used), 1);
    ASSERT_EQ(len, LINE_MAX_BYTES);
    ASSERT_EQ(used, LINE_MAX_BYTES);
    line_parser_init(&p);
    ASSERT_EQ(line_next(&p, b, LINE_MAX_BYTES + 1, true, &line, &len, &used), -E2BIG);
    free(b);
}

TEST(frame_long_line_fed_byte_by_byte_is_linear)
{
    /* 256 KiB one byte at a time: quadratic rescanning would take minutes, this takes ms. */
    size_t n = 256 * 1024;
    uint8_t *b = long_line(n, "\n");
    struct feed f;
    feed_init(&f);
    buf_reserve(&f.in, n);
    for (size_t i = 0; i < n; i++)
        feed_bytes(&f, b + i, 1, false);
    ASSERT_EQ(f.nlines, 1);
    ASSERT_EQ(f.lines.len, n); /* n - 1 bytes of line plus '|' */
    feed_clear(&f);
    free(b);
}

/* ---- §2 parsing ---- */

TEST(trim_and_empty)
{
    EXPECT_ERR("", "Empty command");
    EXPECT_ERR("   ", "Empty command");
    EXPECT_ERR("\t\v\f\r ", "Empty command");
    EXPECT_ARGV("  \t GET k \t\r\v\f", "GET", "k");
}

TEST(command_word_case_insensitive)
{
    EXPECT_ARGV("get k", "GET", "k");
    EXPECT_ARGV("gEt k", "GET", "k");
    EXPECT_ARGV("Set K V", "SET", "K", "V"); /* keys and values keep their case */
    EXPECT_ARGV("ping", "PING");
}

TEST(tab_in_command_word)
{
    EXPECT_ERR("GET\tk", "Invalid character: tab character not allowed in command");
    EXPECT_ERR("foo\tbar baz", "Invalid character: tab character not allowed in command");
    EXPECT_ERR("PING\thi", "Invalid character: tab character not allowed in command");
    EXPECT_ARGV("PING\t", "PING"); /* a trailing tab is trimmed before the word is taken */
}

TEST(requires_arguments_each_word)
{
    EXPECT_ERR("GET", "GET command requires arguments");
    EXPECT_ERR("SET", "SET command requires arguments");
    EXPECT_ERR("DEL", "DEL command requires arguments");
    EXPECT_ERR("DELETE", "DELETE command requires arguments");
    EXPECT_ERR("INC", "INC command requires arguments");
    EXPECT_ERR("DEC", "DEC command requires arguments");
    EXPECT_ERR("INCR", "INCR command requires arguments");
    EXPECT_ERR("DECR", "DECR command requires arguments");
    EXPECT_ERR("APPEND", "APPEND command requires arguments");
    EXPECT_ERR("PREPEND", "PREPEND command requires arguments");
    EXPECT_ERR("MGET", "MGET command requires arguments");
    EXPECT_ERR("MSET", "MSET command requires arguments");
    EXPECT_ERR("ECHO", "ECHO command requires arguments");
    EXPECT_ERR("EXISTS", "EXISTS command requires arguments");
    EXPECT_ERR("SYNC", "SYNC command requires arguments");
    EXPECT_ERR("REPLICATE", "REPLICATE command requires arguments");
}

TEST(requires_arguments_upper_cases_typed_word)
{
    EXPECT_ERR("get", "GET command requires arguments");
    EXPECT_ERR("delete", "DELETE command requires arguments");
    EXPECT_ERR("Del", "DEL command requires arguments");
    EXPECT_ERR("incr", "INCR command requires arguments");
    EXPECT_ERR("  set   ", "SET command requires arguments");
    EXPECT_ERR("echo \t", "ECHO command requires arguments");
}

TEST(unknown_command_as_typed)
{
    EXPECT_ERR("foo bar", "Unknown command: foo");
    EXPECT_ERR("FoO", "Unknown command: FoO");
    EXPECT_ERR("GETX k", "Unknown command: GETX");
    EXPECT_ERR("KEYS *", "Unknown command: KEYS");
    EXPECT_ERR("INCRBY k 1", "Unknown command: INCRBY"); /* canonical names are not line words */
    EXPECT_ERR("\xc3\xa9t\xc3\xa9", "Unknown command: \xc3\xa9t\xc3\xa9");
    EXPECT_ERR("a\vb c", "Unknown command: a\vb");
}

TEST(unknown_command_with_nul_byte_is_binary_safe)
{
    struct line_cmd c;
    line_cmd_init(&c);
    ASSERT_EQ(line_parse(&c, (const uint8_t *) "G\0T k", 5), -EBADMSG);
    ASSERT_EQ(c.err.len, strlen("Unknown command: ") + 3);
    ASSERT_MEM_EQ(c.err.data, "Unknown command: G\0T", c.err.len);
    line_cmd_clear(&c);
}

TEST(rest_is_verbatim_after_first_space)
{
    EXPECT_ARGV("ECHO   a  b", "ECHO", "  a  b");
    EXPECT_ARGV("SET k  v", "SET", "k", " v");
}

/* ---- §3 rows ---- */

TEST(get_row)
{
    EXPECT_ARGV("GET k", "GET", "k");
    EXPECT_ARGV("GET user:1/\xc3\xa9", "GET", "user:1/\xc3\xa9");
    EXPECT_ARGV("GET a\rb", "GET", "a\rb");
    EXPECT_ARGV("GET *", "GET", "*");
}

TEST(get_errors)
{
    EXPECT_ERR("GET  k", "GET command accepts only one argument");
    EXPECT_ERR("GET a b", "GET command accepts only one argument");
    EXPECT_ERR("get a b c", "GET command accepts only one argument");
    EXPECT_ERR("GET k\tx", "Invalid character: tab character not allowed in key");
    EXPECT_ERR("GET \tk", "Invalid character: tab character not allowed in key");
    EXPECT_ERR("GET a\tb c", "GET command accepts only one argument"); /* shape first */
}

TEST(get_binary_key)
{
    struct line_cmd c;
    line_cmd_init(&c);
    ASSERT_OK(line_parse(&c, (const uint8_t *) "GET a\0b", 7));
    ASSERT_EQ(c.argc, 2);
    ASSERT_EQ(c.argv[1].len, 3);
    ASSERT_MEM_EQ(c.argv[1].p, "a\0b", 3);
    line_cmd_clear(&c);
}

TEST(set_row)
{
    EXPECT_ARGV("SET k v", "SET", "k", "v");
    EXPECT_ARGV("SET k v w", "SET", "k", "v w");
    EXPECT_ARGV("SET k  v", "SET", "k", " v");
    EXPECT_ARGV("SET key a\tb", "SET", "key", "a\tb");
    EXPECT_ARGV("SET k v \t w", "SET", "k", "v \t w");
    EXPECT_ARGV("SET k v   ", "SET", "k", "v"); /* trailing whitespace trimmed with the line */
    EXPECT_ARGV("SET e \"\"", "SET", "e", "\"\"");
}

TEST(set_errors)
{
    EXPECT_ERR("SET k", "SET command requires a key and value");
    EXPECT_ERR("SET k   ", "SET command requires a key and value");
    EXPECT_ERR("SET  v", "SET command key cannot be empty");
    EXPECT_ERR("SET   v w", "SET command key cannot be empty");
    EXPECT_ERR("SET k\tx v", "Invalid character: tab character not allowed in key");
    EXPECT_ERR("SET k\tx", "SET command requires a key and value"); /* shape first */
}

TEST(del_row)
{
    EXPECT_ARGV("DEL k", "DEL", "k");
    EXPECT_ARGV("DELETE k", "DEL", "k");
    EXPECT_ARGV("delete k", "DEL", "k");
}

TEST(del_errors)
{
    EXPECT_ERR("DEL a b", "DELETE command accepts only one argument");
    EXPECT_ERR("DELETE a b", "DELETE command accepts only one argument");
    EXPECT_ERR("DEL  k", "DELETE command accepts only one argument");
    EXPECT_ERR("DEL k\tx", "Invalid character: tab character not allowed in key");
    EXPECT_ERR("DELETE k\tx", "Invalid character: tab character not allowed in key");
}

TEST(inc_dec_row)
{
    EXPECT_ARGV("INC n", "INCRBY", "n", "1");
    EXPECT_ARGV("INC n 5", "INCRBY", "n", "5");
    EXPECT_ARGV("INC n -5", "INCRBY", "n", "-5");
    EXPECT_ARGV("INC n +5", "INCRBY", "n", "+5");
    EXPECT_ARGV("INC n 007", "INCRBY", "n", "007");
    EXPECT_ARGV("DEC n", "DECRBY", "n", "1");
    EXPECT_ARGV("DEC n 3", "DECRBY", "n", "3");
    EXPECT_ARGV("INC  n \t 5", "INCRBY", "n", "5");
    EXPECT_ARGV("INC n\t5", "INCRBY", "n", "5");
    EXPECT_ARGV("INC 5 6", "INCRBY", "5", "6");
    /* Not a signed 64-bit integer, so it is a key. */
    EXPECT_ARGV("INC 99999999999999999999", "INCRBY", "99999999999999999999", "1");
    EXPECT_ARGV("INC -", "INCRBY", "-", "1");
}

TEST(incr_decr_aliases)
{
    EXPECT_ARGV("INCR n", "INCRBY", "n", "1");
    EXPECT_ARGV("incr n 2", "INCRBY", "n", "2");
    EXPECT_ARGV("DECR n", "DECRBY", "n", "1");
    EXPECT_ARGV("Decr n 2", "DECRBY", "n", "2");
}

TEST(inc_extra_tokens_ignored)
{
    EXPECT_ARGV("INC n 5 junk more", "INCRBY", "n", "5");
    EXPECT_ARGV("DEC n 5 x", "DECRBY", "n", "5");
}

TEST(inc_amount_limits)
{
    EXPECT_ARGV("INC n 9223372036854775807", "INCRBY", "n", "9223372036854775807");
    EXPECT_ARGV("INC n -9223372036854775808", "INCRBY", "n", "-9223372036854775808");
    EXPECT_ERR("INC n 9223372036854775808", "INC command amount must be a valid number");
    EXPECT_ERR("INC n -9223372036854775809", "INC command amount must be a valid number");
    EXPECT_ERR("INC n 99999999999999999999", "INC command amount must be a valid number");
}

TEST(inc_requires_a_key)
{
    EXPECT_ERR("INC 5", "INC command requires a key");
    EXPECT_ERR("INC -5", "INC command requires a key");
    EXPECT_ERR("INC +5", "INC command requires a key");
    EXPECT_ERR("DEC 5", "DEC command requires a key");
    EXPECT_ERR("INCR 5", "INC command requires a key");
    EXPECT_ERR("DECR 0", "DEC command requires a key");
}

TEST(inc_amount_must_be_valid_number)
{
    EXPECT_ERR("INC n x", "INC command amount must be a valid number");
    EXPECT_ERR("INC n 5x", "INC command amount must be a valid number");
    EXPECT_ERR("INC n 1.5", "INC command amount must be a valid number");
    EXPECT_ERR("INC n +", "INC command amount must be a valid number");
    EXPECT_ERR("INC n -", "INC command amount must be a valid number");
    EXPECT_ERR("INC n --1", "INC command amount must be a valid number");
    EXPECT_ERR("INC n 0x10", "INC command amount must be a valid number");
    EXPECT_ERR("INC n 1\v2", "INC command amount must be a valid number"); /* \v is data */
    EXPECT_ERR("DEC n x", "DEC command amount must be a valid number");
    EXPECT_ERR("INCR n x", "INC command amount must be a valid number");
    EXPECT_ERR("DECR n x", "DEC command amount must be a valid number");
}

TEST(append_prepend_row)
{
    EXPECT_ARGV("APPEND n x", "APPEND", "n", "x");
    EXPECT_ARGV("APPEND k a b\tc", "APPEND", "k", "a b\tc");
    EXPECT_ARGV("PREPEND k Hello ", "PREPEND", "k", "Hello");
    EXPECT_ARGV("prepend k  x", "PREPEND", "k", " x");
}

TEST(append_prepend_errors)
{
    EXPECT_ERR("APPEND k", "APPEND command requires a key and value");
    EXPECT_ERR("APPEND  v", "APPEND command key cannot be empty");
    EXPECT_ERR("APPEND k\tx v", "Invalid character: tab character not allowed in key");
    EXPECT_ERR("PREPEND k", "PREPEND command requires a key and value");
    EXPECT_ERR("PREPEND  v", "PREPEND command key cannot be empty");
    EXPECT_ERR("PREPEND k\tx v", "Invalid character: tab character not allowed in key");
}

TEST(mget_row)
{
    EXPECT_ARGV("MGET n zz", "MGET", "n", "zz");
    EXPECT_ARGV("MGET y z", "MGET", "y", "z");
    EXPECT_ARGV("MGET a", "MGET", "a");
    EXPECT_ARGV("MGET  a\tb \t c", "MGET", "a", "b", "c");
    EXPECT_ARGV("MGET a a", "MGET", "a", "a");
}

TEST(mset_row)
{
    EXPECT_ARGV("MSET a 1 b 2", "MSET", "a", "1", "b", "2");
    EXPECT_ARGV("MSET a\t1  b\t 2", "MSET", "a", "1", "b", "2");
}

TEST(mset_odd_count)
{
    EXPECT_ERR("MSET a", "MSET command requires an even number of arguments (key-value pairs)");
    EXPECT_ERR("MSET a 1 b", "MSET command requires an even number of arguments (key-value pairs)");
}

TEST(scan_row)
{
    EXPECT_ARGV("SCAN", "SCAN");
    EXPECT_ARGV("SCAN user:", "SCAN", "user:");
    EXPECT_ARGV("SCAN *", "SCAN", "*");
    EXPECT_ARGV("scan   ", "SCAN");
}

TEST(scan_errors)
{
    EXPECT_ERR("SCAN a b", "SCAN command accepts only one argument");
    EXPECT_ERR("SCAN  a", "SCAN command accepts only one argument");
    EXPECT_ERR("SCAN a\tb", "Invalid character: tab character not allowed in prefix");
}

TEST(exists_row)
{
    EXPECT_ARGV("EXISTS n n z", "EXISTS", "n", "n", "z");
    EXPECT_ARGV("EXISTS a\tb", "EXISTS", "a", "b");
}

TEST(dbsize_row)
{
    EXPECT_ARGV("DBSIZE", "DBSIZE");
    EXPECT_ARGV("dbsize", "DBSIZE");
    EXPECT_ERR("DBSIZE x", "DBSIZE command does not accept any arguments");
}

TEST(memory_row)
{
    EXPECT_ARGV("MEMORY", "MEMORY");
    EXPECT_ERR("MEMORY usage", "MEMORY command does not accept any arguments");
}

TEST(ping_row)
{
    EXPECT_ARGV("PING", "PING");
    EXPECT_ARGV("PING hi", "PING", "hi");
    EXPECT_ARGV("PING hello  world", "PING", "hello  world");
    EXPECT_ARGV("PING  hi", "PING", " hi");
    EXPECT_ERR("PING a\tb", "Invalid character: tab character not allowed in message");
}

TEST(echo_row)
{
    EXPECT_ARGV("ECHO hi", "ECHO", "hi");
    EXPECT_ARGV("ECHO hello  world", "ECHO", "hello  world");
    EXPECT_ERR("ECHO a\tb", "Invalid character: tab character not allowed in message");
}

TEST(client_row)
{
    EXPECT_ARGV("CLIENT", "CLIENT", "LIST");
    EXPECT_ARGV("CLIENT LIST", "CLIENT", "LIST");
    EXPECT_ARGV("client list", "CLIENT", "LIST");
    EXPECT_ARGV("CLIENT List", "CLIENT", "LIST");
}

TEST(client_unknown_subcommand)
{
    EXPECT_ERR("CLIENT KILL", "Unknown CLIENT subcommand");
    EXPECT_ERR("CLIENT LIST x", "Unknown CLIENT subcommand");
    EXPECT_ERR("CLIENT LISTS", "Unknown CLIENT subcommand");
    EXPECT_ERR("CLIENT  LIST", "Unknown CLIENT subcommand");
}

TEST(truncate_flushdb_ignore_arguments)
{
    EXPECT_ARGV("TRUNCATE", "TRUNCATE");
    EXPECT_ARGV("truncate all of it", "TRUNCATE");
    EXPECT_ARGV("FLUSHDB", "FLUSHDB");
    EXPECT_ARGV("FLUSHDB ASYNC", "FLUSHDB");
}

TEST(stats_info_quit_ignore_arguments)
{
    EXPECT_ARGV("STATS", "STATS");
    EXPECT_ARGV("stats x", "STATS");
    EXPECT_ARGV("INFO", "INFO");
    EXPECT_ARGV("INFO replication", "INFO");
    EXPECT_ARGV("QUIT", "QUIT");
    EXPECT_ARGV("quit now", "QUIT");
}

TEST(version_row)
{
    EXPECT_ARGV("VERSION", "VERSION");
    EXPECT_ARGV("version", "VERSION");
    EXPECT_ERR("VERSION x", "Unknown command: VERSION");
    EXPECT_ERR("version x", "Unknown command: version");
}

TEST(shutdown_row)
{
    EXPECT_ARGV("SHUTDOWN", "SHUTDOWN");
    EXPECT_ERR("SHUTDOWN x", "Unknown command: SHUTDOWN");
    EXPECT_ERR("Shutdown now", "Unknown command: Shutdown");
}

TEST(hash_row)
{
    EXPECT_ARGV("HASH", "HASH");
    EXPECT_ARGV("HASH *", "HASH", "*");
    EXPECT_ARGV("HASH user:", "HASH", "user:");
}

TEST(hash_errors)
{
    EXPECT_ERR("HASH a b", "HASH command accepts only one argument");
    EXPECT_ERR("HASH a\tb", "Invalid character: tab character not allowed in key");
}

TEST(sync_row)
{
    EXPECT_ARGV("SYNC host 7379", "SYNC", "host", "7379");
    EXPECT_ARGV("SYNC 10.0.0.1\t7379", "SYNC", "10.0.0.1", "7379");
    EXPECT_ARGV("SYNC h 0", "SYNC", "h", "0");
    EXPECT_ARGV("SYNC h 65535", "SYNC", "h", "65535");
    EXPECT_ARGV("SYNC h 00080", "SYNC", "h", "00080");
    EXPECT_ARGV("SYNC h 1 --full", "SYNC", "h", "1", "--full");
    EXPECT_ARGV("SYNC h 1 --verify", "SYNC", "h", "1", "--verify");
    EXPECT_ARGV("SYNC h 1 --full --verify", "SYNC", "h", "1", "--full", "--verify");
    EXPECT_ARGV("SYNC h 1 --verify  --full", "SYNC", "h", "1", "--full", "--verify");
}

TEST(sync_missing_port)
{
    EXPECT_ERR("SYNC host", "SYNC requires <port> as the second argument");
    EXPECT_ERR("SYNC  host  ", "SYNC requires <port> as the second argument");
}

TEST(sync_invalid_port)
{
    EXPECT_ERR("SYNC h 65536", "Invalid port: must be an integer in 0..=65535");
    EXPECT_ERR("SYNC h -1", "Invalid port: must be an integer in 0..=65535");
    EXPECT_ERR("SYNC h abc", "Invalid port: must be an integer in 0..=65535");
    EXPECT_ERR("SYNC h 80x", "Invalid port: must be an integer in 0..=65535");
    EXPECT_ERR("SYNC h 99999999999999999999", "Invalid port: must be an integer in 0..=65535");
    EXPECT_ERR("SYNC h --full", "Invalid port: must be an integer in 0..=65535");
}

TEST(sync_options)
{
    EXPECT_ERR("SYNC h 1 --fast", "Unknown option: --fast");
    EXPECT_ERR("SYNC h 1 --FULL", "Unknown option: --FULL");
    EXPECT_ERR("SYNC h 1 --full x", "Unknown option: x");
    EXPECT_ERR("SYNC h 1 --full --full", "Duplicate option: --full");
    EXPECT_ERR("SYNC h 1 --verify --full --verify", "Duplicate option: --verify");
}

TEST(replicate_row)
{
    EXPECT_ARGV("REPLICATE enable", "REPLICATE", "ENABLE");
    EXPECT_ARGV("REPLICATE DISABLE", "REPLICATE", "DISABLE");
    EXPECT_ARGV("replicate Status", "REPLICATE", "STATUS");
}

TEST(replicate_unknown_action)
{
    EXPECT_ERR("REPLICATE foo", "Unknown REPLICATE action: foo");
    EXPECT_ERR("REPLICATE enable now", "Unknown REPLICATE action: enable now");
    EXPECT_ERR("REPLICATE enabled", "Unknown REPLICATE action: enabled");
}

/* ---- conformance examples (protocol.md §3), parser side ---- */

TEST(conformance_examples)
{
    EXPECT_ARGV("SET k v w", "SET", "k", "v w");
    EXPECT_ARGV("GET k", "GET", "k");
    EXPECT_ERR("GET  k", "GET command accepts only one argument");
    EXPECT_ERR("get", "GET command requires arguments");
    EXPECT_ERR("foo bar", "Unknown command: foo");
    EXPECT_ARGV("SET e \"\"", "SET", "e", "\"\"");
    EXPECT_ARGV("GET e", "GET", "e");
    EXPECT_ARGV("INC n", "INCRBY", "n", "1");
    EXPECT_ARGV("INC n 5", "INCRBY", "n", "5");
    EXPECT_ARGV("APPEND n x", "APPEND", "n", "x");
    EXPECT_ARGV("MGET n zz", "MGET", "n", "zz");
    EXPECT_ARGV("MGET y z", "MGET", "y", "z");
    EXPECT_ARGV("EXISTS n n z", "EXISTS", "n", "n", "z");
    EXPECT_ARGV("SET key a\tb", "SET", "key", "a\tb");
    EXPECT_ERR("SET k\tx v", "Invalid character: tab character not allowed in key");
}

/* ---- struct line_cmd reuse ---- */

TEST(argv_grows_and_is_reused)
{
    struct line_cmd c;
    line_cmd_init(&c);
    struct buf line;
    buf_init(&line);
    buf_append_str(&line, "MGET");
    for (int i = 0; i < 5000; i++)
        buf_printf(&line, " k%d", i);
    ASSERT_OK(line_parse(&c, line.data, line.len));
    ASSERT_EQ(c.argc, 5001);
    ASSERT_SLICE_EQ(c.argv[4999].p, c.argv[4999].len, "k4998");
    size_t cap = c.argv_cap;
    struct slice *argv = c.argv;
    ASSERT_OK(line_parse(&c, (const uint8_t *) "GET a", 5));
    ASSERT_EQ(c.argc, 2);
    ASSERT(c.argv == argv && c.argv_cap == cap); /* no reallocation for a smaller request */
    ASSERT_EQ(line_parse(&c, (const uint8_t *) "GET a b", 7), -EBADMSG);
    ASSERT_EQ(c.argc, 0);
    ASSERT_SLICE_EQ(c.err.data, c.err.len, "GET command accepts only one argument");
    ASSERT_OK(line_parse(&c, (const uint8_t *) "PING", 4));
    ASSERT_EQ(c.err.len, 0); /* a success forgets the previous error */
    ASSERT_EQ(line_parse(&c, (const uint8_t *) "foo", 3), -EBADMSG);
    ASSERT_SLICE_EQ(c.err.data, c.err.len, "Unknown command: foo"); /* not appended */
    buf_clear(&line);
    line_cmd_clear(&c);
    line_cmd_clear(&c); /* idempotent */
    line_cmd_clear(NULL);
}

TEST(argv_slices_borrow_from_the_line)
{
    struct line_cmd c;
    line_cmd_init(&c);
    const uint8_t *in = (const uint8_t *) "SET key value here";
    ASSERT_OK(line_parse(&c, in, 18));
    ASSERT(c.argv[1].p == in + 4);
    ASSERT(c.argv[2].p == in + 8);
    line_cmd_clear(&c);
}

TEST(random_bytes_never_crash)
{
    /* Every input yields either a non-empty argv of in-bounds slices or a non-empty message. */
    static const char alphabet[] = "GETSDLINCMPAHYRQUVXgetsdl 1-+\t\r\v\f\x01\xff\0*";
    struct line_cmd c;
    line_cmd_init(&c);
    uint32_t seed = 12345;
    uint8_t line[48];
    for (int iter = 0; iter < 200000; iter++) {
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % sizeof(line);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            line[i] = (uint8_t) alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
        }
        int rc = line_parse(&c, line, len);
        if (rc == 0) {
            ASSERT(c.argc >= 1);
            for (size_t i = 1; i < c.argc; i++) {
                bool in_line = c.argv[i].p >= line && c.argv[i].p + c.argv[i].len <= line + len;
                ASSERT(in_line || c.argv[i].len <= 8); /* or a static default / flag */
            }
        } else {
            ASSERT_EQ(rc, -EBADMSG);
            ASSERT(c.err.len > 0);
        }
    }
    line_cmd_clear(&c);
}

TEST_LIST{
    TEST_ENTRY(frame_lf),
    TEST_ENTRY(frame_crlf_drops_cr),
    TEST_ENTRY(frame_only_one_cr_dropped),
    TEST_ENTRY(frame_bare_cr_in_middle_is_data),
    TEST_ENTRY(frame_needs_more_and_remembers_scan),
    TEST_ENTRY(frame_scanned_larger_than_data_rescans),
    TEST_ENTRY(frame_pipelined),
    TEST_ENTRY(frame_empty_lines),
    TEST_ENTRY(frame_eof_trailing_line),
    TEST_ENTRY(frame_eof_nothing_pending),
    TEST_ENTRY(frame_eof_whitespace_is_a_line),
    TEST_ENTRY(frame_binary_bytes),
    TEST_ENTRY(frame_split_at_every_boundary),
    TEST_ENTRY(frame_split_at_every_pair_of_boundaries),
    TEST_ENTRY(frame_one_byte_at_a_time),
    TEST_ENTRY(frame_exactly_max_with_lf_accepted),
    TEST_ENTRY(frame_exactly_max_with_crlf_accepted),
    TEST_ENTRY(frame_max_plus_one_with_lf_rejected),
    TEST_ENTRY(frame_max_plus_one_with_crlf_rejected),
    TEST_ENTRY(frame_overlong_detected_without_newline),
    TEST_ENTRY(frame_overlong_after_a_good_line),
    TEST_ENTRY(frame_eof_trailing_line_at_max),
    TEST_ENTRY(frame_long_line_fed_byte_by_byte_is_linear),
    TEST_ENTRY(trim_and_empty),
    TEST_ENTRY(command_word_case_insensitive),
    TEST_ENTRY(tab_in_command_word),
    TEST_ENTRY(requires_arguments_each_word),
    TEST_ENTRY(requires_arguments_upper_cases_typed_word),
    TEST_ENTRY(unknown_command_as_typed),
    TEST_ENTRY(unknown_command_with_nul_byte_is_binary_safe),
    TEST_ENTRY(rest_is_verbatim_after_first_space),
    TEST_ENTRY(get_row),
    TEST_ENTRY(get_errors),
    TEST_ENTRY(get_binary_key),
    TEST_ENTRY(set_row),
    TEST_ENTRY(set_errors),
    TEST_ENTRY(del_row),
    TEST_ENTRY(del_errors),
    TEST_ENTRY(inc_dec_row),
    TEST_ENTRY(incr_decr_aliases),
    TEST_ENTRY(inc_extra_tokens_ignored),
    TEST_ENTRY(inc_amount_limits),
    TEST_ENTRY(inc_requires_a_key),
    TEST_ENTRY(inc_amount_must_be_valid_number),
    TEST_ENTRY(append_prepend_row),
    TEST_ENTRY(append_prepend_errors),
    TEST_ENTRY(mget_row),
    TEST_ENTRY(mset_row),
    TEST_ENTRY(mset_odd_count),
    TEST_ENTRY(scan_row),
    TEST_ENTRY(scan_errors),
    TEST_ENTRY(exists_row),
    TEST_ENTRY(dbsize_row),
    TEST_ENTRY(memory_row),
    TEST_ENTRY(ping_row),
    TEST_ENTRY(echo_row),
    TEST_ENTRY(client_row),
    TEST_ENTRY(client_unknown_subcommand),
    TEST_ENTRY(truncate_flushdb_ignore_arguments),
    TEST_ENTRY(stats_info_quit_ignore_arguments),
    TEST_ENTRY(version_row),
    TEST_ENTRY(shutdown_row),
    TEST_ENTRY(hash_row),
    TEST_ENTRY(hash_errors),
    TEST_ENTRY(sync_row),
    TEST_ENTRY(sync_missing_port),
    TEST_ENTRY(sync_invalid_port),
    TEST_ENTRY(sync_options),
    TEST_ENTRY(replicate_row),
    TEST_ENTRY(replicate_unknown_action),
    TEST_ENTRY(conformance_examples),
    TEST_ENTRY(argv_grows_and_is_reused),
    TEST_ENTRY(argv_slices_borrow_from_the_line),
    TEST_ENTRY(random_bytes_never_crash),
};

TEST_MAIN()
