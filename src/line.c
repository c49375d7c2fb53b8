/* SPDX-License-Identifier: MIT */
/*
 * line: the MerkleKV-compatible line protocol (protocol.md §1-§3); see include/arborkv/line.h.
 *
 * Framing is a memchr over the bytes not yet scanned, capped at LINE_MAX_BYTES, so a slow client
 * feeding one huge line a byte at a time costs O(n) in total, and an overlong line is refused as
 * soon as the buffer proves it overlong. Grammar is a table lookup on the command word followed by
 * one small function per argument shape; argv slices borrow from the request line, argv[0] and
 * fixed words (defaults, REPLICATE actions, SYNC flags) are static strings. Nothing is allocated
 * per request beyond growing the reused argv array and the error buffer.
 *
 * Where protocol.md is silent, these choices were made (MerkleKV-like: the word decides, extra
 * input is either an error the spec names or ignored the way the spec ignores it elsewhere):
 *   - Structural errors come before character errors: "SET k\tx" (no second space) is
 *     "SET command requires a key and value", "GET a\tb c" is "GET command accepts only one
 *     argument". The spec's examples only combine a tab with an otherwise valid shape.
 *   - INCR/DECR report errors under their family name, INC and DEC ("INC command requires a key"),
 *     since the spec defines them as aliases and lists the messages for INC and DEC only; the
 *     "requires arguments" message still uses the word as typed (step 4 of §2).
 *   - Amounts and the "only token is an integer" test use one strict signed 64-bit decimal
 *     syntax: optional '+' or '-', then one or more ASCII digits, nothing else, no overflow: the
 *     syntax of Rust's i64::from_str (MerkleKV is a Rust program) and of buf.c's parse_i64 (which
 *     the command layer uses to read the amount).
 *   - SYNC's port is one or more ASCII digits (leading zeros allowed) with a value <= 65535; its
 *     options are case-sensitive, and the canonical argv lists them as --full then --verify
 *     whatever order they were given in.
 *   - CLIENT: the whole of `rest` must be "LIST" (any case); "CLIENT LIST x" or "CLIENT  LIST"
 *     are "Unknown CLIENT subcommand", like GET's "any space in rest" rule.
 *   - REPLICATE: the whole of `rest` is the action, and the error echoes it verbatim.
 *   - STATS, INFO and QUIT ignore arguments, as TRUNCATE/FLUSHDB do (the spec lists no error for
 *     them and gives them no arguments); VERSION and SHUTDOWN with arguments are
 *     "Unknown command: <word as typed>" as the spec says.
 *   - TRUNCATE keeps its own name in argv (not FLUSHDB) so STATS can count it as a bulk command
 *     and FLUSHDB as a flushdb command (protocol.md §4).
 *   - "Split on spaces and tabs" means exactly ' ' and '\t'; runs of them separate one token, so
 *     no token is empty. Other whitespace bytes (\v, \f, \r) inside the line are data.
 */
#include "arborkv/line.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arborkv/mem.h"

#define ARGV_MIN_CAP 8 /* entries allocated on the first parse */

/* ---- framing (protocol.md §1) ---- */

void line_parser_init(struct line_parser *p)
{
    p->scanned = 0;
}

int line_next(struct line_parser *p, const uint8_t *data, size_t len, bool eof,
              const uint8_t **line, size_t *line_len, size_t *consumed)
{
    assert(p && (data || len == 0));
    /* A '\n' at index LINE_MAX_BYTES or later would make the line overlong, so look no further. */
    size_t limit = len < LINE_MAX_BYTES ? len : LINE_MAX_BYTES;
    if (p->scanned > limit) p->scanned = 0; /* caller passed different data: rescan */
    const uint8_t *nl = NULL;
    if (p->scanned < limit) nl = memchr(data + p->scanned, '\n', limit - p->scanned);
    if (nl) {
        size_t n = (size_t) (nl - data);
        *line = data;
        *consumed = n + 1;
        *line_len = n > 0 && data[n - 1] == '\r' ? n - 1 : n;
        p->scanned = 0;
        return 1;
    }
    p->scanned = limit;
    /* More than LINE_MAX_BYTES buffered and none of the first LINE_MAX_BYTES is a '\n'. */
    if (len > LINE_MAX_BYTES) return -E2BIG;
    if (eof && len > 0) {
        /* protocol.md §1: data after the last '\n' at EOF is one more request. */
        *line = data;
        *line_len = len;
        *consumed = len;
        p->scanned = 0;
        return 1;
    }
    return 0;
}

