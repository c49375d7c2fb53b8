/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for store: records, tombstones, the live count across commit and rollback,
 * persistence, scans over binary keys, and the files store_open must refuse without touching.
 * Each case works in its own mkdtemp() directory and removes it at the end.
 */
#include "arborkv/merkle.h"
#include "arborkv/store.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "arborkv/buf.h"
#include "harness.h"

#define MIB (1024 * 1024)

/* ---- helpers ------------------------------------------------------------------------------- */

static char tmp_root[64];

static void make_tmp(void)
{
    test_make_tmp(tmp_root, sizeof(tmp_root), "store");
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

static struct store *open_ok(enum store_engine engine, const char *dir)
{
    struct store *st = NULL;
    char err[256] = "";
    int rc = store_open(&st, engine, dir, STORE_DURABLE_PROCESS, err, sizeof(err));
    if (rc != 0) fprintf(stderr, "store_open: %s\n", err);
    ASSERT_OK(rc);
    ASSERT(st != NULL);
    return st;
}

/* Opens dir expecting failure rc; returns the reason in a static buffer. */
static const char *open_fails(const char *dir, int want)
{
    static char err[512];
    struct store *st = (struct store *) 1;
    err[0] = '\0';
    int rc = store_open(&st, STORE_ENGINE_SQLITE, dir, STORE_DURABLE_PROCESS, err, sizeof(err));
    if (rc != want) fprintf(stderr, "store_open returned %d (%s), wanted %d\n", rc, err, want);
    ASSERT_EQ(rc, want);
    ASSERT(st == NULL);
    ASSERT(err[0] != '\0');
    return err;
}

static void fill_op_id(uint8_t op_id[STORE_OP_ID_BYTES], uint64_t ts)
{
    for (int i = 0; i < STORE_OP_ID_BYTES; i++)
        op_id[i] = (uint8_t) (ts * 31 + (uint64_t) i);
}

static void put_bytes(struct store *st, const void *key, size_t key_len, const void *value,
                      size_t value_len, bool tombstone, uint64_t ts)
{
    struct store_rec rec = { .key = key,
                             .key_len = key_len,
                             .value = value,
                             .value_len = value_len,
                             .tombstone = tombstone,
                             .ts = ts };
    fill_op_id(rec.op_id, ts);
    ASSERT_OK(store_begin(st));
    ASSERT_OK(store_put(st, &rec));
}

static void put(struct store *st, const char *key, const char *value, uint64_t ts)
{
    put_bytes(st, key, strlen(key), value, value ? strlen(value) : 0, value == NULL, ts);
}

/* Asserts the live value of key (NULL: absent or tombstone). */
static void expect(struct store *st, const char *key, const char *value)
{
    const uint8_t *v = NULL;
    size_t n = 0;
    int rc = store_get(st, (const uint8_t *) key, strlen(key), &v, &n);
    if (!value) {
        ASSERT_EQ(rc, 0);
        return;
    }
    ASSERT_EQ(rc, 1);
    ASSERT(v != NULL);
    ASSERT_SLICE_EQ(v, n, value);
}

static bool file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, p, n), (ssize_t) n);
    ASSERT_OK(close(fd));
}

/* Returns the **new** contents of path (free()) and its size in *n. */
static uint8_t *read_file(const char *path, size_t *n)
{
    struct stat sb;
    ASSERT_OK(stat(path, &sb));
    uint8_t *p = malloc((size_t) sb.st_size + 1);
    ASSERT(p != NULL);
    int fd = open(path, O_RDONLY);
    ASSERT(fd >= 0);
    ASSERT_EQ(read(fd, p, (size_t) sb.st_size), sb.st_size);
    ASSERT_OK(close(fd));
    *n = (size_t) sb.st_size;
    return p;
}

static void exec_raw(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) fprintf(stderr, "sqlite3_exec: %s\n", msg ? msg : "?");
    sqlite3_free(msg);
    ASSERT_EQ(rc, SQLITE_OK);
    ASSERT_EQ(sqlite3_close(db), SQLITE_OK);
}

/* The first column of the first row of sql on the database at path, as text: **new** (free()). */
static char *query_raw(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) fprintf(stderr, "prepare: %s\n", sqlite3_errmsg(db));
    ASSERT_EQ(rc, SQLITE_OK);
    ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
    const char *t = (const char *) sqlite3_column_text(s, 0);
    char *out = strdup(t ? t : "");
    ASSERT(out != NULL);
    ASSERT_EQ(sqlite3_finalize(s), SQLITE_OK);
    ASSERT_EQ(sqlite3_close(db), SQLITE_OK);
    return out;
}

static int64_t query_raw_int(const char *path, const char *sql)
{
    char *t = query_raw(path, sql);
    int64_t v = strtoll(t, NULL, 10);
    free(t);
    return v;
}

/*
 * The schema of the database at path in one line, comparable across databases whose CREATE
 * statements were edited by ALTER TABLE: every object by name, a table as its columns (name,
 * type, NOT NULL, PK) and whether it is WITHOUT ROWID, an index as its SQL. **new** (free()).
 */
static char *schema_of(const char *path)
{
    static const char sql[] =
            "SELECT group_concat(d, ' | ') FROM (SELECT m.type || ' ' || m.name || ': ' ||"
            " CASE m.type WHEN 'table' THEN (SELECT group_concat(c.name || ' ' || c.type"
            "   || CASE WHEN c.\"notnull\" THEN ' NOT NULL' ELSE '' END"
            "   || CASE WHEN c.pk THEN ' PK' ELSE '' END, ', ')"
            "   FROM pragma_table_info(m.name) c)"
            "   || CASE WHEN m.sql LIKE '%WITHOUT ROWID%' THEN ' WITHOUT ROWID' ELSE '' END"
            " ELSE coalesce(m.sql, '') END AS d"
            " FROM sqlite_schema m ORDER BY m.name)";
    return query_raw(path, sql);
}

/* Scan collector: keys (and values) concatenated as "key=value;" or "key;" for readability. */
struct collect {
    struct buf out; /* text of what was seen */
    int stop_after; /* stop (return 42) after this many records; 0 = never */
    int seen;       /* records delivered */
    bool saw_value; /* some record came with a non-NULL value */
};

static void append_key(struct buf *b, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] >= 0x21 && p[i] < 0x7f && p[i] != '=' && p[i] != ';')
            buf_append(b, &p[i], 1);
        else
            buf_printf(b, "\\x%02x", p[i]);
    }
}

static int collect_fn(void *arg, const struct store_rec *rec)
{
    struct collect *c = arg;
    append_key(&c->out, rec->key, rec->key_len);
    if (rec->tombstone) buf_append_str(&c->out, "!");
    if (rec->value) {
        c->saw_value = true;
        buf_append_str(&c->out, "=");
        append_key(&c->out, rec->value, rec->value_len);
    }
    buf_append_str(&c->out, ";");
    c->seen++;
    return c->stop_after && c->seen >= c->stop_after ? 42 : 0;
}

/* Runs a scan and returns its collected text (static buffer). */
static const char *scan_str(struct store *st, const char *prefix, size_t prefix_len,
                            const char *after, size_t after_len, unsigned flags, int stop_after,
                            int *ret)
{
    static char text[4096];
    struct collect c = { .stop_after = stop_after };
    buf_init(&c.out);
    int rc = store_scan(st, (const uint8_t *) prefix, prefix_len, (const uint8_t *) after,
                        after_len, flags, collect_fn, &c);
    if (ret)
        *ret = rc;
    else
        ASSERT_OK(rc);
    snprintf(text, sizeof(text), "%s", c.out.data ? (const char *) c.out.data : "");
    buf_clear(&c.out);
    return text;
}

static size_t opt_len(const char *s)
{
    return s ? strlen(s) : 0;
}

#define SCAN(st, prefix, after, flags) \
    scan_str((st), (prefix), opt_len(prefix), (after), opt_len(after), (flags), 0, NULL)

/* ---- records ------------------------------------------------------------------------------- */

static void check_put_get(struct store *st)
{
    expect(st, "a", NULL);
    put(st, "a", "1", 10);
    expect(st, "a", "1"); /* visible inside the transaction */
    ASSERT_OK(store_commit(st));
    expect(st, "a", "1");
    ASSERT(!store_in_txn(st));

    struct store_rec rec;
    ASSERT_EQ(store_get_rec(st, (const uint8_t *) "a", 1, &rec), 1);
    ASSERT(!rec.tombstone);
    ASSERT_U64_EQ(rec.ts, 10);
    ASSERT_SLICE_EQ(rec.key, rec.key_len, "a");
    ASSERT_SLICE_EQ(rec.value, rec.value_len, "1");
    uint8_t op[STORE_OP_ID_BYTES];
    fill_op_id(op, 10);
    ASSERT_MEM_EQ(rec.op_id, op, sizeof(op));
    ASSERT_EQ(store_get_rec(st, (const uint8_t *) "b", 1, &rec), 0);
}

