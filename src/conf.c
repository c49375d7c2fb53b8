/* SPDX-License-Identifier: MIT */
/*
 * conf: configuration defaults, the meaning of the config file's keys, and the command line; see
 * include/arborkv/conf.h and docs/configuration.md. The file's syntax is toml.c's (a reader of
 * the TOML subset, hand-written because Debian 12 packages no C TOML library): this module gets
 * its tables and keys through a handler. Unknown keys and tables only add a warning; everything
 * malformed is an error with its line. The module never logs: main.c prints errors and warnings.
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
#include "arborkv/toml.h"

#define CONF_MAX_FILE_BYTES (1024 * 1024) /* a config file larger than this is refused */

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
    const struct toml_value *v;
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
static const char *apply(struct conf *c, const struct key_def *d, const struct toml_value *v,
                         char *why, size_t n)
{
    struct check k = { .d = d, .v = v, .why = why, .n = n };
    switch (d->type) {
    case T_STR:
        if (v->type != TOML_STR) return "must be a string";
        if (d->nonempty && !*v->str) return "must not be empty";
        break;
    case T_INT:
        if (v->type != TOML_INT || v->i < d->lo || v->i > d->hi) {
            if (d->msg) return d->msg;
            (void) snprintf(why, n, "must be an integer in %lld..%lld", (long long) d->lo,
                            (long long) d->hi);
            return why;
        }
        k.i = v->i;
        break;
    case T_BOOL:
        if (v->type != TOML_BOOL) return "must be true or false";
        k.i = v->b;
        break;
    case T_ENUM:
        if (v->type != TOML_STR) return d->msg;
        if (d->names) { /* without names[], the check hook maps the string */
            const struct enum_name *nm = d->names;
            while (nm->name && strcmp(nm->name, v->str) != 0)
                nm++;
            if (!nm->name) return d->msg;
            k.i = nm->value;
        }
        break;
    case T_LIST:
        if (v->type != TOML_ARRAY || !v->all_strings) return "must be an array of strings";
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

/* ---- the file: conf_load_file reads it, toml.c parses it, these two give it meaning ---- */

struct file_ctx {
    struct conf *c;
    const char *path;
};

static void on_table(void *arg, const char *table, int line)
{
    struct file_ctx *f = arg;
    if (!known_table(table)) add_warning(f->c, "%s:%d: unknown table [%s]", f->path, line, table);
}

static int on_key(void *arg, const char *table, const char *key, const struct toml_value *v,
                  int line, char *why, size_t n)
{
    struct file_ctx *f = arg;
    const struct key_def *d = find_key(table, key);
    if (!d && v->bad) {
        (void) snprintf(why, n, "invalid value '%.*s' for key '%s' (strings need quotes)",
                        v->bad_len, v->bad, key);
        return -1;
    }
    if (!d) {
        if (known_table(table))
            add_warning(f->c, "%s:%d: unknown key '%s'%s%s%s", f->path, line, key,
                        *table ? " in [" : "", table, *table ? "]" : "");
        return 0;
    }
    char e_why[128];
    const char *e = apply(f->c, d, v, e_why, sizeof(e_why));
    if (!e) return 0;
    (void) snprintf(why, n, "%s%s%s %s", *table ? table : "", *table ? "." : "", key, e);
    return -1;
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
    if (rc == 0) {
        struct file_ctx fc = { c, path };
        struct toml_handler h = { on_table, on_key, &fc };
        struct toml_error te = { 0 };
        rc = toml_parse((const char *) text.data, text.len, &h, &te);
        if (rc < 0) set_err(err, path, te.line, "%s", te.reason);
    }
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
        struct toml_value v = { .type = TOML_STR, .str = (char *) val };
        if (d->type == T_INT) {
            char *end;
            errno = 0;
            long long n = strtoll(val, &end, 10);
            v.type = (*val && !*end && errno == 0) ? TOML_INT : TOML_OTHER;
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