/* ---- grammar (protocol.md §2, §3) ---- */

enum word_kind {
    W_GET,
    W_SET,
    W_DEL,
    W_INC,
    W_DEC,
    W_APPEND,
    W_PREPEND,
    W_MGET,
    W_MSET,
    W_SCAN,
    W_EXISTS,
    W_DBSIZE,
    W_PING,
    W_ECHO,
    W_MEMORY,
    W_CLIENT,
    W_TRUNCATE,
    W_FLUSHDB,
    W_STATS,
    W_INFO,
    W_VERSION,
    W_HASH,
    W_SYNC,
    W_REPLICATE,
    W_SHUTDOWN,
    W_QUIT,
};

/* One accepted command word. */
struct word_def {
    const char *name;    /* upper case, as matched (case-insensitively) */
    enum word_kind kind; /* what the word means */
    bool needs_args;     /* protocol.md §2 step 4: alone → "<WORD> command requires arguments" */
};

static const struct word_def words[] = {
    { "GET", W_GET, true },
    { "SET", W_SET, true },
    { "DEL", W_DEL, true },
    { "DELETE", W_DEL, true },
    { "INC", W_INC, true },
    { "INCR", W_INC, true },
    { "DEC", W_DEC, true },
    { "DECR", W_DEC, true },
    { "APPEND", W_APPEND, true },
    { "PREPEND", W_PREPEND, true },
    { "MGET", W_MGET, true },
    { "MSET", W_MSET, true },
    { "SCAN", W_SCAN, false },
    { "EXISTS", W_EXISTS, true },
    { "DBSIZE", W_DBSIZE, false },
    { "PING", W_PING, false },
    { "ECHO", W_ECHO, true },
    { "MEMORY", W_MEMORY, false },
    { "CLIENT", W_CLIENT, false },
    { "TRUNCATE", W_TRUNCATE, false },
    { "FLUSHDB", W_FLUSHDB, false },
    { "STATS", W_STATS, false },
    { "INFO", W_INFO, false },
    { "VERSION", W_VERSION, false },
    { "HASH", W_HASH, false },
    { "SYNC", W_SYNC, true },
    { "REPLICATE", W_REPLICATE, true },
    { "SHUTDOWN", W_SHUTDOWN, false },
    { "QUIT", W_QUIT, false },
};

void line_cmd_init(struct line_cmd *c)
{
    c->argv = NULL;
    c->argc = 0;
    c->argv_cap = 0;
    buf_init(&c->err);
}

void line_cmd_clear(struct line_cmd *c)
{
    if (!c) return;
    free(c->argv);
    buf_clear(&c->err);
    line_cmd_init(c);
}

static bool is_trim_space(uint8_t ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}

static bool is_token_sep(uint8_t ch)
{
    return ch == ' ' || ch == '\t';
}

static uint8_t ascii_upper(uint8_t ch)
{
    return ch >= 'a' && ch <= 'z' ? (uint8_t) (ch - ('a' - 'A')) : ch;
}

/* True if p[0..len) equals the upper-case NUL-terminated name, ignoring ASCII case. */
static bool equals_nocase(const uint8_t *p, size_t len, const char *name)
{
    size_t i = 0;
    for (; i < len && name[i]; i++)
        if (ascii_upper(p[i]) != (uint8_t) name[i]) return false;
    return i == len && name[i] == '\0';
}

