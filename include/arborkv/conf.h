/* SPDX-License-Identifier: MIT */
/*
 * conf: the server configuration as a plain struct with a four-call life cycle:
 *   conf_init(&c)                          every default;
 *   conf_load_file(&c, path, &err)         overlay a MerkleKV-format TOML file;
 *   conf_apply_args(&c, argc, argv, &err)  overlay the command line;
 *   conf_clear(&c)                         free.
 * CLI beats file beats defaults. Errors carry file, line and reason; main.c prints them and
 * exits 2. Unknown keys are collected as warnings (never errors). docs/configuration.md
 * documents every key.
 *
 * The TOML subset read: comments (#), blank lines, [table] headers, `key = value` with values
 * that are basic strings ("..." with \\ \" \n \t \r \b \f \uXXXX \UXXXXXXXX escapes), literal
 * strings ('...'), integers (decimal with optional sign and _ separators), booleans, and arrays of
 * strings (single line or spanning lines, trailing comma allowed).
 */
#ifndef ARBORKV_CONF_H
#define ARBORKV_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum conf_engine { CONF_ENGINE_SQLITE = 0, CONF_ENGINE_MEMORY = 1 };
enum conf_fsync { CONF_FSYNC_NORMAL = 0, CONF_FSYNC_ALWAYS = 1 };

struct conf_error {
    char file[256];   /* file the error is in, or "command line" */
    int line;         /* 1-based line number, 0 when not applicable */
    char reason[512]; /* human-readable reason, no trailing newline */
};

struct conf {
    /* top level (MerkleKV keys) */
    char *host;                /* listen address; default "127.0.0.1" */
    int port;                  /* listen port 0..65535 (0 = ephemeral); default 7379 */
    char *storage_path;        /* data directory; default "data" */
    enum conf_engine engine;   /* default sqlite; "sled" -> sqlite, "rwlock"/"kv" -> memory */
    int sync_interval_seconds; /* MerkleKV key; accepted, used by anti-entropy; default 60 */
    /* top level (arborkv keys) */
    enum conf_fsync fsync;         /* "normal" (default) or "always" */
    int max_clients;               /* simultaneous client connections; default 10000 */
    int64_t client_output_limit;   /* bytes of unread output before disconnect; default 64 MiB */
    int log_level;                 /* enum log_level; default LOG_INFO */
    char *node_id;                 /* node id; default NULL = derived (see docs) */
    int64_t tombstone_ttl_seconds; /* tombstone purge age; default 7 days, 0 = never */
    /* [replication] */
    bool repl_enabled;              /* default false */
    char *mqtt_broker;              /* default "127.0.0.1" */
    int mqtt_port;                  /* default 1883 */
    char *topic_prefix;             /* default "arborkv" */
    char *client_id;                /* MerkleKV key; default NULL (= node_id) */
    char *client_password;          /* default NULL */
    char *mqtt_username;            /* key "username"; default NULL */
    char **repl_peer_list;          /* NULL-terminated array or NULL; accepted, unused */
    char *tls_ca_file;              /* TLS (ssl://) when set; default NULL */
    char *tls_cert_file;            /* client certificate; default NULL */
    char *tls_key_file;             /* client key; default NULL */
    int64_t keepalive_seconds;      /* MQTT keep-alive; default 30 */
    bool wire_merklekv;             /* wire = "merklekv"; default false ("cbor") */
    int64_t mqtt_version;           /* 5 (default) or 3 (MQTT 3.1.1) */
    int64_t batch_max_events;       /* events per message; default 1000 */
    int64_t max_inflight;           /* unacknowledged outbox messages; default 256 */
    int64_t outbox_max_events;      /* outbox bound; default 1,000,000 */
    int64_t max_clock_skew_seconds; /* HLC guard (replication.md §1); default 60 */
    int64_t reconnect_max_seconds;  /* reconnect backoff cap; default 30 */
    int64_t stall_timeout_seconds;  /* a link without progress this long is replaced; 5 */
    /* [anti_entropy] */
    bool ae_enabled;          /* default true */
    int ae_interval_seconds;  /* default 10 */
    char **ae_peer_list;      /* NULL-terminated array or NULL */
    int merkle_fanout;        /* [anti_entropy] fanout; default 16 (power of two, 2..256) */
    int merkle_depth;         /* [anti_entropy] depth; default 4 (levels; fanout^depth <= 2^20) */
    int sync_timeout_seconds; /* [anti_entropy] SYNC step timeout; default 10 (1..3600) */

    char **warnings;  /* NULL-terminated "file:line: unknown key 'x'" lines, or NULL */
    size_t nwarnings; /* entries in warnings */
};

void conf_init(struct conf *c);
void conf_clear(struct conf *c);

/*
 * Reads the TOML file at path over c. Returns 0, or -ENOENT/-EIO (unreadable file) or -EINVAL
 * (syntax error or bad value) with err filled (file, line, reason). Unknown keys and tables are
 * appended to c->warnings and do not fail.
 */
int conf_load_file(struct conf *c, const char *path, struct conf_error *err);

/*
 * Applies command-line options over c: --config is skipped here (main reads it first with
 * conf_config_path()), --host H, --port N, --storage-path DIR, --engine E, --node-id ID,
 * --log-level L; both "--opt value" and "--opt=value" forms. Returns 0, 1 when --help or
 * --version was given (*action set to "help" or "version"), or -EINVAL with err filled
 * (file "command line").
 */
int conf_apply_args(struct conf *c, int argc, char **argv, const char **action,
                    struct conf_error *err);

/* Returns the [borrow] value of --config in argv, or NULL. Sets *bad when --config lacks a value.
 */
const char *conf_config_path(int argc, char **argv, bool *bad);

/* Prints the --help text to stdout. */
void conf_print_usage(const char *prog);

#endif
