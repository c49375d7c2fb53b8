/* SPDX-License-Identifier: MIT */
/*
 * conf: configuration defaults, a strict reader for the TOML subset MerkleKV's config files use,
 * and the command line; see include/arborkv/conf.h and docs/configuration.md.
 *
 * The reader is hand-written on purpose: Debian 12 packages no C TOML library (only C++ ones),
 * and the subset MerkleKV's files need is small. It is a recursive-descent parser over the whole
 * file (at most CONF_MAX_FILE_BYTES) that tracks line numbers: [table] headers, `key = value`
 * statements, comments, basic and literal strings, integers, booleans and arrays (which may span
 * lines). Values of other TOML types (floats, dates, inline tables) are skipped as opaque when
 * they belong to unknown keys and refused for known ones. Unknown keys and tables only add a
 * warning; everything malformed is an error with its line. The module never logs: main.c prints
 * errors and warnings.
 *
 * One table, keys[], describes every key: its table, type, field in struct conf, range, default,
 * command-line option and, for the few keys with a rule of their own, a check hook. conf_init,
 * conf_clear, the file reader and the command line all work from it. apply() checks types and
 * ranges for every key and words those errors ("port must be an integer in 0..65535"); a row's
 * msg replaces that wording for keys whose message lists the accepted values (engine, fsync).
 */
#include "arborkv/conf.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#include "arborkv/buf.h"
#include "arborkv/log.h"
#include "arborkv/mem.h"

#define CONF_MAX_FILE_BYTES (1024 * 1024) /* a config file larger than this is refused */
#define CONF_MAX_DEPTH      16            /* nesting of arrays / inline tables */

enum vtype { V_STR, V_INT, V_BOOL, V_ARRAY, V_OTHER };

struct value {
    enum vtype type;  /* what was parsed */
    char *str;        /* V_STR: NUL-terminated, heap */
    int64_t i;        /* V_INT */
    bool b;           /* V_BOOL */
    char **items;     /* V_ARRAY of strings: NULL-terminated, heap; NULL if not all strings */
    size_t nitems;    /* V_ARRAY: elements */
    bool all_strings; /* V_ARRAY: every element was a string */
    const char *bad;  /* not valid TOML (a bare word): the token, in the file text; or NULL */
    int bad_len;      /* its length, for messages (at most 40) */
};

struct parser {
    const char *p, *end; /* cursor and end of the file text */
    int line;            /* current line, 1-based */
    const char *path;    /* file name for errors */
    struct conf_error *err;
    struct conf *c;
    char table[128]; /* current [table], "" at top level */
    struct buf seen; /* "table\0key\0" pairs already assigned, to refuse duplicates */
};

