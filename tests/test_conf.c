/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for conf: the defaults, a MerkleKV config.toml, every TOML feature of the subset
 * (docs/configuration.md), unknown keys and tables as warnings, every error with its line and
 * reason, and the command line (conf_apply_args, conf_config_path). Tables of every key (its
 * table, type, range and field) check each key's default, limits, out-of-range and wrong-type
 * errors with file and line, and that a key is unknown in the other tables.
 * Each case writes its files into its own mkdtemp() directory and removes it at the end.
 */
#include "arborkv/conf.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arborkv/buf.h"
#include "arborkv/log.h"
#include "harness.h"

/* ---- helpers ---- */

static char tmp_root[64];

static void make_tmp(void)
{
    test_make_tmp(tmp_root, sizeof(tmp_root), "conf");
}

static void rm_tmp(void)
{
    test_rm_tmp(tmp_root);
}

/* Returns a path under the test's temporary directory (static buffer, one of four). */
static const char *tmp_path(const char *rel)
{
    static char bufs[4][256];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof(bufs[0]), "%s/%s", tmp_root, rel);
    return b;
}

/* Writes len bytes to name in the temporary directory and returns its path. */
static const char *write_file(const char *name, const void *data, size_t len)
{
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ(fwrite(data, 1, len, f), len);
    ASSERT_OK(fclose(f));
    return path;
}

static void dump_err(const struct conf_error *err)
{
    fprintf(stderr, "  error: %s:%d: %s\n", err->file, err->line, err->reason);
}

/* Writes text to a file and loads it over c; the load must succeed. Returns the file's path. */
static const char *load_ok_at(int at, struct conf *c, const char *text)
{
    const char *path = write_file("ok.toml", text, strlen(text));
    struct conf_error err;
    memset(&err, 0, sizeof(err));
    int rc = conf_load_file(c, path, &err);
    if (rc != 0) {
        fprintf(stderr, "%s:%d: expected the file to load, got rc %d\n", __FILE__, at, rc);
        dump_err(&err);
        abort();
    }
    return path;
}

/* Loads text over fresh defaults; it must fail with -EINVAL, the given line and exactly reason. */
static void expect_err_at(int at, const char *text, int line, const char *reason)
{
    struct conf c;
    conf_init(&c);
    const char *path = write_file("bad.toml", text, strlen(text));
    struct conf_error err;
    memset(&err, 0, sizeof(err));
    int rc = conf_load_file(&c, path, &err);
    if (rc != -EINVAL || err.line != line || strcmp(err.reason, reason) != 0 ||
        strcmp(err.file, path) != 0) {
        fprintf(stderr, "%s:%d: expected %s:%d: %s (rc %d), got rc %d\n", __FILE__, at, path, line,
                reason, -EINVAL, rc);
        dump_err(&err);
        abort();
    }
    conf_clear(&c);
}

#define LOAD_OK(c, text)               load_ok_at(__LINE__, (c), (text))
#define EXPECT_ERR(text, line, reason) expect_err_at(__LINE__, (text), (line), (reason))

/* Checks warnings[i] == the formatted text. */
static void expect_warning_at(int at, const struct conf *c, size_t i, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static void expect_warning_at(int at, const struct conf *c, size_t i, const char *fmt, ...)
{
    struct buf want;
    buf_init(&want);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&want, fmt, ap);
    va_end(ap);
    if (i >= c->nwarnings || strcmp(c->warnings[i], (const char *) want.data) != 0) {
        fprintf(stderr, "%s:%d: warning %zu: want \"%s\", got \"%s\" (%zu warnings)\n", __FILE__,
                at, i, (const char *) want.data, i < c->nwarnings ? c->warnings[i] : "(none)",
                c->nwarnings);
        abort();
    }
    buf_clear(&want);
}

#define EXPECT_WARNING(c, i, ...) expect_warning_at(__LINE__, (c), (i), __VA_ARGS__)

/* Checks a NULL-terminated string list against the NULL-terminated want list. */
static void expect_list_at(int at, char **list, const char *const *want)
{
    size_t i = 0;
    bool same = list != NULL;
    for (; same && want[i]; i++)
        same = list[i] && strcmp(list[i], want[i]) == 0;
    if (!same || list[i] != NULL) {
        fprintf(stderr, "%s:%d: list mismatch at entry %zu\n", __FILE__, at, i);
        for (size_t j = 0; list && list[j]; j++)
            fprintf(stderr, "  got[%zu] = \"%s\"\n", j, list[j]);
        abort();
    }
}

#define EXPECT_LIST(list, ...) \
    expect_list_at(__LINE__, (list), (const char *const[]){ __VA_ARGS__, NULL })

/* A heap copy of an argument vector, "arborkv" first, as main receives it. */
struct args {
    int argc;
    char **argv;
};

static struct args make_args(const char *const *list)
{
    struct args a = { 1, NULL };
    while (list[a.argc - 1])
        a.argc++;
    a.argv = calloc((size_t) a.argc + 1, sizeof(*a.argv));
    ASSERT(a.argv != NULL);
    a.argv[0] = strdup("arborkv");
    for (int i = 1; i < a.argc; i++)
        a.argv[i] = strdup(list[i - 1]);
    return a;
}

static void free_args(struct args *a)
{
    for (int i = 0; i < a->argc; i++)
        free(a->argv[i]);
    free(a->argv);
}

/* Runs conf_apply_args over c with the listed arguments. */
static int apply_list(struct conf *c, const char **action, struct conf_error *err,
                      const char *const *list)
{
    struct args a = make_args(list);
    memset(err, 0, sizeof(*err));
    *action = "not reset";
    int rc = conf_apply_args(c, a.argc, a.argv, action, err);
    free_args(&a);
    return rc;
}

#define APPLY(c, action, err, ...) \
    apply_list((c), (action), (err), (const char *const[]){ __VA_ARGS__, NULL })

/* The arguments must be refused with exactly reason, attributed to the command line. */
static void expect_args_err_at(int at, const char *reason, const char *const *list)
{
    struct conf c;
    conf_init(&c);
    const char *action;
    struct conf_error err;
    int rc = apply_list(&c, &action, &err, list);
    if (rc != -EINVAL || strcmp(err.reason, reason) != 0 || strcmp(err.file, "command line") != 0 ||
        err.line != 0) {
        fprintf(stderr, "%s:%d: expected command line error \"%s\", got rc %d\n", __FILE__, at,
                reason, rc);
        dump_err(&err);
        abort();
    }
    ASSERT(action == NULL);
    conf_clear(&c);
}

#define EXPECT_ARGS_ERR(reason, ...) \
    expect_args_err_at(__LINE__, (reason), (const char *const[]){ __VA_ARGS__, NULL })

/* ---- defaults ---- */

static void check_defaults(const struct conf *c)
{
    ASSERT_STR_EQ(c->host, "127.0.0.1");
    ASSERT_EQ(c->port, 7379);
    ASSERT_STR_EQ(c->storage_path, "data");
    ASSERT_EQ(c->engine, CONF_ENGINE_SQLITE);
    ASSERT_EQ(c->sync_interval_seconds, 60);
    ASSERT_EQ(c->fsync, CONF_FSYNC_NORMAL);
    ASSERT_EQ(c->max_clients, 10000);
    ASSERT_EQ(c->client_output_limit, 64 * 1024 * 1024);
    ASSERT_EQ(c->log_level, LOG_INFO);
    ASSERT(c->node_id == NULL);
    ASSERT_EQ(c->tombstone_ttl_seconds, 7 * 86400);
    ASSERT(!c->repl_enabled);
    ASSERT_STR_EQ(c->mqtt_broker, "127.0.0.1");
    ASSERT_EQ(c->mqtt_port, 1883);
    ASSERT_STR_EQ(c->topic_prefix, "arborkv");
    ASSERT(c->client_id == NULL);
    ASSERT(c->client_password == NULL);
    ASSERT(c->mqtt_username == NULL);
    ASSERT(c->repl_peer_list == NULL);
    ASSERT(c->ae_enabled);
    ASSERT_EQ(c->ae_interval_seconds, 10);
    ASSERT(c->ae_peer_list == NULL);
    ASSERT_EQ(c->sync_timeout_seconds, 10);
    ASSERT(c->tls_ca_file == NULL);
    ASSERT(c->tls_cert_file == NULL);
    ASSERT(c->tls_key_file == NULL);
    ASSERT_EQ(c->keepalive_seconds, 30);
    ASSERT(!c->wire_merklekv);
    ASSERT_EQ(c->mqtt_version, 5);
    ASSERT_EQ(c->batch_max_events, 1000);
    ASSERT_EQ(c->max_inflight, 256);
    ASSERT_EQ(c->outbox_max_events, 1000000);
    ASSERT_EQ(c->max_clock_skew_seconds, 60);
    ASSERT_EQ(c->reconnect_max_seconds, 30);
    ASSERT_EQ(c->stall_timeout_seconds, 5);
    ASSERT_EQ(c->merkle_fanout, 16);
    ASSERT_EQ(c->merkle_depth, 4);
    ASSERT(c->warnings == NULL);
    ASSERT_EQ(c->nwarnings, 0);
}

TEST(defaults)
{
    struct conf c;
    conf_init(&c);
    check_defaults(&c);
    conf_clear(&c);
}

TEST(empty_and_comment_only_files_keep_defaults)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "");
    check_defaults(&c);
    LOAD_OK(&c, "\n\n   \n\t\n");
    LOAD_OK(&c, "# only a comment");
    LOAD_OK(&c, "# one\n\n  # two\r\n\t# three\n");
    LOAD_OK(&c, "\xEF\xBB\xBF"); /* just a byte-order mark */
    check_defaults(&c);
    conf_clear(&c);
    rm_tmp();
}

TEST(clear_is_idempotent)
{
    struct conf c;
    conf_init(&c);
    conf_clear(&c);
    conf_clear(&c);
    ASSERT(c.host == NULL);
    conf_init(&c); /* usable again */
    ASSERT_STR_EQ(c.host, "127.0.0.1");
    conf_clear(&c);
}

/* ---- MerkleKV file ---- */

static const char merklekv_toml[] = "# MerkleKV configuration\n"
                                    "host = \"0.0.0.0\"\n"
                                    "port = 7380\n"
                                    "storage_path = \"/var/lib/merkle_kv\"\n"
                                    "engine = \"sled\"\n"
                                    "sync_interval_seconds = 30\n"
                                    "\n"
                                    "[replication]\n"
                                    "enabled = true\n"
                                    "mqtt_broker = \"broker.example.com\"\n"
                                    "mqtt_port = 8883\n"
                                    "topic_prefix = \"merkle_kv\"\n"
                                    "client_id = \"node1\"\n"
                                    "client_password = \"s3cret\"\n"
                                    "peer_list = [\"10.0.0.2:7379\", \"10.0.0.3:7379\"]\n"
                                    "\n"
                                    "[anti_entropy]\n"
                                    "enabled = false\n"
                                    "interval_seconds = 120\n"
                                    "peer_list = [\n"
                                    "    \"10.0.0.4:7379\",\n"
                                    "    \"10.0.0.5:7379\",   # trailing comma is fine\n"
                                    "]\n";