static bool has_byte(const uint8_t *p, size_t len, uint8_t ch)
{
    return len > 0 && memchr(p, ch, len) != NULL;
}

/* See line.h. The port is one or more ASCII digits with a value in 0..=65535. */
int line_sync_args(const struct slice *args, size_t n, int *port, bool *full, bool *verify,
                   const char **why, const struct slice **bad)
{
    *bad = NULL;
    *why = "Invalid port: must be an integer in 0..=65535";
    uint32_t v = 0;
    if (n == 0 || args[0].len == 0) return -EBADMSG;
    for (size_t i = 0; i < args[0].len; i++) {
        if (args[0].p[i] < '0' || args[0].p[i] > '9') return -EBADMSG;
        v = v * 10 + (uint32_t) (args[0].p[i] - '0');
        if (v > 65535) return -EBADMSG;
    }
    *port = (int) v;
    *full = *verify = false;
    for (size_t i = 1; i < n; i++) {
        const struct slice *t = &args[i];
        bool *flag = NULL;
        if (t->len == 6 && memcmp(t->p, "--full", 6) == 0)
            flag = full;
        else if (t->len == 8 && memcmp(t->p, "--verify", 8) == 0)
            flag = verify;
        if (!flag || *flag) {
            *why = flag ? "Duplicate option: " : "Unknown option: ";
            *bad = t;
            return -EBADMSG;
        }
        *flag = true;
    }
    *why = NULL;
    return 0;
}

static void push(struct line_cmd *c, const uint8_t *p, size_t len)
{
    if (c->argc == c->argv_cap) {
        size_t cap = c->argv_cap ? c->argv_cap * 2 : ARGV_MIN_CAP;
        c->argv = xrealloc(c->argv, cap * sizeof(*c->argv));
        c->argv_cap = cap;
    }
    c->argv[c->argc++] = (struct slice){ p, len };
}

static void push_str(struct line_cmd *c, const char *s)
{
    push(c, (const uint8_t *) s, strlen(s));
}

/* Pushes every token of p[0..len) separated by runs of spaces and tabs; returns how many. */
static size_t push_tokens(struct line_cmd *c, const uint8_t *p, size_t len)
{
    size_t n = 0, i = 0;
    while (i < len) {
        while (i < len && is_token_sep(p[i]))
            i++;
        size_t start = i;
        while (i < len && !is_token_sep(p[i]))
            i++;
        if (i > start) {
            push(c, p + start, i - start);
            n++;
        }
    }
    return n;
}

/* Records "<msg><arg>" as the error (arg may be empty) and returns -EBADMSG. */
static int fail_with(struct line_cmd *c, const char *msg, const uint8_t *arg, size_t arg_len)
{
    c->argc = 0;
    buf_reset(&c->err);
    buf_append_str(&c->err, msg);
    buf_append(&c->err, arg, arg_len);
    return -EBADMSG;
}

static int fail(struct line_cmd *c, const char *msg)
{
    return fail_with(c, msg, NULL, 0);
}

/* "<NAME> command <what>", for the messages that name the command family. */
static int fail_cmd(struct line_cmd *c, const char *name, const char *what)
{
    c->argc = 0;
    buf_reset(&c->err);
    buf_append_str(&c->err, name);
    buf_append_str(&c->err, " command ");
    buf_append_str(&c->err, what);
    return -EBADMSG;
}

/* GET / DEL / DELETE: rest is the key; no space (one argument) and no tab. */
static int parse_one_key(struct line_cmd *c, const char *argv0, const char *msg_name,
                         const uint8_t *rest, size_t rest_len)
{
    if (has_byte(rest, rest_len, ' ')) return fail_cmd(c, msg_name, "accepts only one argument");
    if (has_byte(rest, rest_len, '\t'))
        return fail(c, "Invalid character: tab character not allowed in key");
    push_str(c, argv0);
    push(c, rest, rest_len);
    return 0;
}

