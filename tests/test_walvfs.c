/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for walvfs: a commit's frames are in the WAL file when the commit returns, another
 * connection (on the default VFS, like the checkpointer) reads them, spilled frames of a rolled
 * back transaction do no harm, and a write that fails inside the buffer fails the commit and
 * leaves the database as it was. Each case works in its own mkdtemp() directory.
 */
#include "arborkv/walvfs.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "harness.h"

#define PAGE       4096
#define WAL_HEADER 32
#define FRAME      (24 + PAGE)

static char tmp_root[64];
static char db_path[128], wal_path[128];

static void make_tmp(void)
{
    test_make_tmp(tmp_root, sizeof(tmp_root), "walvfs");
    snprintf(db_path, sizeof(db_path), "%s/t.db", tmp_root);
    snprintf(wal_path, sizeof(wal_path), "%s/t.db-wal", tmp_root);
}

static void rm_tmp(void)
{
    test_rm_tmp(tmp_root);
}

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) ASSERT_FAIL_("%s: %s", sql, err ? err : sqlite3_errstr(rc));
}

static long long query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    ASSERT_EQ(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
    long long v = sqlite3_column_int64(s, 0);
    ASSERT_EQ(sqlite3_finalize(s), SQLITE_OK);
    return v;
}

static int last_frames; /* the WAL's length in frames after the last commit (wal hook) */

static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void) arg;
    (void) db;
    (void) name;
    last_frames = frames;
    return SQLITE_OK;
}

/* The writer, on walvfs, set up like the store's connection (checkpoints are someone else's). */
static sqlite3 *open_writer(int cache_pages)
{
    ASSERT_OK(walvfs_register());
    sqlite3 *db = NULL;
    ASSERT_EQ(
            sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, WALVFS_NAME),
            SQLITE_OK);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "PRAGMA page_size = %d; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
             "PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = %d;",
             PAGE, cache_pages);
    exec_ok(db, sql);
    exec_ok(db, "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v BLOB NOT NULL)");
    sqlite3_wal_hook(db, wal_hook, NULL);
    return db;
}

/* A second connection on the default VFS, like the checkpointer's. */
static sqlite3 *open_reader(void)
{
    sqlite3 *db = NULL;
    ASSERT_EQ(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    return db;
}

static off_t file_size(const char *path)
{
    struct stat sb;
    ASSERT_OK(stat(path, &sb));
    return sb.st_size;
}

/* Inserts keys [from, from + n) with values of vlen bytes derived from the key, one statement
 * each, in the open transaction. Returns the sqlite3_step result of the first failure or DONE. */
static int insert_rows(sqlite3 *db, int from, int n, int vlen)
{
    sqlite3_stmt *s = NULL;
    ASSERT_EQ(sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO t(k, v) VALUES(?1, randomblob(?2))",
                                 -1, &s, NULL),
              SQLITE_OK);
    int rc = SQLITE_DONE;
    for (int i = from; i < from + n && rc == SQLITE_DONE; i++) {
        ASSERT_EQ(sqlite3_bind_int(s, 1, i), SQLITE_OK);
        ASSERT_EQ(sqlite3_bind_int(s, 2, vlen), SQLITE_OK);
        rc = sqlite3_step(s);
        ASSERT_EQ(sqlite3_reset(s), rc == SQLITE_DONE ? SQLITE_OK : rc);
    }
    ASSERT_EQ(sqlite3_finalize(s), SQLITE_OK);
    return rc;
}

static void assert_intact(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL), SQLITE_OK);
    ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
    ASSERT_STR_EQ((const char *) sqlite3_column_text(s, 0), "ok");
    ASSERT_EQ(sqlite3_finalize(s), SQLITE_OK);
}

/* ---- cases --------------------------------------------------------------------------------- */

/* After every commit, small (one frame) to large (several buffers' worth), the WAL file holds
 * exactly the frames SQLite counts, and the reader sees the rows. */
TEST(commit_is_in_the_file_when_it_returns)
{
    make_tmp();
    sqlite3 *w = open_writer(2000), *r = open_reader();
    int sizes[] = { 1, 3, 40, 1, 400, 2, 3000, 7, 1 }; /* rows of 300 bytes per commit */
    int total = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        exec_ok(w, "BEGIN");
        ASSERT_EQ(insert_rows(w, total, sizes[i], 300), SQLITE_DONE);
        exec_ok(w, "COMMIT");
        total += sizes[i];
        ASSERT(last_frames > 0);
        ASSERT_EQ(file_size(wal_path), WAL_HEADER + (off_t) last_frames * FRAME);
        ASSERT_EQ(query_int(r, "SELECT count(*) FROM t"), total);
        ASSERT_EQ(query_int(r, "SELECT sum(length(v)) FROM t"), 300LL * total);
    }
    assert_intact(r);
    ASSERT_EQ(sqlite3_close(r), SQLITE_OK);
    ASSERT_EQ(sqlite3_close(w), SQLITE_OK);
    rm_tmp();
}

/* A transaction larger than the page cache spills frames into the WAL before its commit; rolled
 * back, they must not reach readers or damage the next commits. */