TEST(put_get_memory)
{
    struct store *st = open_ok(STORE_ENGINE_MEMORY, NULL);
    ASSERT_STR_EQ(store_engine_name(st), "memory");
    check_put_get(st);
    store_close(st);
}

TEST(put_get_sqlite)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    ASSERT_STR_EQ(store_engine_name(st), "sqlite");
    check_put_get(st);
    store_close(st);
    rm_tmp();
}

TEST(tombstone_and_live_count)
{
    struct store *st = open_ok(STORE_ENGINE_MEMORY, NULL);
    ASSERT_U64_EQ(store_live_count(st), 0);
    put(st, "k", NULL, 1); /* new tombstone */
    ASSERT_U64_EQ(store_live_count(st), 0);
    put(st, "k", "v", 2); /* tombstone -> live */
    ASSERT_U64_EQ(store_live_count(st), 1);
    put(st, "k", "w", 3); /* live -> live */
    ASSERT_U64_EQ(store_live_count(st), 1);
    expect(st, "k", "w");
    put(st, "j", "x", 4); /* new live */
    ASSERT_U64_EQ(store_live_count(st), 2);
    put(st, "k", NULL, 5); /* live -> tombstone */
    ASSERT_U64_EQ(store_live_count(st), 1);
    put(st, "k", NULL, 6); /* tombstone -> tombstone */
    ASSERT_U64_EQ(store_live_count(st), 1);
    ASSERT_OK(store_commit(st));
    expect(st, "k", NULL);

    struct store_rec rec;
    ASSERT_EQ(store_get_rec(st, (const uint8_t *) "k", 1, &rec), 1);
    ASSERT(rec.tombstone);
    ASSERT(rec.value == NULL);
    ASSERT_EQ(rec.value_len, 0);
    ASSERT_U64_EQ(rec.ts, 6);
    ASSERT_U64_EQ(store_live_count(st), 1);
    store_close(st);
}

TEST(empty_value_is_not_a_tombstone)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    put_bytes(st, "e", 1, NULL, 0, false, 7); /* NULL pointer, length 0: an empty value */
    put(st, "t", NULL, 8);
    put_bytes(st, "", 0, "empty key", 9, false, 9); /* the empty key is a key like any other */
    ASSERT_OK(store_commit(st));
    for (int round = 0; round < 2; round++) {
        const uint8_t *v = NULL;
        size_t n = 99;
        ASSERT_EQ(store_get(st, (const uint8_t *) "e", 1, &v, &n), 1);
        ASSERT_EQ(n, 0);
        ASSERT(v != NULL);
        ASSERT_EQ(store_get(st, (const uint8_t *) "t", 1, &v, &n), 0);
        ASSERT_EQ(store_get(st, NULL, 0, &v, &n), 1);
        ASSERT_SLICE_EQ(v, n, "empty key");
        struct store_rec rec;
        ASSERT_EQ(store_get_rec(st, (const uint8_t *) "e", 1, &rec), 1);
        ASSERT(!rec.tombstone);
        ASSERT_EQ(rec.value_len, 0);
        ASSERT_U64_EQ(store_live_count(st), 2);
        ASSERT_STR_EQ(SCAN(st, NULL, NULL, STORE_SCAN_LIVE), "=empty\\x20key;e=;");
        ASSERT_STR_EQ(SCAN(st, NULL, NULL, 0), "=empty\\x20key;e=;t!;");
        store_close(st);
        st = open_ok(STORE_ENGINE_SQLITE, tmp_root); /* same answers after a reopen */
    }
    store_close(st);
    rm_tmp();
}

TEST(rollback_restores_data_and_count)
{
    struct store *st = open_ok(STORE_ENGINE_MEMORY, NULL);
    put(st, "a", "1", 1);
    put(st, "b", "2", 2);
    ASSERT_OK(store_commit(st));
    ASSERT_U64_EQ(store_live_count(st), 2);

    put(st, "a", NULL, 3);
    put(st, "b", "changed", 4);
    put(st, "c", "3", 5);
    put(st, "d", "4", 6);
    ASSERT_U64_EQ(store_live_count(st), 3);
    ASSERT(store_in_txn(st));
    store_rollback(st);
    ASSERT(!store_in_txn(st));
    ASSERT_U64_EQ(store_live_count(st), 2);
    expect(st, "a", "1");
    expect(st, "b", "2");
    expect(st, "c", NULL);
    expect(st, "d", NULL);

    store_rollback(st);          /* no transaction: no-op */
    ASSERT_OK(store_commit(st)); /* likewise */
    ASSERT_U64_EQ(store_live_count(st), 2);

    /* The next transaction starts from the restored count. */
    put(st, "c", "3", 7);
    ASSERT_OK(store_commit(st));
    ASSERT_U64_EQ(store_live_count(st), 3);
    store_close(st);
}

TEST(begin_is_idempotent_and_borrow_survives_until_next_call)
{
    struct store *st = open_ok(STORE_ENGINE_MEMORY, NULL);
    put(st, "a", "alpha", 1);
    ASSERT_OK(store_begin(st)); /* already open: no-op */
    ASSERT_OK(store_commit(st));

    /* A borrowed value stays readable until the next store call, which may be a write. */
    const uint8_t *v;
    size_t n;
    ASSERT_EQ(store_get(st, (const uint8_t *) "a", 1, &v, &n), 1);
    char copy[16];
    memcpy(copy, v, n);
    ASSERT_OK(store_begin(st));
    struct store_rec rec = { .key = (const uint8_t *) "b",
                             .key_len = 1,
                             .value = (const uint8_t *) copy,
                             .value_len = n,
                             .ts = 2 };
    ASSERT_OK(store_put(st, &rec));
    ASSERT_EQ(store_get(st, (const uint8_t *) "b", 1, &v, &n), 1); /* pending across commit */
    ASSERT_OK(store_commit(st));
    expect(st, "b", "alpha");
    store_close(st);
}

TEST(commit_persists_and_close_discards_open_txn)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    put(st, "kept", "yes", 100);
    put(st, "gone", "no", 101);
    put(st, "gone", NULL, 102);
    ASSERT_OK(store_commit(st));
    put(st, "uncommitted", "x", 200);
    store_close(st); /* rolls the open transaction back */

    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    expect(st, "kept", "yes");
    expect(st, "gone", NULL);
    expect(st, "uncommitted", NULL);
    ASSERT_U64_EQ(store_live_count(st), 1);
    ASSERT_U64_EQ(store_max_ts_at_open(st), 102);
    store_close(st);
    rm_tmp();
}

TEST(memory_engine_starts_empty)
{
    struct store *st = open_ok(STORE_ENGINE_MEMORY, "/nonexistent/ignored");
    put(st, "a", "1", 5);
    ASSERT_OK(store_commit(st));
    store_close(st);
    st = open_ok(STORE_ENGINE_MEMORY, NULL);
    expect(st, "a", NULL);
    ASSERT_U64_EQ(store_live_count(st), 0);
    ASSERT_U64_EQ(store_max_ts_at_open(st), 0);
    ASSERT_STR_EQ(SCAN(st, NULL, NULL, 0), "");
    store_close(st);
    ASSERT(!file_exists("/nonexistent"));
}

TEST(max_ts_at_open)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    ASSERT_U64_EQ(store_max_ts_at_open(st), 0);
    put(st, "a", "1", 1700000000000000000ULL);
    put(st, "b", NULL, 1700000000000000005ULL); /* tombstones count too */
    put(st, "c", "3", 1600000000000000000ULL);
    ASSERT_OK(store_commit(st));
    ASSERT_U64_EQ(store_max_ts_at_open(st), 0); /* a value taken at open */
    store_close(st);

    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    ASSERT_U64_EQ(store_max_ts_at_open(st), 1700000000000000005ULL);
    /* Past 2^63 (year 2262) ts is stored negative; the unsigned maximum is still found. */
    put(st, "far", "x", UINT64_MAX - 7);
    put(st, "farther", "x", (1ULL << 63) + 1);
    ASSERT_OK(store_commit(st));
    store_close(st);

    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    ASSERT_U64_EQ(store_max_ts_at_open(st), UINT64_MAX - 7);
    struct store_rec rec;
    ASSERT_EQ(store_get_rec(st, (const uint8_t *) "farther", 7, &rec), 1);
    ASSERT_U64_EQ(rec.ts, (1ULL << 63) + 1);
    store_close(st);
    rm_tmp();
}