static void set_err(struct conf_error *err, const char *file, int line, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static void set_err(struct conf_error *err, const char *file, int line, const char *fmt, ...)
{
    (void) snprintf(err->file, sizeof(err->file), "%s", file);
    err->line = line;
    va_list ap;
    va_start(ap, fmt);
    (void) vsnprintf(err->reason, sizeof(err->reason), fmt, ap);
    va_end(ap);
}

static void value_clear(struct value *v)
{
    free(v->str);
    if (v->items)
        for (size_t i = 0; i < v->nitems; i++)
            free(v->items[i]);
    free(v->items);
    memset(v, 0, sizeof(*v));
}

static void free_list(char **list)
{
    if (!list) return;
    for (char **p = list; *p; p++)
        free(*p);
    free(list);
}

static void add_warning(struct conf *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add_warning(struct conf *c, const char *fmt, ...)
{
    struct buf b;
    buf_init(&b);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    c->warnings = xrealloc(c->warnings, (c->nwarnings + 2) * sizeof(*c->warnings));
    c->warnings[c->nwarnings++] = (char *) b.data;
    c->warnings[c->nwarnings] = NULL;
}

/* ---- the keys ---- */

enum key_type {
    T_STR,  /* char *, heap; NULL = unset */
    T_INT,  /* int or int64_t (by the field's size) in lo..hi */
    T_BOOL, /* bool: true or false */
    T_ENUM, /* an int or bool field set from a string through names[] (or the check hook) */
    T_LIST, /* char **: NULL-terminated array of strings, heap; NULL = unset */
};

/* A string an enum key accepts and the value it stands for. Aliases are rows of their own. */
struct enum_name {
    const char *name;
    int value;
};

struct key_def;

/* What a key's check hook sees: its row, the value, and the integer about to be stored in an
 * integer, bool or enum field, which the hook may set (log_level maps its string that way). */
struct check {
    const struct key_def *d;
    const struct value *v;
    int64_t i;
    char *why; /* room for a formatted reason */
    size_t n;
};

/* A key's own rule, run after the generic type and range checks: NULL, or the reason. */
typedef const char *check_fn(struct check *k);

struct key_def {
    const char *table; /* "" for top level */
    const char *key;
    enum key_type type;
    size_t off, size;              /* the field in struct conf: offsetof and sizeof */
    int64_t lo, hi;                /* T_INT: the accepted range */
    int64_t def;                   /* default of T_INT, T_BOOL and T_ENUM fields */
    const char *def_str;           /* default of a T_STR field (copied); NULL = unset */
    bool nonempty;                 /* T_STR: "" is refused */
    const struct enum_name *names; /* T_ENUM: accepted strings, {NULL} last */
    const char *msg;               /* the reason for a value of the wrong type, out of range
                                    * or not in names[], instead of the generic one */
    check_fn *check;               /* a rule of the key's own, or NULL */
    const char *opt;               /* the command-line option that sets the key, or NULL */
};

/* A node id becomes an MQTT topic level: printable ASCII without '/', '+', '#' or spaces. */
static const char *check_topic_level(struct check *k)
{
    const char *s = k->v->str;
    if (!*s) return "must not be empty";
    if (strlen(s) > 128) return "must be at most 128 characters";
    for (const char *p = s; *p; p++)
        if (*p <= ' ' || *p > '~' || *p == '/' || *p == '+' || *p == '#')
            return "must be printable ASCII without spaces, '/', '+' or '#'";
    return NULL;
}

/* The root of every topic: a wildcard or an empty level would reach beyond this cluster's. */
static const char *check_topic_prefix(struct check *k)
{
    const char *s = k->v->str;
    for (const char *p = s; *p; p++)
        if (*p == '+' || *p == '#') return "must not contain MQTT wildcards '+' or '#'";
    if (s[0] == '/' || s[strlen(s) - 1] == '/') return "must not start or end with '/'";
    return NULL;
}

/* A file path that must be readable now (TLS material): a typo is reported at startup. */
static const char *check_readable(struct check *k)
{
    if (access(k->v->str, R_OK) == 0) return NULL;
    (void) snprintf(k->why, k->n, "cannot read '%s': %s", k->v->str, strerror(errno));
    return k->why;
}

/* log_level's words are log.c's: any case, and "warning" too. */
static const char *check_log_level(struct check *k)
{
    enum log_level l;
    if (log_level_parse(k->v->str, &l) < 0) return k->d->msg;
    k->i = (int64_t) l;
    return NULL;
}

/* Merkle node hashes split into whole bits per level. */
static const char *check_power_of_two(struct check *k)
{
    return k->i & (k->i - 1) ? "must be a power of two (2, 4, 8, 16, 32, 64, 128 or 256)" : NULL;
}

/* 3..5 is the range; there is no MQTT 4. */
static const char *check_mqtt_version(struct check *k)
{
    return k->i == 3 || k->i == 5 ? NULL : k->d->msg;
}

static const struct enum_name engine_names[] = {
    { "sqlite", CONF_ENGINE_SQLITE }, { "sled", CONF_ENGINE_SQLITE },   /* MerkleKV's sled */
    { "memory", CONF_ENGINE_MEMORY }, { "rwlock", CONF_ENGINE_MEMORY }, /* MerkleKV's rwlock */
    { "kv", CONF_ENGINE_MEMORY },     { NULL, 0 },
};
static const struct enum_name fsync_names[] = {
    { "normal", CONF_FSYNC_NORMAL },
    { "always", CONF_FSYNC_ALWAYS },
    { NULL, 0 },
};
static const struct enum_name wire_names[] = { { "cbor", false },
                                               { "merklekv", true },
                                               { NULL, 0 } };

/* The type and field columns of a row. */
#define FIELD(f)         .off = offsetof(struct conf, f), .size = sizeof(((struct conf *) 0)->f)
#define STR(f)           T_STR, FIELD(f)
#define INT(f, lo_, hi_) T_INT, FIELD(f), .lo = (lo_), .hi = (hi_)
#define BOOL(f)          T_BOOL, FIELD(f)
#define ENUM(f, names_)  T_ENUM, FIELD(f), .names = (names_)
#define LIST(f)          T_LIST, FIELD(f)
#define DAYS             86400LL

/* Every key, in the order of docs/configuration.md. */
static const struct key_def keys[] = {
    { "", "host", STR(host), .def_str = "127.0.0.1", .nonempty = true, .opt = "--host" },
    { "", "port", INT(port, 0, 65535), .def = 7379, .opt = "--port" },
    { "", "storage_path", STR(storage_path), .def_str = "data", .nonempty = true,
      .opt = "--storage-path" },
    { "", "engine", ENUM(engine, engine_names), .def = CONF_ENGINE_SQLITE, .opt = "--engine",
      .msg = "must be one of sqlite, memory (aliases: sled, rwlock, kv)" },
    { "", "sync_interval_seconds", INT(sync_interval_seconds, 1, 365 * DAYS), .def = 60 },
    { "", "fsync", ENUM(fsync, fsync_names), .def = CONF_FSYNC_NORMAL,
      .msg = "must be \"normal\" or \"always\"" },
    { "", "max_clients", INT(max_clients, 1, 1000000), .def = 10000 },
    { "", "client_output_limit", INT(client_output_limit, 1024, INT64_MAX),
      .def = 64 * 1024 * 1024 },
    { "", "log_level", ENUM(log_level, NULL), .def = LOG_INFO, .check = check_log_level,
      .opt = "--log-level", .msg = "must be one of debug, info, warn, error" },
    { "", "node_id", STR(node_id), .check = check_topic_level, .opt = "--node-id" },
    { "", "tombstone_ttl_seconds", INT(tombstone_ttl_seconds, 0, 100 * 365 * DAYS),
      .def = 7 * DAYS },

    { "replication", "enabled", BOOL(repl_enabled), .def = false },
    { "replication", "mqtt_broker", STR(mqtt_broker), .def_str = "127.0.0.1", .nonempty = true },
    { "replication", "mqtt_port", INT(mqtt_port, 1, 65535), .def = 1883 },
    { "replication", "topic_prefix", STR(topic_prefix), .def_str = "arborkv", .nonempty = true,
      .check = check_topic_prefix },
    { "replication", "client_id", STR(client_id), .check = check_topic_level },
    { "replication", "client_password", STR(client_password) },
    { "replication", "username", STR(mqtt_username) },
    { "replication", "peer_list", LIST(repl_peer_list) },
    { "replication", "tls_ca_file", STR(tls_ca_file), .check = check_readable },
    { "replication", "tls_cert_file", STR(tls_cert_file), .check = check_readable },
    { "replication", "tls_key_file", STR(tls_key_file), .check = check_readable },
    { "replication", "keepalive_seconds", INT(keepalive_seconds, 1, 3600), .def = 30 },
    { "replication", "mqtt_version", INT(mqtt_version, 3, 5), .def = 5, .check = check_mqtt_version,
      .msg = "must be 5 (MQTT 5) or 3 (MQTT 3.1.1)" },
    { "replication", "wire", ENUM(wire_merklekv, wire_names), .def = false,
      .msg = "must be \"cbor\" or \"merklekv\"" },
    { "replication", "batch_max_events", INT(batch_max_events, 1, 100000), .def = 1000 },
    { "replication", "max_inflight", INT(max_inflight, 1, 60000), .def = 256 },
    { "replication", "outbox_max_events", INT(outbox_max_events, 1, INT64_MAX), .def = 1000000 },
    { "replication", "max_clock_skew_seconds", INT(max_clock_skew_seconds, 1, 365 * DAYS),
      .def = 60 },
    { "replication", "reconnect_max_seconds", INT(reconnect_max_seconds, 1, 3600), .def = 30 },
    { "replication", "stall_timeout_seconds", INT(stall_timeout_seconds, 1, 3600), .def = 5 },

    { "anti_entropy", "enabled", BOOL(ae_enabled), .def = true },
    { "anti_entropy", "interval_seconds", INT(ae_interval_seconds, 1, DAYS), .def = 10 },
    { "anti_entropy", "peer_list", LIST(ae_peer_list) },
    { "anti_entropy", "fanout", INT(merkle_fanout, 2, 256), .def = 16,
      .check = check_power_of_two },
    { "anti_entropy", "depth", INT(merkle_depth, 1, 8), .def = 4 },
    { "anti_entropy", "sync_timeout_seconds", INT(sync_timeout_seconds, 1, 3600), .def = 10 },
};

#undef FIELD
#undef STR
#undef INT
#undef BOOL
#undef ENUM
#undef LIST
#undef DAYS

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

/* Integer, bool and enum fields are stored by their size; these must differ. */
_Static_assert(sizeof(bool) != sizeof(int) && sizeof(int) != sizeof(int64_t), "field sizes");
_Static_assert(sizeof(enum conf_engine) == sizeof(int) && sizeof(enum conf_fsync) == sizeof(int),
               "enum fields are stored as int");

static void *field_of(struct conf *c, const struct key_def *d)
{
    return (char *) c + d->off;
}

static void store_int(void *field, size_t size, int64_t i)
{
    if (size == sizeof(bool)) {
        bool b = i != 0;
        memcpy(field, &b, sizeof(b));
    } else if (size == sizeof(int)) {
        int x = (int) i; /* in range: checked against lo..hi or an enum's values */
        memcpy(field, &x, sizeof(x));
    } else {
        memcpy(field, &i, sizeof(i));
    }
}

static void replace(char **dst, const char *s)
{
    free(*dst);
    *dst = s ? xstrdup(s) : NULL;
}

void conf_init(struct conf *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t k = 0; k < NKEYS; k++) {
        const struct key_def *d = &keys[k];
        if (d->type == T_STR)
            replace(field_of(c, d), d->def_str);
        else if (d->type != T_LIST)
            store_int(field_of(c, d), d->size, d->def);
    }
}

void conf_clear(struct conf *c)
{
    for (size_t k = 0; k < NKEYS; k++) {
        void *field = field_of(c, &keys[k]);
        if (keys[k].type == T_STR)
            free(*(char **) field);
        else if (keys[k].type == T_LIST)
            free_list(*(char ***) field);
    }
    free_list(c->warnings);
    memset(c, 0, sizeof(*c));
}

/*
 * Checks v against the key d and stores it in c. Returns NULL, or the reason (static or formatted
 * into why) that callers prefix with the key's or option's name. Used by the file and the command
 * line alike, so both word their errors the same.
 */
static const char *apply(struct conf *c, const struct key_def *d, const struct value *v, char *why,
                         size_t n)
{
    struct check k = { .d = d, .v = v, .why = why, .n = n };
    switch (d->type) {
    case T_STR:
        if (v->type != V_STR) return "must be a string";
        if (d->nonempty && !*v->str) return "must not be empty";
        break;
    case T_INT:
        if (v->type != V_INT || v->i < d->lo || v->i > d->hi) {
            if (d->msg) return d->msg;
            (void) snprintf(why, n, "must be an integer in %lld..%lld", (long long) d->lo,
                            (long long) d->hi);
            return why;
        }
        k.i = v->i;
        break;
    case T_BOOL:
        if (v->type != V_BOOL) return "must be true or false";
        k.i = v->b;
        break;
    case T_ENUM:
        if (v->type != V_STR) return d->msg;
        if (d->names) { /* without names[], the check hook maps the string */
            const struct enum_name *nm = d->names;
            while (nm->name && strcmp(nm->name, v->str) != 0)
                nm++;
            if (!nm->name) return d->msg;
            k.i = nm->value;
        }
        break;
    case T_LIST:
        if (v->type != V_ARRAY || !v->all_strings) return "must be an array of strings";
        break;
    }
    const char *e = d->check ? d->check(&k) : NULL;
    if (e) return e;
    void *field = field_of(c, d);
    if (d->type == T_STR) {
        replace(field, v->str);
    } else if (d->type == T_LIST) {
        char ***dst = field;
        free_list(*dst);
        *dst = xcalloc(v->nitems + 1, sizeof(**dst));
        for (size_t j = 0; j < v->nitems; j++)
            (*dst)[j] = xstrdup(v->items[j]);
    } else {
        store_int(field, d->size, k.i);
    }
    return NULL;
}

static const struct key_def *find_key(const char *table, const char *key)
{
    for (size_t k = 0; k < NKEYS; k++)
        if (!strcmp(keys[k].table, table) && !strcmp(keys[k].key, key)) return &keys[k];
    return NULL;
}

static bool known_table(const char *table)
{
    for (size_t k = 0; k < NKEYS; k++)
        if (!strcmp(keys[k].table, table)) return true;
    return false;
}

/* ---- the TOML subset ---- */

static int perr(struct parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int perr(struct parser *ps, const char *fmt, ...)
{
    (void) snprintf(ps->err->file, sizeof(ps->err->file), "%s", ps->path);
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

static int parse_value(struct parser *ps, struct value *v, int depth);

static int parse_array(struct parser *ps, struct value *v, int depth)
{
    ps->p++; /* '[' */
    v->type = V_ARRAY;
    v->all_strings = true;
    for (;;) {
        skip_space_nl(ps);
        if (ps->p >= ps->end) return perr(ps, "unterminated array");
        if (*ps->p == ']') {
            ps->p++;
            return 0;
        }
        struct value item = { 0 };
        int rc = parse_value(ps, &item, depth + 1);
        if (rc < 0) {
            value_clear(&item);
            return rc;
        }
        if (item.bad && !v->bad) {
            v->bad = item.bad;
            v->bad_len = item.bad_len;
        }
        if (item.type == V_STR) {
            v->items = xrealloc(v->items, (v->nitems + 2) * sizeof(*v->items));
            v->items[v->nitems++] = item.str;
            v->items[v->nitems] = NULL;
            item.str = NULL;
        } else {
            v->all_strings = false;
        }
        value_clear(&item);
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
            struct value item = { 0 };
            int rc = parse_value(ps, &item, depth + 1);
            value_clear(&item);
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

static int parse_value(struct parser *ps, struct value *v, int depth)
{
    if (ps->p >= ps->end || *ps->p == '\n' || *ps->p == '#') return perr(ps, "missing value");
    char ch = *ps->p;
    /* depth counts the arrays and inline tables around this value: at most CONF_MAX_DEPTH. */
    if ((ch == '[' || ch == '{') && depth >= CONF_MAX_DEPTH)
        return perr(ps, "values nested too deeply");
    if (ch == '"' || ch == '\'') {
        v->type = V_STR;
        return parse_string(ps, &v->str);
    }
    if (ch == '[') return parse_array(ps, v, depth);
    if (ch == '{') {
        v->type = V_OTHER;
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
        v->type = V_BOOL;
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
        v->type = V_INT;
        v->i = neg ? (int64_t) (0 - acc) : (int64_t) acc;
        return 0;
    }
    /* A float, date or time: kept opaque; a known key refuses it with its own reason. Anything
     * else (a bare word) is not TOML: an unknown key refuses it in parse_statement. */
    v->type = V_OTHER;
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
        if (!known_table(name))
            add_warning(ps->c, "%s:%d: unknown table [%s]", ps->path, ps->line, name);
        return end_of_statement(ps);
    }
    char key[128];
    int rc = parse_key(ps, key, sizeof(key));
    if (rc < 0) return rc;
    if (ps->p >= ps->end || *ps->p != '=') return perr(ps, "expected '=' after key '%s'", key);
    ps->p++;
    skip_blank(ps);
    int line = ps->line;
    struct value v = { 0 };
    rc = parse_value(ps, &v, 0);
    if (rc == 0 && !mark_seen(ps, false, ps->table, key)) {
        ps->line = line; /* the key's line, also when its value spans lines */
        rc = perr(ps, "duplicate key '%s'", key);
    }
    if (rc == 0) {
        const struct key_def *d = find_key(ps->table, key);
        if (!d && v.bad) {
            ps->line = line;
            rc = perr(ps, "invalid value '%.*s' for key '%s' (strings need quotes)", v.bad_len,
                      v.bad, key);
        } else if (!d) {
            if (known_table(ps->table))
                add_warning(ps->c, "%s:%d: unknown key '%s'%s%s%s", ps->path, line, key,
                            *ps->table ? " in [" : "", ps->table, *ps->table ? "]" : "");
        } else {
            char why[128];
            const char *e = apply(ps->c, d, &v, why, sizeof(why));
            if (e) {
                ps->line = line;
                rc = perr(ps, "%s%s%s %s", *ps->table ? ps->table : "", *ps->table ? "." : "", key,
                          e);
            }
        }
    }
    value_clear(&v);
    return rc < 0 ? rc : end_of_statement(ps);
}

int conf_load_file(struct conf *c, const char *path, struct conf_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        set_err(err, path, 0, "cannot open config file: %s", strerror(e));
        return e == ENOENT ? -ENOENT : -EIO;
    }
    struct buf text;
    buf_init(&text);
    char chunk[8192];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        buf_append(&text, chunk, n);
        if (text.len > CONF_MAX_FILE_BYTES) {
            set_err(err, path, 0, "config file larger than %d bytes", CONF_MAX_FILE_BYTES);
            rc = -EINVAL;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        set_err(err, path, 0, "cannot read config file: %s", strerror(errno));
        rc = -EIO;
    }
    (void) fclose(f);
    if (rc == 0 && text.len && memchr(text.data, '\0', text.len)) {
        set_err(err, path, 0, "config file contains NUL bytes (is it a text file?)");
        rc = -EINVAL;
    }
    struct parser ps = { .p = (const char *) text.data,
                         .end = (const char *) text.data + text.len,
                         .line = 1,
                         .path = path,
                         .err = err,
                         .c = c };
    buf_init(&ps.seen);
    if (ps.p && ps.end - ps.p >= 3 && !memcmp(ps.p, "\xEF\xBB\xBF", 3)) ps.p += 3; /* UTF-8 BOM */
    while (rc == 0 && ps.p && ps.p < ps.end) {
        skip_space_nl(&ps);
        if (ps.p >= ps.end) break;
        rc = parse_statement(&ps);
    }
    buf_clear(&ps.seen);
    buf_clear(&text);
    return rc;
}

/* ---- command line: the keys with an option (.opt) ---- */

const char *conf_config_path(int argc, char **argv, bool *bad)
{
    const char *path = NULL;
    *bad = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                *bad = true;
                return NULL;
            }
            path = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            path = argv[i] + 9;
        }
    }
    return path;
}

