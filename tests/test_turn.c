/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for turn: the end of a loop turn's write transaction. A turn that wrote nothing runs
 * no hook; one that wrote commits between its hooks' before() and after(), in slot order; a
 * failed BEGIN or a failed before() rolls the whole turn back and tells every after() so.
 */
#include "arborkv/turn.h"

#include <errno.h>
#include <sqlite3.h>

#include "arborkv/store.h"

#include "harness.h"

static char tmp_root[64];

/* What the hooks saw, in order: "b0" = before() of slot 0, "a1+" / "a1-" = after() of slot 1
 * with committed true / false. */
struct trace {
    char log[128];
    int fail_before_slot; /* -1: none */
};

struct probe {
    struct trace *t;
    int slot;
};

static void note(struct trace *t, const char *s)
{
    strncat(t->log, s, sizeof(t->log) - strlen(t->log) - 1);
}

static int before(void *arg)
{
    struct probe *p = arg;
    char s[8];
    snprintf(s, sizeof(s), "b%d ", p->slot);
    note(p->t, s);
    return p->t->fail_before_slot == p->slot ? -EIO : 0;
}

static void after(void *arg, bool committed)
{
    struct probe *p = arg;
    char s[8];
    snprintf(s, sizeof(s), "a%d%c ", p->slot, committed ? '+' : '-');
    note(p->t, s);
}

struct fixture {
    struct store *st;
    struct turn *turn;
    struct trace trace;
    struct probe probes[TURN_SLOTS];
};

static void setup(struct fixture *f)
{
    test_make_tmp(tmp_root, sizeof(tmp_root), "turn");
    char err[256] = "";
    int rc = store_open(&f->st, STORE_ENGINE_SQLITE, tmp_root, STORE_DURABLE_PROCESS, err,
                        sizeof(err));
    if (rc != 0) fprintf(stderr, "store_open: %s\n", err);
    ASSERT_OK(rc);
    f->turn = turn_new(f->st);
    memset(&f->trace, 0, sizeof(f->trace));
    f->trace.fail_before_slot = -1;
    /* Registered out of order: the slot decides the order, not the registration. */
    for (int i = TURN_SLOTS - 1; i >= 0; i--) {
        f->probes[i] = (struct probe){ &f->trace, i };
        turn_set_hook(f->turn, (enum turn_slot) i,
                      &(struct turn_hook){ before, after, &f->probes[i] });
    }
}

static void teardown(struct fixture *f)
{
    turn_free(f->turn);
    store_close(f->st);
    test_rm_tmp(tmp_root);
}

static void put(struct fixture *f, const char *key, const char *value)
{
    struct store_rec r = { .key = (const uint8_t *) key,
                           .key_len = strlen(key),
                           .value = (const uint8_t *) value,
                           .value_len = strlen(value),
                           .ts = 1 };
    ASSERT_OK(store_begin(f->st));
    ASSERT_OK(store_put(f->st, &r));
}

static bool has(struct fixture *f, const char *key)
{
    const uint8_t *v;
    size_t n;
    int rc = store_get(f->st, (const uint8_t *) key, strlen(key), &v, &n);
    ASSERT(rc >= 0);
    store_end_read(f->st);
    return rc == 1;
}

static struct turn_stats stats(struct fixture *f)
{
    struct turn_stats s;
    turn_get_stats(f->turn, &s);
    return s;
}

TEST(a_turn_that_wrote_nothing_runs_no_hook)
{
    struct fixture f;
    setup(&f);
    ASSERT_EQ(turn_end(f.turn), 0);
    ASSERT_STR_EQ(f.trace.log, "");
    ASSERT_U64_EQ(stats(&f).commits, 0);
    teardown(&f);
}

TEST(commit_between_the_hooks_in_slot_order)
{
    struct fixture f;
    setup(&f);
    put(&f, "k", "v");
    ASSERT_EQ(turn_end(f.turn), 1);
    ASSERT_STR_EQ(f.trace.log, "b0 b1 b2 a0+ a1+ a2+ ");
    ASSERT(!store_in_txn(f.st));
    ASSERT(has(&f, "k"));
    ASSERT_U64_EQ(stats(&f).commits, 1);
    ASSERT_U64_EQ(stats(&f).failures, 0);
    teardown(&f);
}

TEST(a_failed_before_rolls_the_turn_back)
{
    struct fixture f;
    setup(&f);
    f.trace.fail_before_slot = 0;
    put(&f, "k", "v");
    ASSERT_EQ(turn_end(f.turn), -EIO);
    /* Later before()s are not asked; every after() hears of the rollback. */
    ASSERT_STR_EQ(f.trace.log, "b0 a0- a1- a2- ");
    ASSERT(!store_in_txn(f.st) && !store_txn_failed(f.st));
    ASSERT(!has(&f, "k"));
    ASSERT_U64_EQ(stats(&f).failures, 1);
    /* The next turn starts clean. */
    f.trace.fail_before_slot = -1;
    f.trace.log[0] = '\0';
    put(&f, "k2", "v");
    ASSERT_EQ(turn_end(f.turn), 1);
    ASSERT(has(&f, "k2"));
    teardown(&f);
}

TEST(a_failed_begin_fails_the_whole_turn)
{
    struct fixture f;
    setup(&f);
    put(&f, "first", "v");
    ASSERT_EQ(turn_end(f.turn), 1);

    /* Another connection holds the write lock: this turn's BEGIN fails. */
    char path[128];
    snprintf(path, sizeof(path), "%s/arborkv.db", tmp_root);
    sqlite3 *other;
    ASSERT_EQ(sqlite3_open(path, &other), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    ASSERT_EQ(store_begin(f.st), -EIO);
    ASSERT(store_txn_failed(f.st));
    ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    /* Even with the lock free again, the rest of the turn cannot write: it has failed. */
    ASSERT_EQ(store_begin(f.st), -EIO);
    f.trace.log[0] = '\0';
    ASSERT_EQ(turn_end(f.turn), -EIO);
    ASSERT_STR_EQ(f.trace.log, "a0- a1- a2- ");
    ASSERT_U64_EQ(stats(&f).failures, 1);

    /* The next turn writes as usual. */
    put(&f, "second", "v");
    ASSERT_EQ(turn_end(f.turn), 1);
    ASSERT(has(&f, "first") && has(&f, "second"));
    ASSERT_EQ(sqlite3_close(other), SQLITE_OK);
    teardown(&f);
}

TEST_LIST{
    TEST_ENTRY(a_turn_that_wrote_nothing_runs_no_hook),
    TEST_ENTRY(commit_between_the_hooks_in_slot_order),
    TEST_ENTRY(a_failed_before_rolls_the_turn_back),
    TEST_ENTRY(a_failed_begin_fails_the_whole_turn),
};

TEST_MAIN()