TEST(large_values)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    size_t sizes[2] = { 1 * MIB, 16 * MIB };
    uint8_t *big = malloc(16 * MIB);
    ASSERT(big != NULL);
    for (size_t i = 0; i < 16 * MIB; i++)
        big[i] = (uint8_t) (i * 2654435761u >> 13);
    put_bytes(st, "m1", 2, big, sizes[0], false, 1);
    put_bytes(st, "m16", 3, big, sizes[1], false, 2);
    ASSERT_OK(store_commit(st));
    store_close(st);

    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    const char *keys[2] = { "m1", "m16" };
    for (int i = 0; i < 2; i++) {
        const uint8_t *v;
        size_t n;
        ASSERT_EQ(store_get(st, (const uint8_t *) keys[i], strlen(keys[i]), &v, &n), 1);
        ASSERT_EQ(n, sizes[i]);
        ASSERT_MEM_EQ(v, big, n);
    }
    struct collect c = { 0 };
    buf_init(&c.out);
    ASSERT_OK(store_scan(st, NULL, 0, NULL, 0, STORE_SCAN_KEYS_ONLY, collect_fn, &c));
    ASSERT_EQ(c.seen, 2);
    ASSERT(!c.saw_value);
    ASSERT_SLICE_EQ(c.out.data, c.out.len, "m1;m16;");
    buf_clear(&c.out);

    /* Overwrite a large value with a small one and back. */
    put(st, "m16", "small", 3);
    ASSERT_OK(store_commit(st));
    expect(st, "m16", "small");
    ASSERT_U64_EQ(store_live_count(st), 2);
    store_close(st);
    free(big);
    rm_tmp();
}

/* ---- scans --------------------------------------------------------------------------------- */

static void put_binary_keys(struct store *st)
{
    static const struct {
        const char *k;
        size_t n;
    } keys[] = {
        { "\xff", 1 },     { "\x00", 1 },      { "b", 1 },    { "\xff\xff", 2 },
        { "\x00\x00", 2 }, { "\xfe\xff", 2 },  { "ab", 2 },   { "\xff\x00", 2 },
        { "a", 1 },        { "\xfe", 1 },      { "\x01", 1 }, { "\xff\xff\x01", 3 },
        { "a\xff", 2 },    { "a\xff\xff", 3 }, { "c", 1 },
    };
    ASSERT_OK(store_begin(st));
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        put_bytes(st, keys[i].k, keys[i].n, "v", 1, false, i + 1);
    ASSERT_OK(store_commit(st));
}

#define ALL_BINARY                                                                          \
    "\\x00;\\x00\\x00;\\x01;a;ab;a\\xff;a\\xff\\xff;b;c;\\xfe;\\xfe\\xff;\\xff;\\xff\\x00;" \
    "\\xff\\xff;\\xff\\xff\\x01;"

TEST(scan_order_binary_keys)
{
    struct store *st = open_ok(STORE_ENGINE_MEMORY, NULL);
    put_binary_keys(st);
    ASSERT_STR_EQ(scan_str(st, NULL, 0, NULL, 0, STORE_SCAN_KEYS_ONLY, 0, NULL), ALL_BINARY);
    /* Prefixes ending in or made of 0xFF bytes: no successor to compute, or a shorter one. */
    ASSERT_STR_EQ(scan_str(st, "\xff", 1, NULL, 0, STORE_SCAN_KEYS_ONLY, 0, NULL),
                  "\\xff;\\xff\\x00;\\xff\\xff;\\xff\\xff\\x01;");
    ASSERT_STR_EQ(scan_str(st, "\xff\xff", 2, NULL, 0, STORE_SCAN_KEYS_ONLY, 0, NULL),
                  "\\xff\\xff;\\xff\\xff\\x01;");
    ASSERT_STR_EQ(scan_str(st, "\xff\xff\xff", 3, NULL, 0, STORE_SCAN_KEYS_ONLY, 0, NULL), "");
    ASSERT_STR_EQ(scan_str(st, "a\xff", 2, NULL, 0, STORE_SCAN_KEYS_ONLY, 0, NULL),
                  "a\\xff;a\\xff\\xff;");
    ASSERT_STR_EQ(scan_str(st, "\xfe", 1, NULL, 0, STORE_SCAN_KEYS_ONLY, 0, NULL),
                  "\\xfe;\\xfe\\xff;");
    ASSERT_STR_EQ(scan_str(st, "\x00", 1, NULL, 0, STORE_SCAN_KEYS_ONLY, 0, NULL),
                  "\\x00;\\x00\\x00;");
    ASSERT_STR_EQ(scan_str(st, "a", 1, NULL, 0, STORE_SCAN_KEYS_ONLY, 0, NULL),
                  "a;ab;a\\xff;a\\xff\\xff;");
    store_close(st);
}

/* A cursor page: the text of up to `limit` records and the last key, kept for `after`. */
struct page {
    struct collect c; /* text of the page */
    struct buf last;  /* last key delivered */
    int limit;        /* records per page */
};

static int page_fn(void *arg, const struct store_rec *rec)
{
    struct page *pg = arg;
    buf_reset(&pg->last);
    buf_append(&pg->last, rec->key, rec->key_len);
    collect_fn(&pg->c, rec);
    return pg->c.seen >= pg->limit ? 1 : 0;
}

TEST(scan_after_pages_through_everything)
{
    struct store *st = open_ok(STORE_ENGINE_MEMORY, NULL);
    put_binary_keys(st);
    for (int limit = 1; limit <= 4; limit++) {
        struct buf all, cursor;
        buf_init(&all);
        buf_init(&cursor);
        bool first = true;
        for (int pages = 0;; pages++) {
            ASSERT(pages <= 16);
            struct page pg = { .limit = limit };
            buf_init(&pg.c.out);
            buf_init(&pg.last);
            int rc = store_scan(st, NULL, 0, first ? NULL : cursor.data, cursor.len,
                                STORE_SCAN_KEYS_ONLY, page_fn, &pg);
            ASSERT(rc == 0 || rc == 1);
            if (pg.c.seen > 0) buf_append(&all, pg.c.out.data, pg.c.out.len);
            buf_reset(&cursor);
            buf_append(&cursor, pg.last.data, pg.last.len);
            first = false;
            buf_clear(&pg.c.out);
            buf_clear(&pg.last);
            if (rc == 0) break; /* the scan ran out before the page was full */
        }
        ASSERT_SLICE_EQ(all.data, all.len, ALL_BINARY);
        buf_clear(&all);
        buf_clear(&cursor);
    }
    store_close(st);
}

TEST(scan_prefix_after_live_keys_only_and_stop)
{
    struct store *st = open_ok(STORE_ENGINE_MEMORY, NULL);
    put(st, "user:1", "ann", 1);
    put(st, "user:2", "bob", 2);
    put(st, "user:3", NULL, 3);
    put(st, "user:4", "dan", 4);
    put(st, "users", "x", 5);
    put(st, "usea", "y", 6);
    put(st, "v", "z", 7);
    ASSERT_OK(store_commit(st));

    ASSERT_STR_EQ(SCAN(st, "user:", NULL, 0), "user:1=ann;user:2=bob;user:3!;user:4=dan;");
    ASSERT_STR_EQ(SCAN(st, "user:", NULL, STORE_SCAN_LIVE), "user:1=ann;user:2=bob;user:4=dan;");
    ASSERT_STR_EQ(SCAN(st, "user:", NULL, STORE_SCAN_LIVE | STORE_SCAN_KEYS_ONLY),
                  "user:1;user:2;user:4;");
    ASSERT_STR_EQ(SCAN(st, "user:", NULL, STORE_SCAN_KEYS_ONLY), "user:1;user:2;user:3!;user:4;");
    ASSERT_STR_EQ(SCAN(st, "user:", "user:2", 0), "user:3!;user:4=dan;");
    ASSERT_STR_EQ(SCAN(st, "user:", "user:2", STORE_SCAN_LIVE), "user:4=dan;");
    ASSERT_STR_EQ(SCAN(st, "user:", "user:", 0), "user:1=ann;user:2=bob;user:3!;user:4=dan;");
    ASSERT_STR_EQ(SCAN(st, "user:", "a", STORE_SCAN_KEYS_ONLY), /* after before the prefix */
                  "user:1;user:2;user:3!;user:4;");
    ASSERT_STR_EQ(SCAN(st, "user:", "user:4", 0), "");
    ASSERT_STR_EQ(SCAN(st, "user:", "z", 0), ""); /* after beyond the prefix */
    ASSERT_STR_EQ(SCAN(st, "user:2", NULL, 0), "user:2=bob;");
    ASSERT_STR_EQ(SCAN(st, "nothing", NULL, 0), "");
    ASSERT_STR_EQ(SCAN(st, NULL, "user:4", STORE_SCAN_KEYS_ONLY), "users;v;");
    ASSERT_STR_EQ(SCAN(st, NULL, NULL, STORE_SCAN_KEYS_ONLY | STORE_SCAN_LIVE),
                  "usea;user:1;user:2;user:4;users;v;");

    /* Early stop: fn's value comes back, nothing more is delivered. */
    int rc = 0;
    ASSERT_STR_EQ(scan_str(st, "user:", 5, NULL, 0, STORE_SCAN_LIVE, 2, &rc),
                  "user:1=ann;user:2=bob;");
    ASSERT_EQ(rc, 42);
    /* The store is usable right after an early stop. */
    expect(st, "user:4", "dan");
    put(st, "user:5", "eve", 8);
    ASSERT_OK(store_commit(st));
    ASSERT_STR_EQ(SCAN(st, "user:", "user:3", STORE_SCAN_KEYS_ONLY), "user:4;user:5;");
    store_close(st);
}