TEST(merklekv_file)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, merklekv_toml);
    ASSERT_STR_EQ(c.host, "0.0.0.0");
    ASSERT_EQ(c.port, 7380);
    ASSERT_STR_EQ(c.storage_path, "/var/lib/merkle_kv");
    ASSERT_EQ(c.engine, CONF_ENGINE_SQLITE);
    ASSERT_EQ(c.sync_interval_seconds, 30);
    ASSERT(c.repl_enabled);
    ASSERT_STR_EQ(c.mqtt_broker, "broker.example.com");
    ASSERT_EQ(c.mqtt_port, 8883);
    ASSERT_STR_EQ(c.topic_prefix, "merkle_kv");
    ASSERT_STR_EQ(c.client_id, "node1");
    ASSERT_STR_EQ(c.client_password, "s3cret");
    EXPECT_LIST(c.repl_peer_list, "10.0.0.2:7379", "10.0.0.3:7379");
    ASSERT(!c.ae_enabled);
    ASSERT_EQ(c.ae_interval_seconds, 120);
    EXPECT_LIST(c.ae_peer_list, "10.0.0.4:7379", "10.0.0.5:7379");
    /* No warnings, and the keys the file does not set keep their defaults. */
    ASSERT_EQ(c.nwarnings, 0);
    ASSERT(c.warnings == NULL);
    ASSERT_EQ(c.fsync, CONF_FSYNC_NORMAL);
    ASSERT_EQ(c.max_clients, 10000);
    ASSERT_EQ(c.client_output_limit, 64 * 1024 * 1024);
    ASSERT_EQ(c.log_level, LOG_INFO);
    ASSERT(c.node_id == NULL);
    ASSERT(c.mqtt_username == NULL);
    conf_clear(&c);
    rm_tmp();
}

TEST(arborkv_keys)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "fsync = \"always\"\n"
                "max_clients = 500\n"
                "client_output_limit = 1_048_576\n"
                "log_level = \"debug\"\n"
                "node_id = \"db1-7379\"\n"
                "tombstone_ttl_seconds = 3600\n"
                "[replication]\n"
                "username = \"user\"\n");
    ASSERT_EQ(c.tombstone_ttl_seconds, 3600);
    ASSERT_EQ(c.mqtt_version, 5);          /* the default */
    ASSERT_EQ(c.stall_timeout_seconds, 5); /* the default */
    ASSERT_EQ(c.fsync, CONF_FSYNC_ALWAYS);
    ASSERT_EQ(c.max_clients, 500);
    ASSERT_EQ(c.client_output_limit, 1048576);
    ASSERT_EQ(c.log_level, LOG_DEBUG);
    ASSERT_STR_EQ(c.node_id, "db1-7379");
    ASSERT_STR_EQ(c.mqtt_username, "user");
    LOAD_OK(&c, "fsync = \"normal\"\nlog_level = \"WARNING\"\n");
    ASSERT_EQ(c.fsync, CONF_FSYNC_NORMAL);
    ASSERT_EQ(c.log_level, LOG_WARN);
    LOAD_OK(&c, "log_level = \"Warn\"");
    ASSERT_EQ(c.log_level, LOG_WARN);
    LOAD_OK(&c, "log_level = \"ERROR\"");
    ASSERT_EQ(c.log_level, LOG_ERROR);
    LOAD_OK(&c, "log_level = 'info'");
    ASSERT_EQ(c.log_level, LOG_INFO);
    LOAD_OK(&c, "[replication]\nmqtt_version = 3\n");
    ASSERT_EQ(c.mqtt_version, 3);
    LOAD_OK(&c, "[replication]\nmqtt_version = 5\n");
    ASSERT_EQ(c.mqtt_version, 5);
    LOAD_OK(&c, "[replication]\nstall_timeout_seconds = 30\n");
    ASSERT_EQ(c.stall_timeout_seconds, 30);
    conf_clear(&c);
    rm_tmp();
}

TEST(later_file_overrides_earlier)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, merklekv_toml);
    LOAD_OK(&c, "host = \"10.1.1.1\"\n"
                "[replication]\n"
                "peer_list = [\"only\"]\n"
                "client_id = \"node2\"\n"
                "[anti_entropy]\n"
                "peer_list = []\n");
    ASSERT_STR_EQ(c.host, "10.1.1.1");
    ASSERT_EQ(c.port, 7380); /* untouched by the second file */
    ASSERT_STR_EQ(c.client_id, "node2");
    EXPECT_LIST(c.repl_peer_list, "only");
    ASSERT(c.ae_peer_list != NULL); /* an empty list, not "unset" */
    ASSERT(c.ae_peer_list[0] == NULL);
    conf_clear(&c);
    rm_tmp();
}

/* ---- TOML features ---- */

TEST(comments_blank_lines_crlf_and_bom)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "\xEF\xBB\xBF# leading comment\r\n"
                "\r\n"
                "   # indented comment\n"
                "port = 1234 # trailing comment\r\n"
                "host=\"h\"#no spaces\n"
                "\t storage_path \t = \t 'd' \t\n"
                "[replication] # after a header\r\n"
                "\tenabled = true\t# tab\n"
                "peer_list = [ # comment after '['\r\n"
                "  \"a\", # one\r\n"
                "  # a whole line\r\n"
                "\r\n"
                "  \"b\" # two, no comma\r\n"
                "] # after ']'\r\n"
                "# no newline at the end");
    ASSERT_EQ(c.port, 1234);
    ASSERT_STR_EQ(c.host, "h");
    ASSERT_STR_EQ(c.storage_path, "d");
    ASSERT(c.repl_enabled);
    EXPECT_LIST(c.repl_peer_list, "a", "b");
    ASSERT_EQ(c.nwarnings, 0);
    conf_clear(&c);
    rm_tmp();
}

TEST(literal_strings)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "storage_path = 'C:\\data\\n\\u0041'\n"
                "host = '\"quoted\"'\n"
                "[replication]\n"
                "client_password = 'a # not a comment'\n"
                "username = ''\n"
                "mqtt_broker = 'tab\there'\n");
    ASSERT_STR_EQ(c.storage_path, "C:\\data\\n\\u0041"); /* no escapes */
    ASSERT_STR_EQ(c.host, "\"quoted\"");
    ASSERT_STR_EQ(c.client_password, "a # not a comment");
    ASSERT_STR_EQ(c.mqtt_username, "");
    ASSERT_STR_EQ(c.mqtt_broker, "tab\there");
    conf_clear(&c);
    rm_tmp();
}

TEST(basic_string_escapes)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "[replication]\n"
                "client_password = \"a\\bb\\tc\\nd\\fe\\rf\\\"g\\\\h\"\n"
                "username = \"tab\there # not a comment\"\n");
    ASSERT_STR_EQ(c.client_password, "a\bb\tc\nd\fe\rf\"g\\h");
    ASSERT_STR_EQ(c.mqtt_username, "tab\there # not a comment");
    conf_clear(&c);
    rm_tmp();
}

TEST(unicode_escapes)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "[replication]\n"
                "client_password = \"\\u0041\\u00e9\\u00E9\\u07FF\\u0800\\uD7FF\\uE000\\uFFFF\"\n"
                "username = \"\\U00000041\\U0001F600\\U0010FFFF\\U0001f600x\"\n");
    ASSERT_STR_EQ(c.client_password, "A"
                                     "\xc3\xa9"
                                     "\xc3\xa9"
                                     "\xdf\xbf"
                                     "\xe0\xa0\x80"
                                     "\xed\x9f\xbf"
                                     "\xee\x80\x80"
                                     "\xef\xbf\xbf");
    ASSERT_STR_EQ(c.mqtt_username, "A"
                                   "\xf0\x9f\x98\x80"
                                   "\xf4\x8f\xbf\xbf"
                                   "\xf0\x9f\x98\x80"
                                   "x");
    conf_clear(&c);
    rm_tmp();
}

TEST(integers)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "port = +8_080\n"
                "max_clients = 1_000\n"
                "sync_interval_seconds = 31_536_000\n"
                "client_output_limit = 9_223_372_036_854_775_807\n"
                "unknown_min = -9_223_372_036_854_775_808\n"
                "unknown_neg = -42\n");
    ASSERT_EQ(c.port, 8080);
    ASSERT_EQ(c.max_clients, 1000);
    ASSERT_EQ(c.sync_interval_seconds, 31536000);
    ASSERT_EQ(c.client_output_limit, INT64_MAX);
    LOAD_OK(&c, "port = -0");
    ASSERT_EQ(c.port, 0);
    LOAD_OK(&c, "port = 65535");
    ASSERT_EQ(c.port, 65535);
    LOAD_OK(&c, "port = +0");
    ASSERT_EQ(c.port, 0);
    LOAD_OK(&c, "port = 1_2_3_4");
    ASSERT_EQ(c.port, 1234);
    LOAD_OK(&c, "client_output_limit = 1024\n[replication]\nmqtt_port = 1\n[anti_entropy]\n"
                "interval_seconds = 86_400\n");
    ASSERT_EQ(c.client_output_limit, 1024);
    ASSERT_EQ(c.mqtt_port, 1);
    ASSERT_EQ(c.ae_interval_seconds, 86400);
    LOAD_OK(&c, "sync_interval_seconds = 1\nmax_clients = 1_000_000\n[replication]\n"
                "mqtt_port = 65535\n[anti_entropy]\ninterval_seconds = 1\n");
    ASSERT_EQ(c.sync_interval_seconds, 1);
    ASSERT_EQ(c.max_clients, 1000000);
    ASSERT_EQ(c.mqtt_port, 65535);
    ASSERT_EQ(c.ae_interval_seconds, 1);
    LOAD_OK(&c, "[anti_entropy]\nsync_timeout_seconds = 1\n");
    ASSERT_EQ(c.sync_timeout_seconds, 1);
    LOAD_OK(&c, "[anti_entropy]\nsync_timeout_seconds = 3600\n");
    ASSERT_EQ(c.sync_timeout_seconds, 3600);
    conf_clear(&c);
    rm_tmp();
}

TEST(booleans)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "[replication]\nenabled = true\n[anti_entropy]\nenabled = false\n");
    ASSERT(c.repl_enabled);
    ASSERT(!c.ae_enabled);
    LOAD_OK(&c, "[replication]\nenabled = false\n[anti_entropy]\nenabled = true\n");
    ASSERT(!c.repl_enabled);
    ASSERT(c.ae_enabled);
    conf_clear(&c);
    rm_tmp();
}