TEST(spilled_frames_of_a_rollback_do_no_harm)
{
    make_tmp();
    sqlite3 *w = open_writer(8), *r = open_reader();
    exec_ok(w, "BEGIN");
    ASSERT_EQ(insert_rows(w, 0, 100, 200), SQLITE_DONE);
    exec_ok(w, "COMMIT");
    for (int round = 0; round < 3; round++) {
        exec_ok(w, "BEGIN");
        ASSERT_EQ(insert_rows(w, 1000, 3000, 500), SQLITE_DONE); /* far more than 8 pages */
        exec_ok(w, "ROLLBACK");
        ASSERT_EQ(query_int(r, "SELECT count(*) FROM t"), 100 + round);
        exec_ok(w, "BEGIN");
        ASSERT_EQ(insert_rows(w, 100 + round, 1, 200), SQLITE_DONE);
        exec_ok(w, "COMMIT");
        ASSERT_EQ(query_int(r, "SELECT count(*) FROM t"), 101 + round);
        ASSERT_EQ(query_int(w, "SELECT count(*) FROM t"), 101 + round);
    }
    assert_intact(r);
    assert_intact(w);
    ASSERT_EQ(sqlite3_close(w), SQLITE_OK);
    ASSERT_EQ(sqlite3_close(r), SQLITE_OK);
    rm_tmp();
}

/* The reader checkpoints (PASSIVE, as the checkpointer does) between the writer's commits, and
 * the WAL restarts under the writer: the file ends up with every row and intact. */
TEST(checkpoints_from_another_connection)
{
    make_tmp();
    sqlite3 *w = open_writer(50), *r = open_reader();
    int total = 0;
    for (int i = 0; i < 60; i++) {
        exec_ok(w, "BEGIN");
        ASSERT_EQ(insert_rows(w, total, 1 + (i * 37) % 200, 100), SQLITE_DONE);
        exec_ok(w, "COMMIT");
        total += 1 + (i * 37) % 200;
        if (i % 7 == 3) exec_ok(r, "PRAGMA wal_checkpoint(PASSIVE)");
        ASSERT_EQ(query_int(r, "SELECT count(*) FROM t"), total);
    }
    ASSERT_EQ(sqlite3_close(w), SQLITE_OK);
    ASSERT_EQ(sqlite3_close(r), SQLITE_OK);
    r = open_reader();
    ASSERT_EQ(query_int(r, "SELECT count(*) FROM t"), total);
    assert_intact(r);
    ASSERT_EQ(sqlite3_close(r), SQLITE_OK);
    rm_tmp();
}

/* The WAL cannot grow (RLIMIT_FSIZE): the buffered writes fail when they are passed on, the
 * commit reports it, and nothing of the transaction is visible; once the file can grow again
 * the same connection commits normally. */
TEST(failed_write_fails_the_commit)
{
    make_tmp();
    sqlite3 *w = open_writer(2000), *r = open_reader();
    exec_ok(w, "BEGIN");
    ASSERT_EQ(insert_rows(w, 0, 50, 100), SQLITE_DONE);
    exec_ok(w, "COMMIT");
    ASSERT_EQ(query_int(r, "SELECT count(*) FROM t"), 50);

    signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG instead */
    struct rlimit old, lim;
    ASSERT_OK(getrlimit(RLIMIT_FSIZE, &old));
    lim = old;
    lim.rlim_cur = (rlim_t) file_size(wal_path) + 3 * FRAME; /* room for part of the commit */
    ASSERT_OK(setrlimit(RLIMIT_FSIZE, &lim));
    for (int n = 1; n <= 400; n *= 20) { /* the failure lands in the commit frame or earlier */
        exec_ok(w, "BEGIN");
        int rc = insert_rows(w, 1000, n * 10, 300);
        if (rc == SQLITE_DONE) rc = sqlite3_exec(w, "COMMIT", NULL, NULL, NULL);
        ASSERT((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_FULL);
        if (sqlite3_get_autocommit(w) == 0) exec_ok(w, "ROLLBACK");
        ASSERT_EQ(query_int(r, "SELECT count(*) FROM t"), 50);
        ASSERT_EQ(query_int(w, "SELECT count(*) FROM t"), 50);
    }
    ASSERT_OK(setrlimit(RLIMIT_FSIZE, &old));
    exec_ok(w, "BEGIN");
    ASSERT_EQ(insert_rows(w, 50, 500, 300), SQLITE_DONE);
    exec_ok(w, "COMMIT");
    ASSERT_EQ(query_int(r, "SELECT count(*) FROM t"), 550);
    assert_intact(r);
    ASSERT_EQ(sqlite3_close(w), SQLITE_OK);
    ASSERT_EQ(sqlite3_close(r), SQLITE_OK);
    r = open_reader();
    ASSERT_EQ(query_int(r, "SELECT count(*) FROM t"), 550);
    assert_intact(r);
    ASSERT_EQ(sqlite3_close(r), SQLITE_OK);
    rm_tmp();
}

TEST_LIST{
    TEST_ENTRY(commit_is_in_the_file_when_it_returns),
    TEST_ENTRY(spilled_frames_of_a_rollback_do_no_harm),
    TEST_ENTRY(checkpoints_from_another_connection),
    TEST_ENTRY(failed_write_fails_the_commit),
};

TEST_MAIN()