TEST(scan_sees_open_transaction)
{
    struct store *st = open_ok(STORE_ENGINE_MEMORY, NULL);
    put(st, "a", "1", 1);
    ASSERT_OK(store_commit(st));
    put(st, "b", "2", 2);
    ASSERT_STR_EQ(SCAN(st, NULL, NULL, 0), "a=1;b=2;");
    store_rollback(st);
    ASSERT_STR_EQ(SCAN(st, NULL, NULL, 0), "a=1;");
    store_close(st);
}

/* ---- open: directories and refused files ---------------------------------------------------- */

TEST(directory_created_with_parents)
{
    make_tmp();
    const char *dir = tmp_path("a/b//c/");
    struct store *st = open_ok(STORE_ENGINE_SQLITE, dir);
    store_close(st);
    struct stat sb;
    ASSERT_OK(stat(tmp_path("a/b/c/arborkv.db"), &sb));
    ASSERT(S_ISREG(sb.st_mode));
    ASSERT_OK(stat(tmp_path("a/b/c"), &sb));
    ASSERT_EQ(sb.st_mode & 077, 0); /* the data directory is private */
    /* Closing checkpoints and removes the WAL; exclusive locking never makes a -shm file. */
    ASSERT(!file_exists(tmp_path("a/b/c/arborkv.db-wal")));
    ASSERT(!file_exists(tmp_path("a/b/c/arborkv.db-shm")));
    rm_tmp();
}

TEST(path_through_a_file_is_refused)
{
    make_tmp();
    write_file(tmp_path("plain"), "x", 1);
    const char *err = open_fails(tmp_path("plain/sub"), -EINVAL);
    ASSERT(strstr(err, "not a directory") != NULL);
    err = open_fails(tmp_path("plain"), -EINVAL);
    ASSERT(strstr(err, "not a directory") != NULL);
    ASSERT_OK(mkdir(tmp_path("d"), 0700));
    ASSERT_OK(mkdir(tmp_path("d/arborkv.db"), 0700));
    err = open_fails(tmp_path("d"), -EINVAL);
    ASSERT(strstr(err, "not a regular file") != NULL);
    rm_tmp();
}

/* Opening must leave a refused file (and its directory) exactly as it was. */
static void expect_refused_untouched(const char *dir, int want, const char *needle)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/arborkv.db", dir);
    size_t n0, n1;
    uint8_t *before = read_file(path, &n0);
    const char *err = open_fails(dir, want);
    if (needle && !strstr(err, needle)) fprintf(stderr, "unexpected reason: %s\n", err);
    if (needle) ASSERT(strstr(err, needle) != NULL);
    ASSERT(strstr(err, path) != NULL); /* the reason names the file */
    uint8_t *after = read_file(path, &n1);
    ASSERT_EQ(n0, n1);
    ASSERT_MEM_EQ(before, after, n0);
    free(before);
    free(after);
    char side[300];
    snprintf(side, sizeof(side), "%s-journal", path);
    ASSERT(!file_exists(side));
    snprintf(side, sizeof(side), "%s-shm", path);
    ASSERT(!file_exists(side));
}

TEST(refuse_random_bytes)
{
    make_tmp();
    uint8_t junk[8192];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(junk); i++) {
        x = x * 1103515245u + 12345u;
        junk[i] = (uint8_t) (x >> 16);
    }
    write_file(tmp_path("arborkv.db"), junk, sizeof(junk));
    expect_refused_untouched(tmp_root, -EBADMSG, "file is not a database");
    ASSERT(!file_exists(tmp_path("arborkv.db-wal")));

    /* A short file, and the SQLite magic followed by garbage. */
    write_file(tmp_path("arborkv.db"), "hello", 5);
    expect_refused_untouched(tmp_root, -EBADMSG, "file is not a database");
    memcpy(junk, "SQLite format 3", 16);
    write_file(tmp_path("arborkv.db"), junk, sizeof(junk));
    const char *dir = tmp_root;
    char path[256];
    snprintf(path, sizeof(path), "%s/arborkv.db", dir);
    size_t n0, n1;
    uint8_t *before = read_file(path, &n0);
    struct store *st = NULL;
    char err[256];
    int rc = store_open(&st, STORE_ENGINE_SQLITE, dir, STORE_DURABLE_PROCESS, err, sizeof(err));
    ASSERT(rc == -EBADMSG || rc == -EIO);
    ASSERT(st == NULL);
    uint8_t *after = read_file(path, &n1);
    ASSERT_EQ(n0, n1);
    ASSERT_MEM_EQ(before, after, n0);
    free(before);
    free(after);
    rm_tmp();
}

TEST(empty_file_is_initialized)
{
    make_tmp();
    write_file(tmp_path("arborkv.db"), "", 0);
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    put(st, "a", "1", 1);
    ASSERT_OK(store_commit(st));
    store_close(st);
    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    expect(st, "a", "1");
    store_close(st);
    rm_tmp();
}

TEST(refuse_foreign_sqlite_database)
{
    make_tmp();
    exec_raw(tmp_path("arborkv.db"),
             "CREATE TABLE t (a, b); INSERT INTO t VALUES (1, 2); PRAGMA journal_mode = DELETE;");
    expect_refused_untouched(tmp_root, -EBADMSG, "another application");

    /* Another application's database in WAL mode, with content still in its WAL. */
    ASSERT_OK(remove(tmp_path("arborkv.db")));
    sqlite3 *db = NULL;
    ASSERT_EQ(sqlite3_open(tmp_path("arborkv.db"), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "PRAGMA journal_mode = WAL; CREATE TABLE t (a);", NULL, NULL, NULL),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "INSERT INTO t VALUES (1);", NULL, NULL, NULL), SQLITE_OK);
    ASSERT_EQ(sqlite3_close(db), SQLITE_OK);
    ASSERT_OK(
            remove(tmp_path("arborkv.db-shm"))); /* that connection's index; we must not make one */
    size_t w0, w1;
    uint8_t *wal0 = read_file(tmp_path("arborkv.db-wal"), &w0);
    expect_refused_untouched(tmp_root, -EBADMSG, "another application");
    uint8_t *wal1 = read_file(tmp_path("arborkv.db-wal"), &w1);
    ASSERT_EQ(w0, w1);
    ASSERT_MEM_EQ(wal0, wal1, w0);
    free(wal0);
    free(wal1);

    /* Same with an application id that is not ours. */
    ASSERT_OK(remove(tmp_path("arborkv.db")));
    ASSERT_OK(remove(tmp_path("arborkv.db-wal")));
    exec_raw(tmp_path("arborkv.db"), "PRAGMA application_id = 42;");
    expect_refused_untouched(tmp_root, -EBADMSG, "another application");
    rm_tmp();
}

TEST(refuse_newer_schema)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    put(st, "a", "1", 1);
    ASSERT_OK(store_commit(st));
    store_close(st);
    exec_raw(tmp_path("arborkv.db"), "PRAGMA user_version = 7;");
    expect_refused_untouched(tmp_root, -ENOTSUP, "schema version 7");
    /* Back to the current version: the data is still there. */
    exec_raw(tmp_path("arborkv.db"), "PRAGMA user_version = 6;");
    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    expect(st, "a", "1");
    store_close(st);
    rm_tmp();
}