TEST(arrays)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "[replication]\n"
                "peer_list = [\"a\", 'b' ,\"c\\u0041\",]\n"
                "[anti_entropy]\n"
                "peer_list = [\n"
                "    # leading comment\n"
                "    \"x\",   # trailing comment\n"
                "\n"
                "    \"y\"\n"
                "    ,\n"
                "    'z'\n"
                "]\n");
    EXPECT_LIST(c.repl_peer_list, "a", "b", "cA");
    EXPECT_LIST(c.ae_peer_list, "x", "y", "z");
    LOAD_OK(&c, "[replication]\npeer_list = [ ]\n[anti_entropy]\npeer_list = [\n]\n");
    ASSERT(c.repl_peer_list != NULL && c.repl_peer_list[0] == NULL);
    ASSERT(c.ae_peer_list != NULL && c.ae_peer_list[0] == NULL);
    LOAD_OK(&c, "[replication]\npeer_list = [\"\"]\n");
    EXPECT_LIST(c.repl_peer_list, "");
    conf_clear(&c);
    rm_tmp();
}

TEST(quoted_keys_and_table_names)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "\"host\" = \"qh\"\n"
                "'port' = 1\n"
                "[ \"replication\" ]\n"
                "\"mqtt_port\" = 2\n"
                "[ anti_entropy ]\n"
                "interval_seconds = 3\n");
    ASSERT_STR_EQ(c.host, "qh");
    ASSERT_EQ(c.port, 1);
    ASSERT_EQ(c.mqtt_port, 2);
    ASSERT_EQ(c.ae_interval_seconds, 3);
    ASSERT_EQ(c.nwarnings, 0);
    conf_clear(&c);
    rm_tmp();
}

TEST(engine_aliases)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "engine = \"memory\"");
    ASSERT_EQ(c.engine, CONF_ENGINE_MEMORY);
    LOAD_OK(&c, "engine = \"sled\"");
    ASSERT_EQ(c.engine, CONF_ENGINE_SQLITE);
    LOAD_OK(&c, "engine = \"rwlock\"");
    ASSERT_EQ(c.engine, CONF_ENGINE_MEMORY);
    LOAD_OK(&c, "engine = \"sqlite\"");
    ASSERT_EQ(c.engine, CONF_ENGINE_SQLITE);
    LOAD_OK(&c, "engine = 'kv'");
    ASSERT_EQ(c.engine, CONF_ENGINE_MEMORY);
    static const char msg[] = "engine must be one of sqlite, memory (aliases: sled, rwlock, kv)";
    EXPECT_ERR("engine = \"rocksdb\"", 1, msg);
    EXPECT_ERR("engine = \"SQLite\"", 1, msg); /* case-sensitive */
    EXPECT_ERR("engine = \"\"", 1, msg);
    EXPECT_ERR("engine = 1", 1, msg);
    conf_clear(&c);
    rm_tmp();
}

/* ---- unknown keys and tables ---- */

TEST(unknown_keys_and_tables_warn)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    const char *path = LOAD_OK(&c, "log-level = \"debug\"\n"      /* 1 */
                                   "replication.enabled = true\n" /* 2 */
                                   "[replication]\n"              /* 3 */
                                   "no_such_key = \"x\"\n"        /* 4 */
                                   "enabled = true\n"             /* 5 */
                                   "[Replication]\n"              /* 6 */
                                   "enabled = \"whatever\"\n"     /* 7 */
                                   "anything = [1, 'two']\n"      /* 8 */
                                   "[anti_entropy]\n"             /* 9 */
                                   "deep = 3\n"                   /* 10 */
                                   "[replication.tls]\n"          /* 11 */
                                   "ca = 'x'\n"                   /* 12 */
                                   "[\"quoted table\"]\n");       /* 13 */
    ASSERT_EQ(c.nwarnings, 7);
    EXPECT_WARNING(&c, 0, "%s:1: unknown key 'log-level'", path);
    EXPECT_WARNING(&c, 1, "%s:2: unknown key 'replication.enabled'", path); /* not expanded */
    EXPECT_WARNING(&c, 2, "%s:4: unknown key 'no_such_key' in [replication]", path);
    EXPECT_WARNING(&c, 3, "%s:6: unknown table [Replication]", path); /* keys inside: silent */
    EXPECT_WARNING(&c, 4, "%s:10: unknown key 'deep' in [anti_entropy]", path);
    EXPECT_WARNING(&c, 5, "%s:11: unknown table [replication.tls]", path);
    EXPECT_WARNING(&c, 6, "%s:13: unknown table [quoted table]", path);
    ASSERT(c.warnings[7] == NULL);
    ASSERT(c.repl_enabled); /* line 5; the [Replication] value is ignored */
    ASSERT_EQ(c.log_level, LOG_INFO);
    conf_clear(&c);
    rm_tmp();
}

TEST(unknown_keys_accept_other_toml_values)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    const char *path = LOAD_OK(&c, "f = 1.5\n"
                                   "e = 6.02e+23\n"
                                   "d = 1979-05-27T07:32:00Z\n"
                                   "t = 07:32:00\n"
                                   "ds = 1979-05-27 07:32:00.999-07:00\n"
                                   "dl = 1979-05-27\n"
                                   "h = 0x10\n"
                                   "z = 0b1_0\n"
                                   "i = -inf\n"
                                   "it = { a = 1, b = \"}\", c = [1, 2], d = { e = 'f' } }\n"
                                   "n = [[1, 2], [\"a\", 'b'], [], {x = 1}]\n"
                                   "m = [1, \"a\", true, 2.5]\n"
                                   "port = 1\n");
    ASSERT_EQ(c.nwarnings, 12);
    EXPECT_WARNING(&c, 9, "%s:10: unknown key 'it'", path);
    ASSERT_EQ(c.port, 1);
    conf_clear(&c);
    rm_tmp();
}

TEST(warnings_accumulate_across_files)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "a = 1\n");
    const char *path = LOAD_OK(&c, "\nb = 2\n");
    ASSERT_EQ(c.nwarnings, 2);
    EXPECT_WARNING(&c, 1, "%s:2: unknown key 'b'", path);
    conf_clear(&c);
    rm_tmp();
}

/* ---- file-level errors ---- */

TEST(missing_file)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    struct conf_error err;
    memset(&err, 0, sizeof(err));
    const char *path = tmp_path("nope.toml");
    ASSERT_EQ(conf_load_file(&c, path, &err), -ENOENT);
    ASSERT_STR_EQ(err.file, path);
    ASSERT_EQ(err.line, 0);
    ASSERT_STR_EQ(err.reason, "cannot open config file: No such file or directory");
    check_defaults(&c);
    conf_clear(&c);
    rm_tmp();
}

TEST(directory_is_unreadable)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    struct conf_error err;
    memset(&err, 0, sizeof(err));
    ASSERT_EQ(conf_load_file(&c, tmp_root, &err), -EIO);
    ASSERT_STR_EQ(err.file, tmp_root);
    ASSERT_EQ(err.line, 0);
    ASSERT_STR_EQ(err.reason, "cannot read config file: Is a directory");
    conf_clear(&c);
    rm_tmp();
}

TEST(nul_bytes_refused)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    struct conf_error err;
    memset(&err, 0, sizeof(err));
    const char *path = write_file("nul.toml", "port = 1\n\0\n", 11);
    ASSERT_EQ(conf_load_file(&c, path, &err), -EINVAL);
    ASSERT_STR_EQ(err.file, path);
    ASSERT_EQ(err.line, 0);
    ASSERT_STR_EQ(err.reason, "config file contains NUL bytes (is it a text file?)");
    ASSERT_EQ(c.port, 7379); /* nothing applied */
    conf_clear(&c);
    rm_tmp();
}

TEST(size_limit)
{
    make_tmp();
    enum { MAX = 1024 * 1024 };
    char *text = malloc(MAX + 2);
    ASSERT(text != NULL);
    /* Exactly 1 MiB: a setting, then one long comment line. */
    memcpy(text, "port = 1\n#", 10);
    memset(text + 10, 'x', MAX - 11);
    text[MAX - 1] = '\n';
    struct conf c;
    conf_init(&c);
    struct conf_error err;
    memset(&err, 0, sizeof(err));
    const char *path = write_file("big.toml", text, MAX);
    ASSERT_OK(conf_load_file(&c, path, &err));
    ASSERT_EQ(c.port, 1);
    /* One byte more is refused as a whole. */
    text[MAX - 1] = 'x';
    text[MAX] = '\n';
    path = write_file("big.toml", text, MAX + 1);
    ASSERT_EQ(conf_load_file(&c, path, &err), -EINVAL);
    ASSERT_STR_EQ(err.file, path);
    ASSERT_EQ(err.line, 0);
    ASSERT_STR_EQ(err.reason, "config file larger than 1048576 bytes");
    free(text);
    conf_clear(&c);
    rm_tmp();
}

/* ---- syntax errors ---- */

TEST(err_unterminated_string)
{
    make_tmp();
    EXPECT_ERR("host = \"abc", 1, "unterminated string");
    EXPECT_ERR("host = \"abc\nport = 1\n", 1, "unterminated string");
    EXPECT_ERR("port = 1\n\nhost = 'abc\n", 3, "unterminated string");
    EXPECT_ERR("host = \"abc\\\"\n", 1, "unterminated string"); /* \" does not close */
    EXPECT_ERR("host = \"abc\\", 1, "unterminated string");
    EXPECT_ERR("[replication]\npeer_list = [\"a\", \"b]\n", 2, "unterminated string");
    EXPECT_ERR("\"host = 1\n", 1, "unterminated string"); /* in a key */
    EXPECT_ERR("[\"replication]\n", 1, "unterminated string");
    rm_tmp();
}

TEST(err_bad_escapes)
{
    make_tmp();
    EXPECT_ERR("host = \"\\x41\"", 1, "invalid escape sequence '\\x'");
    EXPECT_ERR("port = 1\nhost = \"a\\ab\"", 2, "invalid escape sequence '\\a'");
    EXPECT_ERR("host = \"\\ \"", 1, "invalid escape sequence '\\ '");
    EXPECT_ERR("host = \"\\'\"", 1, "invalid escape sequence '\\''");
    EXPECT_ERR("host = \"\\u12\"", 1, "invalid \\u escape: expected 4 hex digits");
    EXPECT_ERR("host = \"\\u12G4\"", 1, "invalid \\u escape: expected 4 hex digits");
    EXPECT_ERR("host = \"\\u", 1, "invalid \\u escape: expected 4 hex digits");
    EXPECT_ERR("host = \"\\U0001F60\"", 1, "invalid \\U escape: expected 8 hex digits");
    EXPECT_ERR("host = \"\\uD800\"", 1, "invalid unicode escape U+D800");
    EXPECT_ERR("host = \"\\udfff\"", 1, "invalid unicode escape U+DFFF");
    EXPECT_ERR("host = \"\\U0000D800\"", 1, "invalid unicode escape U+D800");
    EXPECT_ERR("host = \"\\U00110000\"", 1, "invalid unicode escape U+110000");
    EXPECT_ERR("host = \"\\UFFFFFFFF\"", 1, "invalid unicode escape U+FFFFFFFF");
    EXPECT_ERR("host = \"a\\u0000b\"", 1, "string contains a NUL character");
    EXPECT_ERR("x = \"\\q\"", 1, "invalid escape sequence '\\q'"); /* unknown keys too */
    rm_tmp();
}