int conf_apply_args(struct conf *c, int argc, char **argv, const char **action,
                    struct conf_error *err)
{
    *action = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            *action = "help";
            return 1;
        }
        if (!strcmp(a, "--version") || !strcmp(a, "-V")) {
            *action = "version";
            return 1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t) (eq - a) : strlen(a);
        if (nlen == 8 && !strncmp(a, "--config", 8)) {
            if (!eq) i++;
            continue;
        }
        const struct key_def *d = NULL;
        for (size_t k = 0; k < NKEYS && !d; k++)
            if (keys[k].opt && strlen(keys[k].opt) == nlen && !strncmp(keys[k].opt, a, nlen))
                d = &keys[k];
        if (!d) {
            set_err(err, "command line", 0, "unknown option '%.*s' (see --help)", (int) nlen, a);
            return -EINVAL;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) {
            set_err(err, "command line", 0, "option '%s' requires a value", d->opt);
            return -EINVAL;
        }
        struct value v = { .type = V_STR, .str = (char *) val };
        if (d->type == T_INT) {
            char *end;
            errno = 0;
            long long n = strtoll(val, &end, 10);
            v.type = (*val && !*end && errno == 0) ? V_INT : V_OTHER;
            v.i = n;
            v.str = NULL;
        }
        char why[128];
        const char *e = apply(c, d, &v, why, sizeof(why));
        if (e) {
            set_err(err, "command line", 0, "%s %s", d->opt, e);
            return -EINVAL;
        }
    }
    return 0;
}

void conf_print_usage(const char *prog)
{
    printf("arborkv %s: a replicated key-value store (line protocol and RESP2 on one port)\n\n"
           "usage: %s [--config PATH] [--host H] [--port N] [--storage-path DIR]\n"
           "          [--engine sqlite|memory] [--node-id ID] [--log-level L] [--version] "
           "[--help]\n\n"
           "  --config PATH        TOML configuration file (MerkleKV format accepted)\n"
           "  --host H             listen address (default 127.0.0.1)\n"
           "  --port N             listen port (default 7379; 0 picks a free one)\n"
           "  --storage-path DIR   data directory (default ./data)\n"
           "  --engine E           sqlite (default) or memory; aliases sled, rwlock, kv\n"
           "  --node-id ID         node id (default <hostname>-<port>)\n"
           "  --log-level L        debug, info (default), warn, error\n"
           "  --version            print the version and exit\n"
           "  --help               print this help and exit\n\n"
           "Command-line options override the file, which overrides the defaults.\n"
           "See docs/configuration.md for every key.\n",
           ARBORKV_VERSION, prog);
}