TEST(refuse_corrupt_records_table)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    char key[32], val[64];
    ASSERT_OK(store_begin(st));
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "key:%06d", i);
        snprintf(val, sizeof(val), "value number %d, padded to take some room", i);
        put(st, key, val, (uint64_t) i + 1);
    }
    ASSERT_OK(store_commit(st));
    store_close(st);

    /* Page 2 is the root of records (page 1 holds sqlite_schema): scribble over it. */
    int fd = open(tmp_path("arborkv.db"), O_WRONLY);
    ASSERT(fd >= 0);
    uint8_t junk[4096];
    memset(junk, 0x55, sizeof(junk));
    ASSERT_EQ(pwrite(fd, junk, sizeof(junk), 4096), (ssize_t) sizeof(junk));
    ASSERT_OK(close(fd));
    expect_refused_untouched(tmp_root, -EIO, "corrupt");
    rm_tmp();
}

/* The checkpointer thread copies the WAL back while writes go on; with store_maintain after
 * each commit (as the loop does) the WAL starts over instead of growing without end. */
TEST(checkpointer_lets_the_wal_start_over)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    static char big[32768];
    char key[32];
    uint64_t most = 0;
    for (int i = 0; i < 600; i++) { /* ~9 frames each: past the checkpointer's threshold */
        memset(big, 'a' + i % 26, sizeof(big) - 1);
        snprintf(key, sizeof(key), "big:%d", i);
        put(st, key, big, (uint64_t) i + 1);
        ASSERT_OK(store_commit(st));
        store_maintain(st);
        if (store_wal_frames(st) > most) most = store_wal_frames(st);
    }
    ASSERT(most > 4096);
    bool restarted = false;
    for (int i = 0; i < 30000 && !restarted; i++) { /* up to ~30 s on a loaded machine */
        snprintf(key, sizeof(key), "small:%d", i);
        put(st, key, "x", (uint64_t) i + 1000);
        ASSERT_OK(store_commit(st));
        store_maintain(st);
        restarted = store_wal_frames(st) < 100;
        if (!restarted) usleep(1000);
    }
    ASSERT(restarted);
    memset(big, 'a' + 599 % 26, sizeof(big) - 1);
    expect(st, "big:599", big);
    store_close(st);
    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    expect(st, "big:599", big);
    memset(big, 'a', sizeof(big) - 1);
    expect(st, "big:0", big);
    store_close(st);
    rm_tmp();
}

TEST(second_open_of_same_directory_is_refused)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    put(st, "a", "1", 1);
    ASSERT_OK(store_commit(st));
    const char *err = open_fails(tmp_root, -EIO);
    ASSERT(strstr(err, "locked") != NULL);
    expect(st, "a", "1"); /* the first one is unaffected */
    store_close(st);
    rm_tmp();
}

/*
 * Permission checks mean nothing to root (CI runs as root), so as root this case drops to
 * nobody first; it runs in its own forked child, so nothing else is affected.
 */
static void become_unprivileged(void)
{
    if (geteuid() != 0) return;
    ASSERT_OK(chown(tmp_root, 65534, 65534));
    ASSERT_OK(setgid(65534));
    ASSERT_OK(setuid(65534));
}

TEST(unwritable_directory_is_a_clear_error)
{
    make_tmp();
    become_unprivileged();

    /* The directory cannot be created. */
    ASSERT_OK(mkdir(tmp_path("ro"), 0500));
    const char *err = open_fails(tmp_path("ro/data"), -EACCES);
    ASSERT(strstr(err, "cannot create directory") != NULL);
    ASSERT(strstr(err, "ermission denied") != NULL);

    /* The directory exists but the database cannot be created in it. */
    err = open_fails(tmp_path("ro"), -EACCES);
    ASSERT(strstr(err, "permission denied") != NULL);
    ASSERT(!file_exists(tmp_path("ro/arborkv.db")));

    /* An existing database that is read-only, or unreadable. */
    ASSERT_OK(mkdir(tmp_path("rw"), 0700));
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_path("rw"));
    put(st, "a", "1", 1);
    ASSERT_OK(store_commit(st));
    store_close(st);
    ASSERT_OK(chmod(tmp_path("rw/arborkv.db"), 0400));
    err = open_fails(tmp_path("rw"), -EACCES);
    ASSERT(strstr(err, "permission denied") != NULL);
    ASSERT_OK(chmod(tmp_path("rw/arborkv.db"), 0000));
    err = open_fails(tmp_path("rw"), -EACCES);
    ASSERT(strstr(err, "ermission denied") != NULL);

    /* A writable database in a directory where its WAL cannot be created. */
    ASSERT_OK(chmod(tmp_path("rw/arborkv.db"), 0600));
    ASSERT_OK(chmod(tmp_path("rw"), 0500));
    err = open_fails(tmp_path("rw"), -EACCES);
    ASSERT(strstr(err, "permission denied") != NULL);
    ASSERT_OK(chmod(tmp_path("rw"), 0700));
    st = open_ok(STORE_ENGINE_SQLITE, tmp_path("rw"));
    expect(st, "a", "1");
    store_close(st);
    rm_tmp();
}

TEST(put_local_supersedes_the_stored_version)
{
    struct store *st = open_ok(STORE_ENGINE_MEMORY, NULL);
    put(st, "k", "remote", 1000); /* e.g. from a peer whose clock runs far ahead */
    struct store_rec rec = { .key = (const uint8_t *) "k",
                             .key_len = 1,
                             .value = (const uint8_t *) "local",
                             .value_len = 5,
                             .ts = 10 };
    ASSERT_OK(store_put_local(st, &rec));
    ASSERT_U64_EQ(rec.ts, 1001);
    struct store_rec got;
    ASSERT_EQ(store_get_rec(st, (const uint8_t *) "k", 1, &got), 1);
    ASSERT_U64_EQ(got.ts, 1001);
    ASSERT_SLICE_EQ(got.value, got.value_len, "local");
    /* A clock already past the stored version is kept as is; a new key too. */
    rec.ts = 5000;
    ASSERT_OK(store_put_local(st, &rec));
    ASSERT_U64_EQ(rec.ts, 5000);
    struct store_rec fresh = {
        .key = (const uint8_t *) "new", .key_len = 3, .tombstone = true, .ts = 7
    };
    ASSERT_OK(store_put_local(st, &fresh));
    ASSERT_U64_EQ(fresh.ts, 7);
    ASSERT_OK(store_commit(st));
    store_close(st);
}

TEST(outbox_add_read_delete_and_counts)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    uint64_t rows, events, id1, id2, id3;
    store_outbox_counts_at_open(st, &rows, &events);
    ASSERT_U64_EQ(rows, 0);
    ASSERT_U64_EQ(events, 0);
    ASSERT_OK(store_begin(st));
    ASSERT_OK(store_outbox_add(st, (const uint8_t *) "one", 3, 1, &id1));
    ASSERT_OK(store_outbox_add(st, (const uint8_t *) "two", 3, 2, &id2));
    ASSERT_OK(store_outbox_add(st, (const uint8_t *) "", 0, 3, &id3));
    ASSERT(id1 < id2 && id2 < id3);
    ASSERT_OK(store_commit(st));

    uint64_t id;
    uint32_t n;
    const uint8_t *p;
    size_t len;
    ASSERT_EQ(store_outbox_next(st, 0, &id, &n, &p, &len), 1);
    ASSERT_U64_EQ(id, id1);
    ASSERT_EQ(n, 1);
    ASSERT_SLICE_EQ(p, len, "one");
    ASSERT_EQ(store_outbox_next(st, id1, &id, &n, &p, &len), 1);
    ASSERT_U64_EQ(id, id2);
    ASSERT_EQ(store_outbox_next(st, id3, &id, &n, &p, &len), 0);

    ASSERT_OK(store_begin(st));
    ASSERT_EQ(store_outbox_delete(st, id1), 1);
    ASSERT_EQ(store_outbox_delete(st, id1), 0); /* a repeated acknowledgement */
    ASSERT_OK(store_commit(st));
    store_close(st);

    /* Reopen: what is left is counted, oldest first, and ids are never reused. */
    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    store_outbox_counts_at_open(st, &rows, &events);
    ASSERT_U64_EQ(rows, 2);
    ASSERT_U64_EQ(events, 5);
    ASSERT_EQ(store_outbox_next(st, 0, &id, &n, &p, &len), 1);
    ASSERT_U64_EQ(id, id2);
    ASSERT_OK(store_begin(st));
    ASSERT_EQ(store_outbox_delete(st, id2), 1);
    ASSERT_EQ(store_outbox_delete(st, id3), 1);
    uint64_t id4;
    ASSERT_OK(store_outbox_add(st, (const uint8_t *) "four", 4, 1, &id4));
    ASSERT(id4 > id3);
    /* Rolled back with the transaction, like the writes it describes. */
    store_rollback(st);
    ASSERT_EQ(store_outbox_next(st, 0, &id, &n, &p, &len), 1);
    ASSERT_U64_EQ(id, id2);
    store_close(st);
    rm_tmp();
}