TEST(err_control_characters_in_strings)
{
    make_tmp();
    EXPECT_ERR("host = \"a\x01"
               "b\"",
               1, "control character in string");
    EXPECT_ERR("host = 'a\x1f'", 1, "control character in string");
    EXPECT_ERR("host = \"a\rb\"\n", 1, "control character in string");
    EXPECT_ERR("\n\nx = \"\x1b[0m\"", 3, "control character in string");
    rm_tmp();
}

TEST(err_multi_line_strings)
{
    make_tmp();
    EXPECT_ERR("host = \"\"\"abc\"\"\"", 1, "multi-line strings are not supported");
    EXPECT_ERR("x = '''\nabc\n'''\n", 1, "multi-line strings are not supported");
    rm_tmp();
}

TEST(err_keys_and_equals)
{
    make_tmp();
    EXPECT_ERR("host = \"127.0.0.1\"\nport 7379\n", 2, "expected '=' after key 'port'");
    EXPECT_ERR("[replication]\nenabled\n", 2, "expected '=' after key 'enabled'");
    EXPECT_ERR("port", 1, "expected '=' after key 'port'");
    EXPECT_ERR("port: 1", 1, "expected '=' after key 'port'");
    EXPECT_ERR("= 1", 1, "expected a key");
    EXPECT_ERR("\n\n@x = 1", 3, "expected a key");
    EXPECT_ERR("host =", 1, "missing value");
    EXPECT_ERR("host =\nport = 1\n", 1, "missing value");
    EXPECT_ERR("host = # comment\n", 1, "missing value");
    EXPECT_ERR("host = @", 1, "invalid value starting with '@'");
    EXPECT_ERR("host = ,", 1, "invalid value starting with ','");
    rm_tmp();
}

TEST(err_bare_words_in_unknown_keys)
{
    make_tmp();
    EXPECT_ERR("mode = fast\n", 1, "invalid value 'fast' for key 'mode' (strings need quotes)");
    EXPECT_ERR("\n\nz = 007\n", 3, "invalid value '007' for key 'z' (strings need quotes)");
    EXPECT_ERR("[foo]\nx = [1, [yes]]\n", 2,
               "invalid value 'yes' for key 'x' (strings need quotes)");
    EXPECT_ERR("x = 1.\n", 1, "invalid value '1.' for key 'x' (strings need quotes)");
    EXPECT_ERR("x = 1979-13\n", 1, "invalid value '1979-13' for key 'x' (strings need quotes)");
    EXPECT_ERR("x = 0x\n", 1, "invalid value '0x' for key 'x' (strings need quotes)");
    EXPECT_ERR("x = 7:32:00\n", 1, "invalid value '7:32:00' for key 'x' (strings need quotes)");
    rm_tmp();
}

TEST(err_duplicates)
{
    make_tmp();
    EXPECT_ERR("port = 1\nport = 2\n", 2, "duplicate key 'port'");
    EXPECT_ERR("port = 1\n\"port\" = 1\n", 2, "duplicate key 'port'");
    EXPECT_ERR("x = 1\ny = 2\nx = 3\n", 3, "duplicate key 'x'"); /* unknown keys too */
    EXPECT_ERR("[replication]\nenabled = true\nenabled = false\n", 3, "duplicate key 'enabled'");
    EXPECT_ERR("[replication]\n[anti_entropy]\n[replication]\n", 3,
               "table [replication] defined twice");
    EXPECT_ERR("[foo]\n[foo]\n", 2, "table [foo] defined twice");
    /* The line of the duplicate key, also when the first value spans lines. */
    EXPECT_ERR("[replication]\npeer_list = [\n\"a\",\n]\npeer_list = [\n\"b\"\n]\n", 5,
               "duplicate key 'peer_list'");
    /* An empty quoted key is a key like any other, not the table's own entry. */
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "[foo]\n\"\" = 1\n");
    conf_clear(&c);
    EXPECT_ERR("[foo]\n\"\" = 1\n'' = 2\n", 3, "duplicate key ''");
    /* The same key in different tables is fine (see merklekv_file: enabled, peer_list). */
    rm_tmp();
}

TEST(err_bad_integers)
{
    make_tmp();
    static const char msg[] = "port must be an integer in 0..65535";
    EXPECT_ERR("port = 12abc", 1, msg);
    EXPECT_ERR("port = 07379", 1, msg); /* leading zeros */
    EXPECT_ERR("port = -07", 1, msg);
    EXPECT_ERR("port = 1__0", 1, msg);
    EXPECT_ERR("port = _1", 1, msg);
    EXPECT_ERR("port = 1_", 1, msg);
    EXPECT_ERR("port = 0x10", 1, msg);
    EXPECT_ERR("port = 0o17", 1, msg);
    EXPECT_ERR("port = 7379.0", 1, msg);
    EXPECT_ERR("port = 1e3", 1, msg);
    EXPECT_ERR("port = +", 1, msg);
    EXPECT_ERR("port = -", 1, msg);
    EXPECT_ERR("port = ++1", 1, msg);
    EXPECT_ERR("port = inf", 1, msg);
    EXPECT_ERR("port = 1979-05-27", 1, msg);
    rm_tmp();
}

TEST(err_integer_out_of_64_bits)
{
    make_tmp();
    EXPECT_ERR("port = 9223372036854775808", 1, "integer out of range");
    EXPECT_ERR("port = -9223372036854775809", 1, "integer out of range");
    EXPECT_ERR("port = 18446744073709551615", 1, "integer out of range");
    EXPECT_ERR("port = 18446744073709551616", 1, "integer out of range");
    EXPECT_ERR("\n[foo]\nx = 99_999_999_999_999_999_999\n", 3, "integer out of range");
    EXPECT_ERR("[replication]\npeer_list = [1, 99999999999999999999]\n", 2, "integer out of range");
    rm_tmp();
}

TEST(err_values_out_of_range)
{
    make_tmp();
    EXPECT_ERR("port = 65536", 1, "port must be an integer in 0..65535");
    EXPECT_ERR("port = -1", 1, "port must be an integer in 0..65535");
    EXPECT_ERR("sync_interval_seconds = 0", 1,
               "sync_interval_seconds must be an integer in 1..31536000");
    EXPECT_ERR("sync_interval_seconds = 31536001", 1,
               "sync_interval_seconds must be an integer in 1..31536000");
    EXPECT_ERR("max_clients = 0", 1, "max_clients must be an integer in 1..1000000");
    EXPECT_ERR("max_clients = 1000001", 1, "max_clients must be an integer in 1..1000000");
    EXPECT_ERR("client_output_limit = 1023", 1,
               "client_output_limit must be an integer in 1024..9223372036854775807");
    EXPECT_ERR("client_output_limit = -9223372036854775808", 1,
               "client_output_limit must be an integer in 1024..9223372036854775807");
    EXPECT_ERR("[replication]\nmqtt_port = 0\n", 2,
               "replication.mqtt_port must be an integer in 1..65535");
    EXPECT_ERR("[replication]\nmqtt_port = 65536\n", 2,
               "replication.mqtt_port must be an integer in 1..65535");
    EXPECT_ERR("tombstone_ttl_seconds = -1", 1,
               "tombstone_ttl_seconds must be an integer in 0..3153600000");
    EXPECT_ERR("[replication]\nstall_timeout_seconds = 0\n", 2,
               "replication.stall_timeout_seconds must be an integer in 1..3600");
    EXPECT_ERR("[replication]\nstall_timeout_seconds = 3601\n", 2,
               "replication.stall_timeout_seconds must be an integer in 1..3600");
    EXPECT_ERR("[replication]\nmqtt_version = 4\n", 2,
               "replication.mqtt_version must be 5 (MQTT 5) or 3 (MQTT 3.1.1)");
    EXPECT_ERR("[replication]\nmqtt_version = \"5\"\n", 2,
               "replication.mqtt_version must be 5 (MQTT 5) or 3 (MQTT 3.1.1)");
    EXPECT_ERR("[anti_entropy]\ninterval_seconds = 0\n", 2,
               "anti_entropy.interval_seconds must be an integer in 1..86400");
    EXPECT_ERR("[anti_entropy]\ninterval_seconds = 86401\n", 2,
               "anti_entropy.interval_seconds must be an integer in 1..86400");
    EXPECT_ERR("[anti_entropy]\nsync_timeout_seconds = 0\n", 2,
               "anti_entropy.sync_timeout_seconds must be an integer in 1..3600");
    EXPECT_ERR("[anti_entropy]\nsync_timeout_seconds = 3601\n", 2,
               "anti_entropy.sync_timeout_seconds must be an integer in 1..3600");
    rm_tmp();
}

TEST(err_wrong_types)
{
    make_tmp();
    EXPECT_ERR("host = 1", 1, "host must be a string");
    EXPECT_ERR("host = true", 1, "host must be a string");
    EXPECT_ERR("host = [\"a\"]", 1, "host must be a string");
    EXPECT_ERR("host = { a = 1 }", 1, "host must be a string");
    EXPECT_ERR("storage_path = 5", 1, "storage_path must be a string");
    EXPECT_ERR("node_id = 5", 1, "node_id must be a string");
    EXPECT_ERR("port = \"7379\"", 1, "port must be an integer in 0..65535");
    EXPECT_ERR("port = true", 1, "port must be an integer in 0..65535");
    EXPECT_ERR("port = [7379]", 1, "port must be an integer in 0..65535");
    EXPECT_ERR("port = { a = 1 }", 1, "port must be an integer in 0..65535");
    EXPECT_ERR("fsync = 1", 1, "fsync must be \"normal\" or \"always\"");
    EXPECT_ERR("log_level = 1", 1, "log_level must be one of debug, info, warn, error");
    EXPECT_ERR("[replication]\nenabled = \"true\"\n", 2,
               "replication.enabled must be true or false");
    EXPECT_ERR("[replication]\nenabled = 1\n", 2, "replication.enabled must be true or false");
    EXPECT_ERR("[replication]\nenabled = True\n", 2, "replication.enabled must be true or false");
    EXPECT_ERR("[replication]\nmqtt_broker = 1\n", 2, "replication.mqtt_broker must be a string");
    EXPECT_ERR("[replication]\nmqtt_port = \"1883\"\n", 2,
               "replication.mqtt_port must be an integer in 1..65535");
    EXPECT_ERR("[replication]\ntopic_prefix = 1\n", 2, "replication.topic_prefix must be a string");
    EXPECT_ERR("[replication]\nclient_id = 1\n", 2, "replication.client_id must be a string");
    EXPECT_ERR("[replication]\nclient_password = 1\n", 2,
               "replication.client_password must be a string");
    EXPECT_ERR("[replication]\nusername = false\n", 2, "replication.username must be a string");
    EXPECT_ERR("[replication]\npeer_list = \"a\"\n", 2,
               "replication.peer_list must be an array of strings");
    EXPECT_ERR("[replication]\npeer_list = [\"a\", 1]\n", 2,
               "replication.peer_list must be an array of strings");
    EXPECT_ERR("[replication]\npeer_list = [[\"a\"]]\n", 2,
               "replication.peer_list must be an array of strings");
    EXPECT_ERR("[anti_entropy]\nenabled = 0\n", 2, "anti_entropy.enabled must be true or false");
    EXPECT_ERR("[anti_entropy]\ninterval_seconds = \"10\"\n", 2,
               "anti_entropy.interval_seconds must be an integer in 1..86400");
    EXPECT_ERR("[anti_entropy]\npeer_list = [true]\n", 2,
               "anti_entropy.peer_list must be an array of strings");
    rm_tmp();
}