/* SET / APPEND / PREPEND: key up to the next space, value = everything after it, verbatim. */
static int parse_key_value(struct line_cmd *c, const char *name, const uint8_t *rest,
                           size_t rest_len)
{
    const uint8_t *sp = memchr(rest, ' ', rest_len);
    if (!sp) return fail_cmd(c, name, "requires a key and value");
    size_t key_len = (size_t) (sp - rest);
    if (key_len == 0) return fail_cmd(c, name, "key cannot be empty");
    if (has_byte(rest, key_len, '\t'))
        return fail(c, "Invalid character: tab character not allowed in key");
    push_str(c, name);
    push(c, rest, key_len);
    push(c, sp + 1, rest_len - key_len - 1);
    return 0;
}

/* INC / DEC (and INCR / DECR): key [amount], extra tokens ignored -> INCRBY|DECRBY key amount. */
static int parse_incdec(struct line_cmd *c, bool dec, const uint8_t *rest, size_t rest_len)
{
    const char *name = dec ? "DEC" : "INC";
    push_str(c, dec ? "DECRBY" : "INCRBY");
    size_t n = push_tokens(c, rest, rest_len);
    /* Trimming leaves rest ending in a non-separator, so n >= 1; stay safe anyway. */
    if (n == 0) return fail_cmd(c, name, "requires a key");
    if (n == 1 && parse_i64(c->argv[1].p, c->argv[1].len, NULL))
        return fail_cmd(c, name, "requires a key");
    if (n >= 2 && !parse_i64(c->argv[2].p, c->argv[2].len, NULL))
        return fail_cmd(c, name, "amount must be a valid number");
    if (n == 1) push_str(c, "1");
    c->argc = 3; /* extra tokens ignored */
    return 0;
}

/* SCAN / HASH: at most one argument, no space and no tab in it. */
static int parse_opt_arg(struct line_cmd *c, const char *name, const char *tab_msg,
                         const uint8_t *rest, size_t rest_len, bool has_rest)
{
    push_str(c, name);
    if (!has_rest) return 0;
    if (has_byte(rest, rest_len, ' ')) return fail_cmd(c, name, "accepts only one argument");
    if (has_byte(rest, rest_len, '\t')) return fail(c, tab_msg);
    push(c, rest, rest_len);
    return 0;
}

/* SYNC host port [--full] [--verify]. */
static int parse_sync(struct line_cmd *c, const uint8_t *rest, size_t rest_len)
{
    push_str(c, "SYNC");
    size_t n = push_tokens(c, rest, rest_len);
    if (n < 2) return fail(c, "SYNC requires <port> as the second argument");
    int port;
    bool full, verify;
    const char *why;
    const struct slice *bad;
    if (line_sync_args(&c->argv[2], c->argc - 2, &port, &full, &verify, &why, &bad) < 0)
        return bad ? fail_with(c, why, bad->p, bad->len) : fail(c, why);
    c->argc = 3;
    if (full) push_str(c, "--full");
    if (verify) push_str(c, "--verify");
    return 0;
}

static int parse_replicate(struct line_cmd *c, const uint8_t *rest, size_t rest_len)
{
    static const char *const actions[] = { "ENABLE", "DISABLE", "STATUS" };
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        if (equals_nocase(rest, rest_len, actions[i])) {
            push_str(c, "REPLICATE");
            push_str(c, actions[i]);
            return 0;
        }
    }
    return fail_with(c, "Unknown REPLICATE action: ", rest, rest_len);
}