TEST(schema_1_is_migrated_keeping_records)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    put(st, "a", "1", 1);
    ASSERT_OK(store_commit(st));
    store_close(st);
    char *fresh = schema_of(tmp_path("arborkv.db"));
    /* What a version-1 database looks like: no outbox table, no purge index or meta table. */
    exec_raw(tmp_path("arborkv.db"), "DROP TABLE outbox; DROP INDEX records_tombstones;"
                                     "DROP TABLE meta;"
                                     "PRAGMA user_version = 1;");
    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    expect(st, "a", "1");
    uint64_t id;
    ASSERT_OK(store_begin(st));
    ASSERT_OK(store_outbox_add(st, (const uint8_t *) "x", 1, 1, &id));
    ASSERT_OK(store_commit(st));
    store_close(st);
    /* Through every step, the key hash column's coming and going included. */
    char *upgraded = schema_of(tmp_path("arborkv.db"));
    ASSERT_STR_EQ(upgraded, fresh);
    free(upgraded);
    free(fresh);
    rm_tmp();
}

/* A new database has the current schema, and only it. */
TEST(new_database_gets_the_current_schema)
{
    make_tmp();
    store_close(open_ok(STORE_ENGINE_SQLITE, tmp_root));
    const char *db = tmp_path("arborkv.db");
    ASSERT_EQ(query_raw_int(db, "PRAGMA user_version"), 6);
    ASSERT_EQ(query_raw_int(db, "PRAGMA application_id"), 1634888566);
    char *schema = schema_of(db);
    ASSERT_STR_EQ(schema, "table meta: name TEXT NOT NULL PK, value INTEGER NOT NULL WITHOUT ROWID"
                          " | table outbox: id INTEGER PK, nevents INTEGER NOT NULL,"
                          " payload BLOB NOT NULL"
                          " | table records: key BLOB NOT NULL PK, tombstone INTEGER NOT NULL,"
                          " ts INTEGER NOT NULL, op_id BLOB NOT NULL, value BLOB WITHOUT ROWID"
                          " | index records_tombstones: CREATE INDEX records_tombstones ON"
                          " records(ts) WHERE tombstone = 1"
                          " | table sqlite_sequence: name , seq ");
    free(schema);
    rm_tmp();
}

static int add_to_tree(void *arg, const struct store_rec *rec)
{
    merkle_add(arg, rec);
    return 0;
}

/* Root of a tree freshly built from what the store holds now. */
static void fresh_root(struct store *st, uint8_t out[MERKLE_DIGEST_LEN])
{
    struct merkle *m = NULL;
    ASSERT_OK(merkle_new(&m, 16, 2));
    /* A second tree cannot be attached to the same store: rebuild by scanning. */
    ASSERT_OK(store_scan(st, NULL, 0, NULL, 0, 0, add_to_tree, m));
    merkle_root(m, out);
    merkle_free(m);
}

TEST(tree_follows_writes_and_rollbacks)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    put(st, "before", "attach", 5);
    ASSERT_OK(store_commit(st));
    struct merkle *m = NULL;
    ASSERT_OK(merkle_new(&m, 16, 2));
    ASSERT_OK(store_attach_tree(st, m));
    ASSERT_U64_EQ(merkle_count(m), 1);

    uint8_t a[MERKLE_DIGEST_LEN], b[MERKLE_DIGEST_LEN];
    char key[32], val[32];
    for (int i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "k%d", i % 200);
        snprintf(val, sizeof(val), "v%d", i);
        put(st, key, i % 7 == 0 ? NULL : val, (uint64_t) 10 + (uint64_t) i);
    }
    ASSERT_OK(store_commit(st));
    ASSERT_U64_EQ(merkle_count(m), 201);
    merkle_root(m, a);
    fresh_root(st, b);
    ASSERT_MEM_EQ(a, b, MERKLE_DIGEST_LEN);

    /* A rolled-back transaction leaves the tree as it was. */
    put(st, "k1", "changed", 100000);
    put(st, "brand-new", "x", 100001);
    store_rollback(st);
    merkle_root(m, b);
    ASSERT_MEM_EQ(a, b, MERKLE_DIGEST_LEN);
    ASSERT_U64_EQ(merkle_count(m), 201);
    store_close(st);

    /* Reopened and rebuilt: the same root. */
    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    struct merkle *m2 = NULL;
    ASSERT_OK(merkle_new(&m2, 16, 2));
    ASSERT_OK(store_attach_tree(st, m2));
    merkle_root(m2, b);
    ASSERT_MEM_EQ(a, b, MERKLE_DIGEST_LEN);
    store_close(st);
    merkle_free(m);
    merkle_free(m2);
    rm_tmp();
}

/*
 * A database as arborkv left it at schema version 5: migrations 1-5 as they were (copied here, so
 * that the test does not depend on the code it checks), in WAL mode, with the key hash column
 * written by the old INSERT (right for most rows; 0 for one, as version 3 left older rows).
 */
static const char schema_5_db[] =
        "PRAGMA journal_mode = WAL;"
        "CREATE TABLE records (key BLOB PRIMARY KEY NOT NULL, tombstone INTEGER NOT NULL,"
        " ts INTEGER NOT NULL, op_id BLOB NOT NULL, value BLOB) WITHOUT ROWID;"
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, nevents INTEGER NOT NULL,"
        " payload BLOB NOT NULL);"
        "ALTER TABLE records ADD COLUMN khash INTEGER NOT NULL DEFAULT 0;"
        "CREATE INDEX records_khash ON records(khash);"
        "DROP INDEX IF EXISTS records_khash;"
        "CREATE INDEX records_tombstones ON records(ts) WHERE tombstone = 1;"
        "CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;"
        "PRAGMA application_id = 1634888566; PRAGMA user_version = 5;";