TEST(err_bad_string_values)
{
    make_tmp();
    EXPECT_ERR("host = \"\"", 1, "host must not be empty");
    EXPECT_ERR("storage_path = ''", 1, "storage_path must not be empty");
    EXPECT_ERR("fsync = \"sometimes\"", 1, "fsync must be \"normal\" or \"always\"");
    EXPECT_ERR("fsync = \"Always\"", 1, "fsync must be \"normal\" or \"always\"");
    EXPECT_ERR("log_level = \"verbose\"", 1, "log_level must be one of debug, info, warn, error");
    static const char topic[] = "node_id must be printable ASCII without spaces, '/', '+' or '#'";
    EXPECT_ERR("node_id = \"\"", 1, "node_id must not be empty");
    EXPECT_ERR("node_id = \"a b\"", 1, topic);
    EXPECT_ERR("node_id = \"a/b\"", 1, topic);
    EXPECT_ERR("node_id = \"a+b\"", 1, topic);
    EXPECT_ERR("node_id = \"a#b\"", 1, topic);
    EXPECT_ERR("node_id = \"a\tb\"", 1, topic);
    EXPECT_ERR("node_id = \"\\u00e9\"", 1, topic);
    EXPECT_ERR("node_id = \"a\\u007fb\"", 1, topic);
    char text[300];
    snprintf(text, sizeof(text), "node_id = \"%0129d\"", 0);
    EXPECT_ERR(text, 1, "node_id must be at most 128 characters");
    EXPECT_ERR("[replication]\nclient_id = \"x/y\"\n", 2,
               "replication.client_id must be printable ASCII without spaces, '/', '+' or '#'");
    EXPECT_ERR("[replication]\nclient_id = ''\n", 2, "replication.client_id must not be empty");
    EXPECT_ERR("[replication]\nmqtt_broker = \"\"\n", 2,
               "replication.mqtt_broker must not be empty");
    EXPECT_ERR("[replication]\ntopic_prefix = \"\"\n", 2,
               "replication.topic_prefix must not be empty");
    EXPECT_ERR("[replication]\ntopic_prefix = \"a/+\"\n", 2,
               "replication.topic_prefix must not contain MQTT wildcards '+' or '#'");
    EXPECT_ERR("[replication]\ntopic_prefix = \"a/#\"\n", 2,
               "replication.topic_prefix must not contain MQTT wildcards '+' or '#'");
    /* The limits themselves are accepted. */
    struct conf c;
    conf_init(&c);
    snprintf(text, sizeof(text),
             "node_id = \"%0128d\"\n[replication]\ntopic_prefix = \"a/b\"\n"
             "client_password = \"\"\nusername = ''\nclient_id = \"~!\"\n",
             0);
    LOAD_OK(&c, text);
    ASSERT_EQ(strlen(c.node_id), 128);
    ASSERT_STR_EQ(c.topic_prefix, "a/b");
    ASSERT_STR_EQ(c.client_password, "");
    ASSERT_STR_EQ(c.mqtt_username, "");
    ASSERT_STR_EQ(c.client_id, "~!");
    conf_clear(&c);
    rm_tmp();
}

TEST(err_text_after_value)
{
    make_tmp();
    EXPECT_ERR("port = 7379 7380", 1, "unexpected text after value: '7380'");
    EXPECT_ERR("host = \"a\" \"b\"\n", 1, "unexpected text after value: '\"b\"'");
    EXPECT_ERR("host = \"a\"x", 1, "unexpected text after value: 'x'");
    EXPECT_ERR("port = 1 abcdefghijklmnopqrstuvwxyz\n", 1,
               "unexpected text after value: 'abcdefghijklmnopqrst'"); /* quotes 20 bytes */
    EXPECT_ERR("port = 1 x\r\nhost = \"h\"\r\n", 1, "unexpected text after value: 'x'");
    EXPECT_ERR("[replication]\nenabled = true false\n", 2, "unexpected text after value: 'false'");
    EXPECT_ERR("[replication] x\n", 1, "unexpected text after value: 'x'");
    EXPECT_ERR("[replication]\npeer_list = [\"a\"] ,\n", 2, "unexpected text after value: ','");
    EXPECT_ERR("x = 1979-05-27 07:32:00 x", 1, "unexpected text after value: 'x'");
    EXPECT_ERR("x = 1979-05-27 bar", 1, "unexpected text after value: 'bar'");
    rm_tmp();
}

TEST(err_tables)
{
    make_tmp();
    EXPECT_ERR("[[peers]]\n", 1, "arrays of tables are not supported");
    EXPECT_ERR("port = 1\n[replication", 2, "expected ']' after table name");
    EXPECT_ERR("[replication\nenabled = true\n", 1, "expected ']' after table name");
    EXPECT_ERR("[a b]\n", 1, "expected ']' after table name");
    EXPECT_ERR("[]\n", 1, "expected a key");
    EXPECT_ERR("[.x]\n", 1, "expected a key");
    rm_tmp();
}

TEST(err_arrays)
{
    make_tmp();
    EXPECT_ERR("[replication]\npeer_list = [\"a\",", 2, "unterminated array");
    EXPECT_ERR("[replication]\npeer_list = [\n  \"a\",\n", 4, "unterminated array");
    EXPECT_ERR("[replication]\npeer_list = [\n  \"a\",\n  \"b\"", 4,
               "expected ',' or ']' in array");
    EXPECT_ERR("[replication]\npeer_list = [\"a\" \"b\"]\n", 2, "expected ',' or ']' in array");
    EXPECT_ERR("[replication]\npeer_list = [\n  \"a\"\n  \"b\"\n]\n", 4,
               "expected ',' or ']' in array");
    EXPECT_ERR("[replication]\npeer_list = [,]\n", 2, "invalid value starting with ','");
    EXPECT_ERR("[replication]\npeer_list = [\"a\",,\"b\"]\n", 2, "invalid value starting with ','");
    /* Nesting: a string 16 arrays deep is fine, 17 is too deep. */
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "x = [[[[[[[[[[[[[[[[\"a\"]]]]]]]]]]]]]]]]\n");
    conf_clear(&c);
    EXPECT_ERR("x = [[[[[[[[[[[[[[[[[\"a\"]]]]]]]]]]]]]]]]]\n", 1, "values nested too deeply");
    EXPECT_ERR("x = [[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]\n", 1, "values nested too deeply");
    EXPECT_ERR("x = [[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]\n", 1, "values nested too deeply"); /* 17 */
    conf_init(&c);
    LOAD_OK(&c, "x = [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]\n"); /* 16 */
    conf_clear(&c);
    EXPECT_ERR("x = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", 1,
               "values nested too deeply");
    rm_tmp();
}

TEST(err_inline_tables)
{
    make_tmp();
    EXPECT_ERR("x = { a = 1", 1, "unterminated inline table");
    EXPECT_ERR("x = { a = 1\n}\n", 1, "unterminated inline table");
    EXPECT_ERR("x = { a = \"}\n", 1, "unterminated string");
    EXPECT_ERR("x = { a = [1, 2 }\n", 1, "expected ',' or ']' in array");
    rm_tmp();
}

TEST(err_in_unknown_tables_and_keys_still_fatal)
{
    make_tmp();
    EXPECT_ERR("[foo]\nbar = \"x\n", 2, "unterminated string");
    EXPECT_ERR("[foo]\nbar = \"\"\"x\"\"\"\n", 2, "multi-line strings are not supported");
    EXPECT_ERR("[foo]\nbar baz\n", 2, "expected '=' after key 'bar'");
    EXPECT_ERR("[foo]\nbar = 1 2\n", 2, "unexpected text after value: '2'");
    EXPECT_ERR("[foo]\n[[bar]]\n", 2, "arrays of tables are not supported");
    rm_tmp();
}

TEST(err_line_numbers)
{
    make_tmp();
    /* Lines are counted across comments, blank lines, CRLF and arrays spanning lines. */
    EXPECT_ERR("# c\n"
               "[anti_entropy]\n"
               "peer_list = [\n"
               "  \"a\",\n"
               "  # c\n"
               "\n"
               "  \"b\",\n"
               "]\n"
               "interval_seconds = 0\n",
               9, "anti_entropy.interval_seconds must be an integer in 1..86400");
    EXPECT_ERR("host = \"h\"\r\n\r\n# c\r\nport = 99999\r\n", 4,
               "port must be an integer in 0..65535");
    /* A bad value in a multi-line array is reported on the key's line. */
    EXPECT_ERR("[replication]\npeer_list = [\n  \"a\",\n  1,\n]\n", 2,
               "replication.peer_list must be an array of strings");
    /* The example in docs/configuration.md. */
    EXPECT_ERR("host = \"127.0.0.1\"\nport = 7379\n\n[replication]\nmqtt_port = 70000\n", 5,
               "replication.mqtt_port must be an integer in 1..65535");
    rm_tmp();
}

TEST(error_leaves_earlier_settings)
{
    /* Checking stops at the first error; earlier lines may already be applied. The caller exits,
     * so only freeing matters: conf_clear must release everything (ASan checks for leaks). */
    make_tmp();
    struct conf c;
    conf_init(&c);
    static const char text[] = "host = \"x\"\nunknown = 1\n[replication]\npeer_list = [\"a\"]\n"
                               "mqtt_port = 0\n";
    const char *path = write_file("e.toml", text, sizeof(text) - 1);
    struct conf_error err;
    memset(&err, 0, sizeof(err));
    ASSERT_EQ(conf_load_file(&c, path, &err), -EINVAL);
    ASSERT_EQ(err.line, 5);
    ASSERT_EQ(c.nwarnings, 1);
    conf_clear(&c);
    rm_tmp();
}

/* ---- every key, table-driven ---- */