static int parse_args(struct line_cmd *c, const struct word_def *w, const uint8_t *word,
                      size_t word_len, const uint8_t *rest, size_t rest_len, bool has_rest)
{
    switch (w->kind) {
    case W_GET:
        return parse_one_key(c, "GET", "GET", rest, rest_len);
    case W_DEL:
        return parse_one_key(c, "DEL", "DELETE", rest, rest_len);
    case W_SET:
        return parse_key_value(c, "SET", rest, rest_len);
    case W_APPEND:
        return parse_key_value(c, "APPEND", rest, rest_len);
    case W_PREPEND:
        return parse_key_value(c, "PREPEND", rest, rest_len);
    case W_INC:
        return parse_incdec(c, false, rest, rest_len);
    case W_DEC:
        return parse_incdec(c, true, rest, rest_len);
    case W_MGET:
        push_str(c, "MGET");
        (void) push_tokens(c, rest, rest_len);
        return 0;
    case W_EXISTS:
        push_str(c, "EXISTS");
        (void) push_tokens(c, rest, rest_len);
        return 0;
    case W_MSET:
        push_str(c, "MSET");
        if (push_tokens(c, rest, rest_len) % 2 != 0)
            return fail(c, "MSET command requires an even number of arguments (key-value pairs)");
        return 0;
    case W_SCAN:
        return parse_opt_arg(c, "SCAN", "Invalid character: tab character not allowed in prefix",
                             rest, rest_len, has_rest);
    case W_HASH:
        return parse_opt_arg(c, "HASH", "Invalid character: tab character not allowed in key", rest,
                             rest_len, has_rest);
    case W_PING:
    case W_ECHO:
        if (has_byte(rest, rest_len, '\t'))
            return fail(c, "Invalid character: tab character not allowed in message");
        push_str(c, w->kind == W_PING ? "PING" : "ECHO");
        if (has_rest) push(c, rest, rest_len);
        return 0;
    case W_DBSIZE:
    case W_MEMORY:
        if (has_rest) return fail_cmd(c, w->name, "does not accept any arguments");
        push_str(c, w->name);
        return 0;
    case W_CLIENT:
        if (has_rest && !equals_nocase(rest, rest_len, "LIST"))
            return fail(c, "Unknown CLIENT subcommand");
        push_str(c, "CLIENT");
        push_str(c, "LIST");
        return 0;
    case W_VERSION:
    case W_SHUTDOWN:
        if (has_rest) return fail_with(c, "Unknown command: ", word, word_len);
        push_str(c, w->name);
        return 0;
    case W_TRUNCATE:
    case W_FLUSHDB:
    case W_STATS:
    case W_INFO:
    case W_QUIT:
        push_str(c, w->name); /* arguments ignored (see the header comment) */
        return 0;
    case W_SYNC:
        return parse_sync(c, rest, rest_len);
    case W_REPLICATE:
        return parse_replicate(c, rest, rest_len);
    }
    return fail_with(c, "Unknown command: ", word, word_len); /* not reached */
}

int line_parse(struct line_cmd *c, const uint8_t *line, size_t len)
{
    assert(c && (line || len == 0));
    c->argc = 0;
    buf_reset(&c->err);

    /* §2 step 1: trim, then an empty line is an error. */
    while (len > 0 && is_trim_space(line[0])) {
        line++;
        len--;
    }
    while (len > 0 && is_trim_space(line[len - 1]))
        len--;
    if (len == 0) return fail(c, "Empty command");

    /* §2 steps 2, 3, 6: the word ends at the first space only; rest is everything after it. */
    const uint8_t *sp = memchr(line, ' ', len);
    size_t word_len = sp ? (size_t) (sp - line) : len;
    const uint8_t *rest = sp ? sp + 1 : line + len;
    size_t rest_len = sp ? len - word_len - 1 : 0;
    if (has_byte(line, word_len, '\t'))
        return fail(c, "Invalid character: tab character not allowed in command");

    const struct word_def *w = NULL;
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]) && !w; i++)
        if (equals_nocase(line, word_len, words[i].name)) w = &words[i];
    if (!w) return fail_with(c, "Unknown command: ", line, word_len); /* §2 step 5 */

    /* §2 step 4; w->name is the typed word upper-cased, since the match ignores case. */
    if (!sp && w->needs_args) return fail_cmd(c, w->name, "requires arguments");

    return parse_args(c, w, line, word_len, rest, rest_len, sp != NULL);
}