/* Inserts a record the way the version-5 store did, key hash included. */
static void insert_v5(sqlite3 *db, const void *key, size_t key_len, const void *value,
                      size_t value_len, bool tombstone, uint64_t ts, bool stale_hash)
{
    sqlite3_stmt *s = NULL;
    uint8_t op_id[STORE_OP_ID_BYTES];
    fill_op_id(op_id, ts);
    ASSERT_EQ(sqlite3_prepare_v2(db,
                                 "INSERT INTO records (key, tombstone, ts, op_id, value, khash)"
                                 " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                 -1, &s, NULL),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_bind_blob(s, 1, key, (int) key_len, SQLITE_STATIC), SQLITE_OK);
    ASSERT_EQ(sqlite3_bind_int(s, 2, tombstone), SQLITE_OK);
    ASSERT_EQ(sqlite3_bind_int64(s, 3, (sqlite3_int64) ts), SQLITE_OK);
    ASSERT_EQ(sqlite3_bind_blob(s, 4, op_id, sizeof(op_id), SQLITE_STATIC), SQLITE_OK);
    if (tombstone)
        ASSERT_EQ(sqlite3_bind_null(s, 5), SQLITE_OK);
    else
        ASSERT_EQ(sqlite3_bind_blob(s, 5, value_len ? value : "", (int) value_len, SQLITE_STATIC),
                  SQLITE_OK);
    uint32_t h = stale_hash ? 0 : merkle_key_hash(key, key_len);
    ASSERT_EQ(sqlite3_bind_int64(s, 6, h), SQLITE_OK);
    ASSERT_EQ(sqlite3_step(s), SQLITE_DONE);
    ASSERT_EQ(sqlite3_finalize(s), SQLITE_OK);
}

/* The key hash column (schema 3, unused since 4) is dropped by schema 6: an existing data
 * directory opens with every record, the outbox and the purge horizon intact, and takes writes. */
TEST(schema_5_loses_the_key_hash_column_keeping_everything_else)
{
    enum { NUMBERED = 2000, BIG = 200000 };
    make_tmp();
    const char *path = tmp_path("arborkv.db");
    static uint8_t big[BIG];
    memset(big, 0xab, sizeof(big));
    sqlite3 *db = NULL;
    ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, schema_5_db, NULL, NULL, NULL), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    insert_v5(db, "alpha", 5, "one", 3, false, 10, false);
    insert_v5(db, "gone", 4, NULL, 0, true, 20, false);
    insert_v5(db, "empty", 5, NULL, 0, false, 30, false);
    insert_v5(db, "\x00\xff\x01", 3, "bin", 3, false, 40, false);
    insert_v5(db, "big", 3, big, sizeof(big), false, 50, false); /* overflow pages */
    insert_v5(db, "stale", 5, "hash 0", 6, false, 60, true);
    char key[32], val[32];
    for (int i = 0; i < NUMBERED; i++) {
        snprintf(key, sizeof(key), "n:%05d", i);
        snprintf(val, sizeof(val), "value %d", i);
        insert_v5(db, key, strlen(key), val, strlen(val), false, 1000 + (uint64_t) i, false);
    }
    ASSERT_EQ(sqlite3_exec(db,
                           "INSERT INTO outbox (nevents, payload) VALUES (3, X'0102'), (2, X'03');"
                           "INSERT INTO meta (name, value) VALUES ('purge_horizon', 15);"
                           "COMMIT;",
                           NULL, NULL, NULL),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_close(db), SQLITE_OK);
    ASSERT_EQ(query_raw_int(path, "SELECT count(*) FROM pragma_table_info('records')"
                                  " WHERE name = 'khash'"),
              1);

    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    /* Everything as it was. */
    expect(st, "alpha", "one");
    expect(st, "gone", NULL);
    struct store_rec rec;
    ASSERT_EQ(store_get_rec(st, (const uint8_t *) "gone", 4, &rec), 1);
    ASSERT(rec.tombstone);
    ASSERT_U64_EQ(rec.ts, 20);
    expect(st, "empty", "");
    expect(st, "stale", "hash 0");
    const uint8_t *v = NULL;
    size_t n = 0;
    ASSERT_EQ(store_get(st, (const uint8_t *) "\x00\xff\x01", 3, &v, &n), 1);
    ASSERT_SLICE_EQ(v, n, "bin");
    ASSERT_EQ(store_get(st, (const uint8_t *) "big", 3, &v, &n), 1);
    ASSERT_EQ(n, sizeof(big));
    ASSERT_MEM_EQ(v, big, sizeof(big));
    ASSERT_EQ(store_get_rec(st, (const uint8_t *) "n:01234", 7, &rec), 1);
    ASSERT_U64_EQ(rec.ts, 2234);
    uint8_t op_id[STORE_OP_ID_BYTES];
    fill_op_id(op_id, 2234);
    ASSERT_MEM_EQ(rec.op_id, op_id, STORE_OP_ID_BYTES);
    ASSERT_SLICE_EQ(rec.value, rec.value_len, "value 1234");
    ASSERT_U64_EQ(store_live_count(st), NUMBERED + 5);
    ASSERT_U64_EQ(store_max_ts_at_open(st), 1000 + NUMBERED - 1);
    ASSERT_U64_EQ(store_purge_horizon(st), 15);
    uint64_t rows, events;
    store_outbox_counts_at_open(st, &rows, &events);
    ASSERT_U64_EQ(rows, 2);
    ASSERT_U64_EQ(events, 5);

    /* The tree is built from the keys, the row whose stored hash was 0 included. */
    struct merkle *m = NULL;
    ASSERT_OK(merkle_new(&m, 16, 2));
    ASSERT_OK(store_attach_tree(st, m));
    ASSERT_U64_EQ(merkle_count(m), NUMBERED + 6);
    uint8_t a[MERKLE_DIGEST_LEN], b[MERKLE_DIGEST_LEN];
    merkle_root(m, a);
    fresh_root(st, b);
    ASSERT_MEM_EQ(a, b, MERKLE_DIGEST_LEN);

    /* Writes work: an overwrite, a new key, a delete, an outbox message. */
    put(st, "alpha", "uno", 3000);
    put(st, "new", "x", 3001);
    put(st, "n:00001", NULL, 3002);
    uint64_t id;
    ASSERT_OK(store_outbox_add(st, (const uint8_t *) "p", 1, 1, &id));
    ASSERT(id > 2);
    ASSERT_OK(store_commit(st));
    ASSERT_U64_EQ(store_live_count(st), NUMBERED + 5);
    merkle_root(m, a);
    fresh_root(st, b);
    ASSERT_MEM_EQ(a, b, MERKLE_DIGEST_LEN);
    store_close(st);
    merkle_free(m);

    /* The column is gone, the schema is a new database's, and the file is sound. */
    ASSERT_EQ(query_raw_int(path, "PRAGMA user_version"), 6);
    ASSERT_EQ(query_raw_int(path, "SELECT count(*) FROM pragma_table_info('records')"
                                  " WHERE name = 'khash'"),
              0);
    char *check = query_raw(path, "PRAGMA integrity_check");
    ASSERT_STR_EQ(check, "ok");
    free(check);
    char *upgraded = schema_of(path);
    char fresh_dir[sizeof(tmp_root) + 8];
    snprintf(fresh_dir, sizeof(fresh_dir), "%s/fresh", tmp_root);
    store_close(open_ok(STORE_ENGINE_SQLITE, fresh_dir));
    char *fresh = schema_of(tmp_path("fresh/arborkv.db"));
    ASSERT_STR_EQ(upgraded, fresh);
    free(upgraded);
    free(fresh);

    /* And it reopens with the writes. */
    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    expect(st, "alpha", "uno");
    expect(st, "new", "x");
    expect(st, "n:00001", NULL);
    expect(st, "n:00002", "value 2");
    ASSERT_EQ(store_get(st, (const uint8_t *) "big", 3, &v, &n), 1);
    ASSERT_MEM_EQ(v, big, sizeof(big));
    ASSERT_U64_EQ(store_live_count(st), NUMBERED + 5);
    store_close(st);
    rm_tmp();
}

/* The stored record of key: asserts it exists; returns its ts. */
static uint64_t rec_ts(struct store *st, const char *key, bool *tombstone)
{
    struct store_rec r;
    ASSERT_EQ(store_get_rec(st, (const uint8_t *) key, strlen(key), &r), 1);
    if (tombstone) *tombstone = r.tombstone;
    return r.ts;
}

static bool has_rec(struct store *st, const char *key)
{
    struct store_rec r;
    int rc = store_get_rec(st, (const uint8_t *) key, strlen(key), &r);
    ASSERT(rc == 0 || rc == 1);
    return rc == 1;
}

TEST(purge_deletes_only_expired_tombstones_and_keeps_the_tree_in_step)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    struct merkle *m = NULL;
    ASSERT_OK(merkle_new(&m, 16, 2));
    ASSERT_OK(store_attach_tree(st, m));
    put(st, "old-dead", NULL, 100);
    put(st, "older-dead", NULL, 50);
    put(st, "young-dead", NULL, 1000);
    put(st, "old-live", "v", 10);
    put(st, "edge-dead", NULL, 500); /* ts == cutoff: not below it, kept */
    /* ts >= 2^63 is stored negative: in the far future, never expired. */
    put(st, "future-dead", NULL, (UINT64_C(1) << 63) + 5);
    ASSERT_OK(store_commit(st));
    ASSERT_U64_EQ(store_purge_horizon(st), 0);
    ASSERT_U64_EQ(store_live_count(st), 1);

    /* A batch limit of 1 takes the oldest first. */
    uint64_t n = 99;
    ASSERT_OK(store_begin(st));
    ASSERT_OK(store_purge(st, 500, 1, &n));
    ASSERT_U64_EQ(n, 1);
    ASSERT(!has_rec(st, "older-dead"));
    ASSERT(has_rec(st, "old-dead"));
    ASSERT_U64_EQ(store_purge_horizon(st), 50);
    ASSERT_OK(store_purge(st, 500, 100, &n));
    ASSERT_U64_EQ(n, 1);
    ASSERT_OK(store_purge(st, 500, 100, &n));
    ASSERT_U64_EQ(n, 0);
    ASSERT_OK(store_commit(st));
    ASSERT_U64_EQ(store_purge_horizon(st), 100);
    ASSERT(!has_rec(st, "old-dead"));
    ASSERT(has_rec(st, "young-dead") && has_rec(st, "edge-dead") && has_rec(st, "future-dead"));
    expect(st, "old-live", "v");
    ASSERT_U64_EQ(store_live_count(st), 1);
    ASSERT_U64_EQ(merkle_count(m), 4);
    uint8_t a[MERKLE_DIGEST_LEN], b[MERKLE_DIGEST_LEN];
    merkle_root(m, a);
    fresh_root(st, b);
    ASSERT_MEM_EQ(a, b, MERKLE_DIGEST_LEN);

    /* A rolled-back purge restores the rows' digests, the horizon and nothing else changes. */
    ASSERT_OK(store_begin(st));
    ASSERT_OK(store_purge(st, 2000, 100, &n));
    ASSERT_U64_EQ(n, 2);
    ASSERT_U64_EQ(store_purge_horizon(st), 1000);
    store_rollback(st);
    ASSERT_U64_EQ(store_purge_horizon(st), 100);
    merkle_root(m, b);
    ASSERT_MEM_EQ(a, b, MERKLE_DIGEST_LEN);
    ASSERT(has_rec(st, "young-dead"));
    store_close(st);

    /* The horizon is persisted. */
    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    ASSERT_U64_EQ(store_purge_horizon(st), 100);
    store_close(st);
    merkle_free(m);
    rm_tmp();
}