/* Where a key's value lands in struct conf, for the tables below. */
#define FIELD(f) offsetof(struct conf, f), sizeof(((struct conf *) 0)->f)

enum key_kind { K_STR, K_INT, K_BOOL, K_LIST };

/* Every key of the file with the type it takes and the reason a value of another type gets
 * (without the "table.key " prefix). */
static const struct any_key {
    const char *table, *key;
    enum key_kind kind;
    const char *wrong_type;
} every_key[] = {
    { "", "host", K_STR, "must be a string" },
    { "", "port", K_INT, "must be an integer in 0..65535" },
    { "", "storage_path", K_STR, "must be a string" },
    { "", "engine", K_STR, "must be one of sqlite, memory (aliases: sled, rwlock, kv)" },
    { "", "sync_interval_seconds", K_INT, "must be an integer in 1..31536000" },
    { "", "fsync", K_STR, "must be \"normal\" or \"always\"" },
    { "", "max_clients", K_INT, "must be an integer in 1..1000000" },
    { "", "client_output_limit", K_INT, "must be an integer in 1024..9223372036854775807" },
    { "", "log_level", K_STR, "must be one of debug, info, warn, error" },
    { "", "node_id", K_STR, "must be a string" },
    { "", "tombstone_ttl_seconds", K_INT, "must be an integer in 0..3153600000" },
    { "replication", "enabled", K_BOOL, "must be true or false" },
    { "replication", "mqtt_broker", K_STR, "must be a string" },
    { "replication", "mqtt_port", K_INT, "must be an integer in 1..65535" },
    { "replication", "topic_prefix", K_STR, "must be a string" },
    { "replication", "client_id", K_STR, "must be a string" },
    { "replication", "client_password", K_STR, "must be a string" },
    { "replication", "username", K_STR, "must be a string" },
    { "replication", "peer_list", K_LIST, "must be an array of strings" },
    { "replication", "tls_ca_file", K_STR, "must be a string" },
    { "replication", "tls_cert_file", K_STR, "must be a string" },
    { "replication", "tls_key_file", K_STR, "must be a string" },
    { "replication", "keepalive_seconds", K_INT, "must be an integer in 1..3600" },
    { "replication", "mqtt_version", K_INT, "must be 5 (MQTT 5) or 3 (MQTT 3.1.1)" },
    { "replication", "wire", K_STR, "must be \"cbor\" or \"merklekv\"" },
    { "replication", "batch_max_events", K_INT, "must be an integer in 1..100000" },
    { "replication", "max_inflight", K_INT, "must be an integer in 1..60000" },
    { "replication", "outbox_max_events", K_INT, "must be an integer in 1..9223372036854775807" },
    { "replication", "max_clock_skew_seconds", K_INT, "must be an integer in 1..31536000" },
    { "replication", "reconnect_max_seconds", K_INT, "must be an integer in 1..3600" },
    { "replication", "stall_timeout_seconds", K_INT, "must be an integer in 1..3600" },
    { "anti_entropy", "enabled", K_BOOL, "must be true or false" },
    { "anti_entropy", "interval_seconds", K_INT, "must be an integer in 1..86400" },
    { "anti_entropy", "peer_list", K_LIST, "must be an array of strings" },
    { "anti_entropy", "fanout", K_INT, "must be an integer in 2..256" },
    { "anti_entropy", "depth", K_INT, "must be an integer in 1..8" },
    { "anti_entropy", "sync_timeout_seconds", K_INT, "must be an integer in 1..3600" },
};

/* Every integer key with a plain range, and its field. */
static const struct int_key {
    const char *table, *key;
    int64_t lo, hi;
    size_t off, size;
} int_keys[] = {
    { "", "port", 0, 65535, FIELD(port) },
    { "", "sync_interval_seconds", 1, 31536000, FIELD(sync_interval_seconds) },
    { "", "max_clients", 1, 1000000, FIELD(max_clients) },
    { "", "client_output_limit", 1024, INT64_MAX, FIELD(client_output_limit) },
    { "", "tombstone_ttl_seconds", 0, 3153600000, FIELD(tombstone_ttl_seconds) },
    { "replication", "mqtt_port", 1, 65535, FIELD(mqtt_port) },
    { "replication", "keepalive_seconds", 1, 3600, FIELD(keepalive_seconds) },
    { "replication", "batch_max_events", 1, 100000, FIELD(batch_max_events) },
    { "replication", "max_inflight", 1, 60000, FIELD(max_inflight) },
    { "replication", "outbox_max_events", 1, INT64_MAX, FIELD(outbox_max_events) },
    { "replication", "max_clock_skew_seconds", 1, 31536000, FIELD(max_clock_skew_seconds) },
    { "replication", "reconnect_max_seconds", 1, 3600, FIELD(reconnect_max_seconds) },
    { "replication", "stall_timeout_seconds", 1, 3600, FIELD(stall_timeout_seconds) },
    { "anti_entropy", "interval_seconds", 1, 86400, FIELD(ae_interval_seconds) },
    { "anti_entropy", "fanout", 2, 256, FIELD(merkle_fanout) },
    { "anti_entropy", "depth", 1, 8, FIELD(merkle_depth) },
    { "anti_entropy", "sync_timeout_seconds", 1, 3600, FIELD(sync_timeout_seconds) },
};

static int64_t field_int(const struct conf *c, size_t off, size_t size)
{
    const char *p = (const char *) c + off;
    if (size == sizeof(int)) {
        int v;
        memcpy(&v, p, sizeof(v));
        return v;
    }
    ASSERT_EQ(size, sizeof(int64_t));
    int64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* "# comment\n[table]\nkey = value\n" (or a blank line for the top level): the key is on line 3,
 * so an error that names line 3 names the key's own line. */
static const char *key_text(char *out, size_t n, const char *table, const char *key,
                            const char *value)
{
    int len;
    if (*table)
        len = snprintf(out, n, "# comment\n[%s]\n%s = %s\n", table, key, value);
    else
        len = snprintf(out, n, "# comment\n\n%s = %s\n", key, value);
    ASSERT(len > 0 && (size_t) len < n);
    return out;
}

/* "table.key reason" or "key reason", as the reader words its errors. */
static const char *key_reason(char *out, size_t n, const char *table, const char *key,
                              const char *reason)
{
    int len = snprintf(out, n, "%s%s%s %s", table, *table ? "." : "", key, reason);
    ASSERT(len > 0 && (size_t) len < n);
    return out;
}

TEST(every_int_key_range)
{
    make_tmp();
    for (size_t i = 0; i < sizeof(int_keys) / sizeof(int_keys[0]); i++) {
        const struct int_key *k = &int_keys[i];
        char text[256], reason[256], num[32];
        char want[128];
        snprintf(want, sizeof(want), "must be an integer in %lld..%lld", (long long) k->lo,
                 (long long) k->hi);
        key_reason(reason, sizeof(reason), k->table, k->key, want);
        /* Both limits are accepted and land in the key's own field. */
        struct conf c;
        conf_init(&c);
        snprintf(num, sizeof(num), "%lld", (long long) k->lo);
        LOAD_OK(&c, key_text(text, sizeof(text), k->table, k->key, num));
        ASSERT_EQ(field_int(&c, k->off, k->size), k->lo);
        conf_clear(&c);
        conf_init(&c);
        snprintf(num, sizeof(num), "%lld", (long long) k->hi);
        LOAD_OK(&c, key_text(text, sizeof(text), k->table, k->key, num));
        ASSERT_EQ(field_int(&c, k->off, k->size), k->hi);
        conf_clear(&c);
        /* One below and one above are refused, naming the file and the key's line. */
        snprintf(num, sizeof(num), "%lld", (long long) k->lo - 1);
        EXPECT_ERR(key_text(text, sizeof(text), k->table, k->key, num), 3, reason);
        EXPECT_ERR(key_text(text, sizeof(text), k->table, k->key, "-9223372036854775808"), 3,
                   reason);
        if (k->hi < INT64_MAX) {
            snprintf(num, sizeof(num), "%lld", (long long) k->hi + 1);
            EXPECT_ERR(key_text(text, sizeof(text), k->table, k->key, num), 3, reason);
            EXPECT_ERR(key_text(text, sizeof(text), k->table, k->key, "9223372036854775807"), 3,
                       reason);
        }
    }
    rm_tmp();
}

TEST(every_key_refuses_other_types)
{
    make_tmp();
    /* For each kind of key, values of each other TOML type (and a float, a date and an inline
     * table, which the reader keeps opaque). */
    static const char *const not_str[] = { "1",          "true",      "[\"a\"]", "1.5",
                                           "1979-05-27", "{ a = 1 }", NULL };
    static const char *const not_int[] = { "\"1\"",    "true",      "[1]", "1.5",
                                           "07:32:00", "{ a = 1 }", NULL };
    static const char *const not_bool[] = { "\"true\"",   "1",         "[true]", "1.5",
                                            "1979-05-27", "{ a = 1 }", NULL };
    static const char *const not_list[] = { "\"a\"",     "1",   "true",      "[1]", "[\"a\", 1]",
                                            "[[\"a\"]]", "1.5", "{ a = 1 }", NULL };
    for (size_t i = 0; i < sizeof(every_key) / sizeof(every_key[0]); i++) {
        const struct any_key *k = &every_key[i];
        const char *const *bad = k->kind == K_STR    ? not_str
                                 : k->kind == K_INT  ? not_int
                                 : k->kind == K_BOOL ? not_bool
                                                     : not_list;
        char text[256], reason[256];
        key_reason(reason, sizeof(reason), k->table, k->key, k->wrong_type);
        for (const char *const *v = bad; *v; v++)
            EXPECT_ERR(key_text(text, sizeof(text), k->table, k->key, *v), 3, reason);
    }
    rm_tmp();
}

TEST(every_key_is_known_only_in_its_table)
{
    make_tmp();
    static const char *const tables[] = { "", "replication", "anti_entropy" };
    for (size_t i = 0; i < sizeof(every_key) / sizeof(every_key[0]); i++) {
        const struct any_key *k = &every_key[i];
        for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
            bool also_there = false; /* "enabled" and "peer_list" are in two tables */
            for (size_t j = 0; j < sizeof(every_key) / sizeof(every_key[0]); j++)
                also_there |=
                        !strcmp(every_key[j].table, tables[t]) && !strcmp(every_key[j].key, k->key);
            if (also_there) continue;
            struct conf c;
            conf_init(&c);
            char text[256];
            /* A value of a type the key would refuse: in another table it is only unknown. */
            const char *path = LOAD_OK(&c, key_text(text, sizeof(text), tables[t], k->key, "1.5"));
            ASSERT_EQ(c.nwarnings, 1);
            EXPECT_WARNING(&c, 0, "%s:3: unknown key '%s'%s%s%s", path, k->key,
                           *tables[t] ? " in [" : "", tables[t], *tables[t] ? "]" : "");
            conf_clear(&c);
        }
    }
    rm_tmp();
}