TEST(drop_deletes_only_the_exact_version)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    struct merkle *m = NULL;
    ASSERT_OK(merkle_new(&m, 16, 2));
    ASSERT_OK(store_attach_tree(st, m));
    put(st, "k", "v", 40);
    put(st, "other", "w", 41);
    ASSERT_OK(store_commit(st));
    struct store_rec want = { .key = (const uint8_t *) "k", .key_len = 1, .ts = 40 };
    fill_op_id(want.op_id, 40);

    ASSERT_OK(store_begin(st));
    struct store_rec wrong = want;
    wrong.ts = 39; /* another version */
    ASSERT_EQ(store_drop(st, &wrong), 0);
    wrong = want;
    wrong.op_id[3] ^= 1;
    ASSERT_EQ(store_drop(st, &wrong), 0);
    wrong = want;
    wrong.tombstone = true;
    ASSERT_EQ(store_drop(st, &wrong), 0);
    wrong = want;
    wrong.key = (const uint8_t *) "absent";
    wrong.key_len = 6;
    ASSERT_EQ(store_drop(st, &wrong), 0);
    ASSERT_U64_EQ(store_purge_horizon(st), 0);
    ASSERT_EQ(store_drop(st, &want), 1);
    ASSERT_OK(store_commit(st));
    ASSERT(!has_rec(st, "k")); /* gone, no tombstone left */
    ASSERT_U64_EQ(store_live_count(st), 1);
    ASSERT_U64_EQ(store_purge_horizon(st), 40);
    uint8_t a[MERKLE_DIGEST_LEN], b[MERKLE_DIGEST_LEN];
    merkle_root(m, a);
    fresh_root(st, b);
    ASSERT_MEM_EQ(a, b, MERKLE_DIGEST_LEN);
    ASSERT_U64_EQ(merkle_count(m), 1);
    store_close(st);
    merkle_free(m);
    rm_tmp();
}

/* store_put_if's condition for the test: records what it was shown, answers *arg. */
struct cond_probe {
    int answer;
    int calls;
    bool saw_rec;
    uint64_t saw_ts;
};

static int probe_cond(void *arg, const struct store_rec *cur, const struct store_rec *rec)
{
    struct cond_probe *p = arg;
    (void) rec;
    p->calls++;
    p->saw_rec = cur != NULL;
    p->saw_ts = cur ? cur->ts : 0;
    return p->answer;
}

TEST(put_if_writes_only_when_the_condition_agrees)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    struct merkle *m = NULL;
    ASSERT_OK(merkle_new(&m, 16, 2));
    ASSERT_OK(store_attach_tree(st, m));
    uint8_t empty[MERKLE_DIGEST_LEN], root[MERKLE_DIGEST_LEN];
    merkle_root(m, empty);
    struct store_rec rec = { .key = (const uint8_t *) "k",
                             .key_len = 1,
                             .value = (const uint8_t *) "v1",
                             .value_len = 2,
                             .ts = 10 };
    fill_op_id(rec.op_id, 10);

    /* Refused: nothing written, no transaction opened, the tree untouched. */
    struct cond_probe p = { .answer = 7 };
    ASSERT_EQ(store_put_if(st, &rec, probe_cond, &p), 7);
    ASSERT_EQ(p.calls, 1);
    ASSERT(!p.saw_rec);
    ASSERT(!store_in_txn(st));
    ASSERT(!has_rec(st, "k"));
    merkle_root(m, root);
    ASSERT_MEM_EQ(root, empty, MERKLE_DIGEST_LEN);

    /* Agreed: written in a transaction it opens. */
    p.answer = 0;
    ASSERT_EQ(store_put_if(st, &rec, probe_cond, &p), 0);
    ASSERT(store_in_txn(st));
    ASSERT_OK(store_commit(st));
    expect(st, "k", "v1");
    ASSERT_U64_EQ(store_live_count(st), 1);

    /* The condition sees the stored record. */
    rec.value = (const uint8_t *) "v2";
    rec.ts = 20;
    p.answer = 3;
    ASSERT_EQ(store_put_if(st, &rec, probe_cond, &p), 3);
    ASSERT(p.saw_rec);
    ASSERT_U64_EQ(p.saw_ts, 10);
    expect(st, "k", "v1");
    p.answer = 0;
    ASSERT_OK(store_begin(st)); /* inside the caller's transaction: joins it */
    ASSERT_EQ(store_put_if(st, &rec, probe_cond, &p), 0);
    store_rollback(st);
    expect(st, "k", "v1");
    bool tomb = true;
    ASSERT_U64_EQ(rec_ts(st, "k", &tomb), 10);
    ASSERT_U64_EQ(store_live_count(st), 1);
    store_close(st);
    merkle_free(m);
    rm_tmp();
}

/* Reads share a transaction until store_end_read, a write joins it, and close ends it. */
TEST(reads_share_a_transaction_that_a_write_continues)
{
    make_tmp();
    struct store *st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    put(st, "k", "v1", 10);
    ASSERT_OK(store_commit(st));
    expect(st, "k", "v1"); /* opens the read transaction */
    ASSERT(!store_in_txn(st));
    put(st, "k", "v2", 20); /* store_begin continues it as the write transaction */
    ASSERT(store_in_txn(st));
    ASSERT_OK(store_commit(st));
    expect(st, "k", "v2");
    store_end_read(st);
    store_end_read(st); /* nothing open: no-op */
    expect(st, "k", "v2");
    put(st, "j", "w", 30);
    store_rollback(st);
    expect(st, "j", NULL);
    expect(st, "k", "v2");
    store_close(st); /* with the read transaction still open */
    st = open_ok(STORE_ENGINE_SQLITE, tmp_root);
    expect(st, "k", "v2");
    expect(st, "j", NULL);
    store_end_read(NULL);
    store_close(st);
    rm_tmp();
}

TEST(close_is_null_safe)
{
    store_close(NULL);
}

TEST_LIST{
    TEST_ENTRY(put_get_memory),
    TEST_ENTRY(tree_follows_writes_and_rollbacks),
    TEST_ENTRY(put_local_supersedes_the_stored_version),
    TEST_ENTRY(outbox_add_read_delete_and_counts),
    TEST_ENTRY(schema_1_is_migrated_keeping_records),
    TEST_ENTRY(new_database_gets_the_current_schema),
    TEST_ENTRY(schema_5_loses_the_key_hash_column_keeping_everything_else),
    TEST_ENTRY(purge_deletes_only_expired_tombstones_and_keeps_the_tree_in_step),
    TEST_ENTRY(drop_deletes_only_the_exact_version),
    TEST_ENTRY(put_if_writes_only_when_the_condition_agrees),
    TEST_ENTRY(reads_share_a_transaction_that_a_write_continues),
    TEST_ENTRY(put_get_sqlite),
    TEST_ENTRY(tombstone_and_live_count),
    TEST_ENTRY(empty_value_is_not_a_tombstone),
    TEST_ENTRY(rollback_restores_data_and_count),
    TEST_ENTRY(begin_is_idempotent_and_borrow_survives_until_next_call),
    TEST_ENTRY(commit_persists_and_close_discards_open_txn),
    TEST_ENTRY(memory_engine_starts_empty),
    TEST_ENTRY(max_ts_at_open),
    TEST_ENTRY(large_values),
    TEST_ENTRY(scan_order_binary_keys),
    TEST_ENTRY(scan_after_pages_through_everything),
    TEST_ENTRY(scan_prefix_after_live_keys_only_and_stop),
    TEST_ENTRY(scan_sees_open_transaction),
    TEST_ENTRY(directory_created_with_parents),
    TEST_ENTRY(path_through_a_file_is_refused),
    TEST_ENTRY(refuse_random_bytes),
    TEST_ENTRY(empty_file_is_initialized),
    TEST_ENTRY(refuse_foreign_sqlite_database),
    TEST_ENTRY(refuse_newer_schema),
    TEST_ENTRY(refuse_corrupt_records_table),
    TEST_ENTRY(checkpointer_lets_the_wal_start_over),
    TEST_ENTRY(second_open_of_same_directory_is_refused),
    TEST_ENTRY(unwritable_directory_is_a_clear_error),
    TEST_ENTRY(close_is_null_safe),
};

TEST_MAIN()