TEST(every_key_set_from_file)
{
    make_tmp();
    const char *ca = write_file("ca.pem", "ca\n", 3);
    const char *cert = write_file("cert.pem", "cert\n", 5);
    const char *key = write_file("key.pem", "key\n", 4);
    char text[2048];
    int len = snprintf(text, sizeof(text),
                       "host = \"h\"\nport = 1\nstorage_path = \"s\"\nengine = \"memory\"\n"
                       "sync_interval_seconds = 2\nfsync = \"always\"\nmax_clients = 3\n"
                       "client_output_limit = 4096\nlog_level = \"error\"\nnode_id = \"n\"\n"
                       "tombstone_ttl_seconds = 5\n"
                       "[replication]\nenabled = true\nmqtt_broker = \"b\"\nmqtt_port = 6\n"
                       "topic_prefix = \"t\"\nclient_id = \"ci\"\nclient_password = \"pw\"\n"
                       "username = \"u\"\npeer_list = [\"p\"]\ntls_ca_file = \"%s\"\n"
                       "tls_cert_file = \"%s\"\ntls_key_file = \"%s\"\nkeepalive_seconds = 7\n"
                       "mqtt_version = 3\nwire = \"merklekv\"\nbatch_max_events = 8\n"
                       "max_inflight = 9\noutbox_max_events = 10\nmax_clock_skew_seconds = 11\n"
                       "reconnect_max_seconds = 12\nstall_timeout_seconds = 13\n"
                       "[anti_entropy]\nenabled = false\ninterval_seconds = 14\n"
                       "peer_list = [\"q\", \"r\"]\nfanout = 32\ndepth = 2\n"
                       "sync_timeout_seconds = 15\n",
                       ca, cert, key);
    ASSERT(len > 0 && (size_t) len < sizeof(text));
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, text);
    ASSERT_EQ(c.nwarnings, 0);
    ASSERT_STR_EQ(c.host, "h");
    ASSERT_EQ(c.port, 1);
    ASSERT_STR_EQ(c.storage_path, "s");
    ASSERT_EQ(c.engine, CONF_ENGINE_MEMORY);
    ASSERT_EQ(c.sync_interval_seconds, 2);
    ASSERT_EQ(c.fsync, CONF_FSYNC_ALWAYS);
    ASSERT_EQ(c.max_clients, 3);
    ASSERT_EQ(c.client_output_limit, 4096);
    ASSERT_EQ(c.log_level, LOG_ERROR);
    ASSERT_STR_EQ(c.node_id, "n");
    ASSERT_EQ(c.tombstone_ttl_seconds, 5);
    ASSERT(c.repl_enabled);
    ASSERT_STR_EQ(c.mqtt_broker, "b");
    ASSERT_EQ(c.mqtt_port, 6);
    ASSERT_STR_EQ(c.topic_prefix, "t");
    ASSERT_STR_EQ(c.client_id, "ci");
    ASSERT_STR_EQ(c.client_password, "pw");
    ASSERT_STR_EQ(c.mqtt_username, "u");
    EXPECT_LIST(c.repl_peer_list, "p");
    ASSERT_STR_EQ(c.tls_ca_file, ca);
    ASSERT_STR_EQ(c.tls_cert_file, cert);
    ASSERT_STR_EQ(c.tls_key_file, key);
    ASSERT_EQ(c.keepalive_seconds, 7);
    ASSERT_EQ(c.mqtt_version, 3);
    ASSERT(c.wire_merklekv);
    ASSERT_EQ(c.batch_max_events, 8);
    ASSERT_EQ(c.max_inflight, 9);
    ASSERT_EQ(c.outbox_max_events, 10);
    ASSERT_EQ(c.max_clock_skew_seconds, 11);
    ASSERT_EQ(c.reconnect_max_seconds, 12);
    ASSERT_EQ(c.stall_timeout_seconds, 13);
    ASSERT(!c.ae_enabled);
    ASSERT_EQ(c.ae_interval_seconds, 14);
    EXPECT_LIST(c.ae_peer_list, "q", "r");
    ASSERT_EQ(c.merkle_fanout, 32);
    ASSERT_EQ(c.merkle_depth, 2);
    ASSERT_EQ(c.sync_timeout_seconds, 15);
    /* A second file replaces strings and lists (ASan: the old values are freed). */
    len = snprintf(text, sizeof(text),
                   "host = \"h2\"\nnode_id = \"n2\"\n[replication]\npeer_list = []\n"
                   "tls_ca_file = '%s'\n[anti_entropy]\npeer_list = ['s']\n",
                   key);
    ASSERT(len > 0 && (size_t) len < sizeof(text));
    LOAD_OK(&c, text);
    ASSERT_STR_EQ(c.tls_ca_file, key);
    ASSERT_STR_EQ(c.host, "h2");
    ASSERT_STR_EQ(c.node_id, "n2");
    ASSERT(c.repl_peer_list != NULL && c.repl_peer_list[0] == NULL);
    EXPECT_LIST(c.ae_peer_list, "s");
    conf_clear(&c);
    rm_tmp();
}

TEST(special_values)
{
    make_tmp();
    /* fanout: a power of two within its range. */
    static const char pow2[] =
            "anti_entropy.fanout must be a power of two (2, 4, 8, 16, 32, 64, 128 or 256)";
    EXPECT_ERR("[anti_entropy]\nfanout = 3\n", 2, pow2);
    EXPECT_ERR("[anti_entropy]\nfanout = 100\n", 2, pow2);
    EXPECT_ERR("[anti_entropy]\nfanout = 255\n", 2, pow2);
    struct conf c;
    conf_init(&c);
    for (int f = 2; f <= 256; f *= 2) {
        char text[64];
        snprintf(text, sizeof(text), "[anti_entropy]\nfanout = %d\n", f);
        LOAD_OK(&c, text);
        ASSERT_EQ(c.merkle_fanout, f);
    }
    /* mqtt_version: 3 or 5, nothing between. */
    static const char ver[] = "replication.mqtt_version must be 5 (MQTT 5) or 3 (MQTT 3.1.1)";
    EXPECT_ERR("[replication]\nmqtt_version = 2\n", 2, ver);
    EXPECT_ERR("[replication]\nmqtt_version = 6\n", 2, ver);
    EXPECT_ERR("[replication]\nmqtt_version = 311\n", 2, ver);
    /* wire: exactly "cbor" or "merklekv". */
    static const char wire[] = "replication.wire must be \"cbor\" or \"merklekv\"";
    EXPECT_ERR("[replication]\nwire = \"json\"\n", 2, wire);
    EXPECT_ERR("[replication]\nwire = \"CBOR\"\n", 2, wire);
    EXPECT_ERR("[replication]\nwire = \"\"\n", 2, wire);
    LOAD_OK(&c, "[replication]\nwire = 'merklekv'\n");
    ASSERT(c.wire_merklekv);
    LOAD_OK(&c, "[replication]\nwire = \"cbor\"\n");
    ASSERT(!c.wire_merklekv);
    /* TLS files must be readable when the file is loaded. */
    const char *missing = tmp_path("missing.pem");
    static const char *const tls[] = { "tls_ca_file", "tls_cert_file", "tls_key_file" };
    for (size_t i = 0; i < sizeof(tls) / sizeof(tls[0]); i++) {
        char text[512], reason[512];
        snprintf(text, sizeof(text), "[replication]\n\n%s = \"%s\"\n", tls[i], missing);
        snprintf(reason, sizeof(reason),
                 "replication.%s cannot read '%s': No such file or directory", tls[i], missing);
        EXPECT_ERR(text, 3, reason);
    }
    EXPECT_ERR("[replication]\ntls_ca_file = \"\"\n", 2,
               "replication.tls_ca_file cannot read '': No such file or directory");
    conf_clear(&c);
    rm_tmp();
}

/* ---- command line ---- */

TEST(args_every_option)
{
    struct conf c;
    conf_init(&c);
    const char *action;
    struct conf_error err;
    ASSERT_OK(APPLY(&c, &action, &err, "--host", "0.0.0.0", "--port", "7000", "--storage-path",
                    "/srv/d", "--engine", "rwlock", "--node-id", "n1", "--log-level", "debug"));
    ASSERT(action == NULL);
    ASSERT_STR_EQ(c.host, "0.0.0.0");
    ASSERT_EQ(c.port, 7000);
    ASSERT_STR_EQ(c.storage_path, "/srv/d");
    ASSERT_EQ(c.engine, CONF_ENGINE_MEMORY);
    ASSERT_STR_EQ(c.node_id, "n1");
    ASSERT_EQ(c.log_level, LOG_DEBUG);
    ASSERT_OK(APPLY(&c, &action, &err, "--engine", "sled", "--log-level", "WARNING"));
    ASSERT_EQ(c.engine, CONF_ENGINE_SQLITE);
    ASSERT_EQ(c.log_level, LOG_WARN);
    ASSERT_OK(APPLY(&c, &action, &err, "--engine", "kv"));
    ASSERT_EQ(c.engine, CONF_ENGINE_MEMORY);
    ASSERT_OK(APPLY(&c, &action, &err, "--engine", "sqlite"));
    ASSERT_EQ(c.engine, CONF_ENGINE_SQLITE);
    ASSERT_OK(APPLY(&c, &action, &err, "--engine", "memory"));
    ASSERT_EQ(c.engine, CONF_ENGINE_MEMORY);
    conf_clear(&c);
}

TEST(args_equals_form)
{
    struct conf c;
    conf_init(&c);
    const char *action;
    struct conf_error err;
    ASSERT_OK(APPLY(&c, &action, &err, "--host=::1", "--port=0", "--storage-path=x=y",
                    "--engine=memory", "--node-id=n2", "--log-level=error"));
    ASSERT(action == NULL);
    ASSERT_STR_EQ(c.host, "::1");
    ASSERT_EQ(c.port, 0);
    ASSERT_STR_EQ(c.storage_path, "x=y"); /* split at the first '=' */
    ASSERT_EQ(c.engine, CONF_ENGINE_MEMORY);
    ASSERT_STR_EQ(c.node_id, "n2");
    ASSERT_EQ(c.log_level, LOG_ERROR);
    ASSERT_OK(APPLY(&c, &action, &err, "--port", "1", "--port=2", "--port", "3"));
    ASSERT_EQ(c.port, 3); /* the last one wins */
    ASSERT_OK(APPLY(&c, &action, &err, "--port=65535"));
    ASSERT_EQ(c.port, 65535);
    ASSERT_OK(apply_list(&c, &action, &err, (const char *const[]){ NULL })); /* no options */
    ASSERT(action == NULL);
    conf_clear(&c);
}

TEST(args_override_file)
{
    make_tmp();
    struct conf c;
    conf_init(&c);
    LOAD_OK(&c, "host = \"filehost\"\nport = 1111\nstorage_path = \"filedir\"\n"
                "engine = \"memory\"\nnode_id = \"filenode\"\nlog_level = \"error\"\n");
    const char *action;
    struct conf_error err;
    ASSERT_OK(APPLY(&c, &action, &err, "--port", "2222", "--engine=sqlite", "--node-id", "cli"));
    ASSERT_EQ(c.port, 2222);
    ASSERT_EQ(c.engine, CONF_ENGINE_SQLITE);
    ASSERT_STR_EQ(c.node_id, "cli");
    ASSERT_STR_EQ(c.host, "filehost");
    ASSERT_STR_EQ(c.storage_path, "filedir");
    ASSERT_EQ(c.log_level, LOG_ERROR);
    conf_clear(&c);
    rm_tmp();
}

TEST(args_config_is_skipped)
{
    struct conf c;
    conf_init(&c);
    const char *action;
    struct conf_error err;
    ASSERT_OK(APPLY(&c, &action, &err, "--config", "/nonexistent.toml", "--port", "5"));
    ASSERT_EQ(c.port, 5);
    ASSERT_OK(APPLY(&c, &action, &err, "--config=/x.toml", "--port=6"));
    ASSERT_EQ(c.port, 6);
    ASSERT_OK(APPLY(&c, &action, &err, "--port", "7", "--config", "--port"));
    ASSERT_EQ(c.port, 7); /* "--port" was --config's value */
    ASSERT_OK(
            APPLY(&c, &action, &err, "--config")); /* conf_config_path reports the missing value */
    ASSERT(action == NULL);
    conf_clear(&c);
}

TEST(args_help_and_version)
{
    struct conf c;
    conf_init(&c);
    const char *action;
    struct conf_error err;
    ASSERT_EQ(APPLY(&c, &action, &err, "--help"), 1);
    ASSERT_STR_EQ(action, "help");
    ASSERT_EQ(APPLY(&c, &action, &err, "-h"), 1);
    ASSERT_STR_EQ(action, "help");
    ASSERT_EQ(APPLY(&c, &action, &err, "--version"), 1);
    ASSERT_STR_EQ(action, "version");
    ASSERT_EQ(APPLY(&c, &action, &err, "-V"), 1);
    ASSERT_STR_EQ(action, "version");
    /* Wherever they appear, before any other option is checked or applied. */
    ASSERT_EQ(APPLY(&c, &action, &err, "--port", "9", "--bogus", "--port=99999", "--help"), 1);
    ASSERT_STR_EQ(action, "help");
    ASSERT_EQ(c.port, 7379);
    ASSERT_EQ(APPLY(&c, &action, &err, "--port", "--version"), 1);
    ASSERT_STR_EQ(action, "version");
    ASSERT_EQ(APPLY(&c, &action, &err, "--version", "--help"), 1);
    ASSERT_STR_EQ(action, "version"); /* the first one wins */
    ASSERT_EQ(APPLY(&c, &action, &err, "--help", "--version"), 1);
    ASSERT_STR_EQ(action, "help");
    check_defaults(&c);
    conf_clear(&c);
}

TEST(args_unknown_options)
{
    EXPECT_ARGS_ERR("unknown option '--bogus' (see --help)", "--bogus");
    EXPECT_ARGS_ERR("unknown option '--bogus' (see --help)", "--bogus=1");
    EXPECT_ARGS_ERR("unknown option '--bogus' (see --help)", "--port", "1", "--bogus", "x");
    EXPECT_ARGS_ERR("unknown option 'extra' (see --help)", "extra");
    EXPECT_ARGS_ERR("unknown option '-p' (see --help)", "-p", "1");
    EXPECT_ARGS_ERR("unknown option '--Port' (see --help)", "--Port", "1");
    EXPECT_ARGS_ERR("unknown option '--configx' (see --help)", "--configx", "a");
    EXPECT_ARGS_ERR("unknown option '--fsync' (see --help)", "--fsync", "always");
    EXPECT_ARGS_ERR("unknown option '--help' (see --help)", "--help=1"); /* takes no value */
    EXPECT_ARGS_ERR("unknown option '' (see --help)", "");
}

TEST(args_missing_value)
{
    EXPECT_ARGS_ERR("option '--port' requires a value", "--port");
    EXPECT_ARGS_ERR("option '--host' requires a value", "--host");
    EXPECT_ARGS_ERR("option '--engine' requires a value", "--port", "1", "--engine");
    EXPECT_ARGS_ERR("option '--log-level' requires a value", "--log-level");
}

TEST(args_bad_values)
{
    static const char port[] = "--port must be an integer in 0..65535";
    EXPECT_ARGS_ERR(port, "--port", "70000");
    EXPECT_ARGS_ERR(port, "--port", "65536");
    EXPECT_ARGS_ERR(port, "--port", "-1");
    EXPECT_ARGS_ERR(port, "--port", "abc");
    EXPECT_ARGS_ERR(port, "--port", "12x");
    EXPECT_ARGS_ERR(port, "--port", "0x10");
    EXPECT_ARGS_ERR(port, "--port", "1.5");
    EXPECT_ARGS_ERR(port, "--port=");
    EXPECT_ARGS_ERR(port, "--port", "");
    EXPECT_ARGS_ERR(port, "--port", "99999999999999999999");
    EXPECT_ARGS_ERR("--host must not be empty", "--host=");
    EXPECT_ARGS_ERR("--storage-path must not be empty", "--storage-path", "");
    EXPECT_ARGS_ERR("--engine must be one of sqlite, memory (aliases: sled, rwlock, kv)",
                    "--engine", "rocksdb");
    EXPECT_ARGS_ERR("--node-id must be printable ASCII without spaces, '/', '+' or '#'",
                    "--node-id", "a/b");
    EXPECT_ARGS_ERR("--node-id must not be empty", "--node-id=");
    EXPECT_ARGS_ERR("--log-level must be one of debug, info, warn, error", "--log-level", "loud");
    /* Errors stop at the first bad option. */
    EXPECT_ARGS_ERR(port, "--port", "x", "--bogus");
}

TEST(config_path)
{
    bool bad = true;
    struct args a = make_args((const char *const[]){ "--port", "1", NULL });
    ASSERT(conf_config_path(a.argc, a.argv, &bad) == NULL);
    ASSERT(!bad);
    free_args(&a);

    a = make_args((const char *const[]){ "--config", "a.toml", "--port", "1", NULL });
    ASSERT(conf_config_path(a.argc, a.argv, &bad) == a.argv[2]); /* a borrow, not a copy */
    ASSERT(!bad);
    free_args(&a);

    a = make_args((const char *const[]){ "--port=1", "--config=b.toml", NULL });
    ASSERT(conf_config_path(a.argc, a.argv, &bad) == a.argv[2] + 9);
    ASSERT_STR_EQ(conf_config_path(a.argc, a.argv, &bad), "b.toml");
    free_args(&a);

    a = make_args((const char *const[]){ "--config", "a.toml", "--config=b.toml", "--config", "c",
                                         NULL });
    ASSERT_STR_EQ(conf_config_path(a.argc, a.argv, &bad), "c"); /* the last one wins */
    ASSERT(!bad);
    free_args(&a);

    a = make_args((const char *const[]){ "--config", NULL });
    bad = false;
    ASSERT(conf_config_path(a.argc, a.argv, &bad) == NULL);
    ASSERT(bad);
    free_args(&a);

    a = make_args((const char *const[]){ "--config", "a.toml", "--config", NULL });
    bad = false;
    ASSERT(conf_config_path(a.argc, a.argv, &bad) == NULL);
    ASSERT(bad);
    free_args(&a);

    a = make_args((const char *const[]){ "--config=", NULL });
    ASSERT_STR_EQ(conf_config_path(a.argc, a.argv, &bad), "");
    ASSERT(!bad);
    free_args(&a);

    char *none[] = { NULL };
    ASSERT(conf_config_path(0, none, &bad) == NULL);
    ASSERT(!bad);
}

TEST_LIST{
    TEST_ENTRY(defaults),
    TEST_ENTRY(empty_and_comment_only_files_keep_defaults),
    TEST_ENTRY(clear_is_idempotent),
    TEST_ENTRY(merklekv_file),
    TEST_ENTRY(arborkv_keys),
    TEST_ENTRY(later_file_overrides_earlier),
    TEST_ENTRY(comments_blank_lines_crlf_and_bom),
    TEST_ENTRY(literal_strings),
    TEST_ENTRY(basic_string_escapes),
    TEST_ENTRY(unicode_escapes),
    TEST_ENTRY(integers),
    TEST_ENTRY(booleans),
    TEST_ENTRY(arrays),
    TEST_ENTRY(quoted_keys_and_table_names),
    TEST_ENTRY(engine_aliases),
    TEST_ENTRY(unknown_keys_and_tables_warn),
    TEST_ENTRY(unknown_keys_accept_other_toml_values),
    TEST_ENTRY(warnings_accumulate_across_files),
    TEST_ENTRY(missing_file),
    TEST_ENTRY(directory_is_unreadable),
    TEST_ENTRY(nul_bytes_refused),
    TEST_ENTRY(size_limit),
    TEST_ENTRY(err_unterminated_string),
    TEST_ENTRY(err_bad_escapes),
    TEST_ENTRY(err_control_characters_in_strings),
    TEST_ENTRY(err_multi_line_strings),
    TEST_ENTRY(err_keys_and_equals),
    TEST_ENTRY(err_bare_words_in_unknown_keys),
    TEST_ENTRY(err_duplicates),
    TEST_ENTRY(err_bad_integers),
    TEST_ENTRY(err_integer_out_of_64_bits),
    TEST_ENTRY(err_values_out_of_range),
    TEST_ENTRY(err_wrong_types),
    TEST_ENTRY(err_bad_string_values),
    TEST_ENTRY(err_text_after_value),
    TEST_ENTRY(err_tables),
    TEST_ENTRY(err_arrays),
    TEST_ENTRY(err_inline_tables),
    TEST_ENTRY(err_in_unknown_tables_and_keys_still_fatal),
    TEST_ENTRY(err_line_numbers),
    TEST_ENTRY(error_leaves_earlier_settings),
    TEST_ENTRY(every_int_key_range),
    TEST_ENTRY(every_key_refuses_other_types),
    TEST_ENTRY(every_key_is_known_only_in_its_table),
    TEST_ENTRY(every_key_set_from_file),
    TEST_ENTRY(special_values),
    TEST_ENTRY(args_every_option),
    TEST_ENTRY(args_equals_form),
    TEST_ENTRY(args_override_file),
    TEST_ENTRY(args_config_is_skipped),
    TEST_ENTRY(args_help_and_version),
    TEST_ENTRY(args_unknown_options),
    TEST_ENTRY(args_missing_value),
    TEST_ENTRY(args_bad_values),
    TEST_ENTRY(config_path),
};

TEST_MAIN()
