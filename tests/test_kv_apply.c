/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for kv_apply_remote, the one path by which a record from elsewhere (event,
 * anti-entropy repair, SYNC) enters the store: last-write-wins against the stored record, the
 * clock, the Merkle tree, and the refusal of what a purged tombstone may have beaten.
 */
#include "arborkv/kv_apply.h"

#include "arborkv/hlc.h"
#include "arborkv/merkle.h"
#include "arborkv/store.h"

#include "harness.h"

static char tmp_root[64];

struct fixture {
    struct store *st;
    struct merkle *tree;
    struct hlc clock;
};

static void setup(struct fixture *f)
{
    test_make_tmp(tmp_root, sizeof(tmp_root), "kv-apply");
    char err[256] = "";
    int rc = store_open(&f->st, STORE_ENGINE_SQLITE, tmp_root, STORE_DURABLE_PROCESS, err,
                        sizeof(err));
    if (rc != 0) fprintf(stderr, "store_open: %s\n", err);
    ASSERT_OK(rc);
    ASSERT_OK(merkle_new(&f->tree, 4, 2));
    ASSERT_OK(store_attach_tree(f->st, f->tree));
    hlc_init(&f->clock, 0, UINT64_C(3600) * 1000000000ULL);
}

static void teardown(struct fixture *f)
{
    store_close(f->st);
    merkle_free(f->tree);
    test_rm_tmp(tmp_root);
}

/* A record of key with value (NULL: tombstone), ts and an op_id whose first byte is id0. */
static struct store_rec rec(const char *key, const char *value, uint64_t ts, uint8_t id0)
{
    struct store_rec r = { .key = (const uint8_t *) key, .key_len = strlen(key), .ts = ts };
    memset(r.op_id, 0x11, sizeof(r.op_id));
    r.op_id[0] = id0;
    if (value) {
        r.value = (const uint8_t *) value;
        r.value_len = strlen(value);
    } else {
        r.tombstone = true;
    }
    return r;
}

static int apply(struct fixture *f, const struct store_rec *r)
{
    return kv_apply_remote(&f->clock, f->st, r);
}

/* The stored record of key: its value ("" for a tombstone, NULL when none) and ts. */
static const char *stored(struct fixture *f, const char *key, uint64_t *ts)
{
    static char val[64];
    struct store_rec cur;
    int rc = store_get_rec(f->st, (const uint8_t *) key, strlen(key), &cur);
    ASSERT(rc >= 0);
    if (rc == 0) return NULL;
    if (ts) *ts = cur.ts;
    if (cur.tombstone) return "";
    ASSERT(cur.value_len < sizeof(val));
    memcpy(val, cur.value, cur.value_len);
    val[cur.value_len] = '\0';
    return val;
}

static void commit(struct fixture *f)
{
    ASSERT_OK(store_commit(f->st));
}

TEST(newer_wins_older_loses)
{
    struct fixture f;
    setup(&f);
    struct store_rec v1 = rec("k", "one", 100, 1), v2 = rec("k", "two", 200, 1);
    ASSERT_EQ(apply(&f, &v1), KV_APPLIED);
    ASSERT_EQ(apply(&f, &v2), KV_APPLIED);
    ASSERT_EQ(apply(&f, &v1), KV_OLDER); /* late and older: the stored record stays */
    commit(&f);
    uint64_t ts = 0;
    ASSERT_STR_EQ(stored(&f, "k", &ts), "two");
    ASSERT_U64_EQ(ts, 200);
    teardown(&f);
}

TEST(equal_ts_is_decided_by_op_id)
{
    struct fixture f;
    setup(&f);
    struct store_rec lo = rec("k", "lo", 100, 0x10), hi = rec("k", "hi", 100, 0x20);
    ASSERT_EQ(apply(&f, &hi), KV_APPLIED);
    ASSERT_EQ(apply(&f, &lo), KV_OLDER);
    commit(&f);
    ASSERT_STR_EQ(stored(&f, "k", NULL), "hi");
    /* The other arrival order ends the same. */
    struct store_rec lo2 = rec("j", "lo", 100, 0x10), hi2 = rec("j", "hi", 100, 0x20);
    ASSERT_EQ(apply(&f, &lo2), KV_APPLIED);
    ASSERT_EQ(apply(&f, &hi2), KV_APPLIED);
    commit(&f);
    ASSERT_STR_EQ(stored(&f, "j", NULL), "hi");
    teardown(&f);
}

TEST(the_same_record_again_changes_nothing)
{
    struct fixture f;
    setup(&f);
    struct store_rec v = rec("k", "v", 100, 1);
    ASSERT_EQ(apply(&f, &v), KV_APPLIED);
    commit(&f);
    uint8_t before[MERKLE_DIGEST_LEN], after[MERKLE_DIGEST_LEN];
    merkle_root(f.tree, before);
    ASSERT_EQ(apply(&f, &v), KV_SAME);
    commit(&f);
    merkle_root(f.tree, after);
    ASSERT(memcmp(before, after, sizeof(before)) == 0);
    teardown(&f);
}

TEST(tombstone_against_value)
{
    struct fixture f;
    setup(&f);
    struct store_rec set = rec("k", "v", 100, 1), del = rec("k", NULL, 150, 1);
    ASSERT_EQ(apply(&f, &set), KV_APPLIED);
    ASSERT_EQ(apply(&f, &del), KV_APPLIED);
    ASSERT_EQ(apply(&f, &set), KV_OLDER); /* no resurrection by a late older SET */
    commit(&f);
    ASSERT_STR_EQ(stored(&f, "k", NULL), "");
    struct store_rec again = rec("k", "back", 160, 1);
    ASSERT_EQ(apply(&f, &again), KV_APPLIED); /* a newer SET after the delete is welcome */
    /* An older tombstone arriving late loses to the newer value. */
    struct store_rec old_del = rec("k", NULL, 120, 0xff);
    ASSERT_EQ(apply(&f, &old_del), KV_OLDER);
    commit(&f);
    ASSERT_STR_EQ(stored(&f, "k", NULL), "back");
    teardown(&f);
}

TEST(merkle_tree_follows_every_applied_record)
{
    struct fixture f;
    setup(&f);
    uint8_t empty[MERKLE_DIGEST_LEN], one[MERKLE_DIGEST_LEN], two[MERKLE_DIGEST_LEN];
    merkle_root(f.tree, empty);
    struct store_rec v1 = rec("k", "one", 100, 1), v2 = rec("k", "two", 200, 1);
    ASSERT_EQ(apply(&f, &v1), KV_APPLIED);
    commit(&f);
    merkle_root(f.tree, one);
    ASSERT_U64_EQ(merkle_count(f.tree), 1);
    ASSERT(memcmp(empty, one, sizeof(one)) != 0);
    ASSERT_EQ(apply(&f, &v2), KV_APPLIED);
    commit(&f);
    merkle_root(f.tree, two);
    ASSERT_U64_EQ(merkle_count(f.tree), 1);
    ASSERT(memcmp(one, two, sizeof(one)) != 0);
    /* Equal to a tree built from the stored record alone. */
    struct merkle *fresh;
    ASSERT_OK(merkle_new(&fresh, 4, 2));
    merkle_add(fresh, &v2);
    uint8_t want[MERKLE_DIGEST_LEN];
    merkle_root(fresh, want);
    merkle_free(fresh);
    ASSERT(memcmp(two, want, sizeof(want)) == 0);
    teardown(&f);
}

TEST(the_clock_moves_past_what_it_receives)
{
    struct fixture f;
    setup(&f);
    uint64_t ahead = hlc_wall_ns() + UINT64_C(60) * 1000000000ULL; /* a minute ahead: in skew */
    struct store_rec v = rec("k", "v", ahead, 1);
    ASSERT_EQ(apply(&f, &v), KV_APPLIED);
    commit(&f);
    /* A local write after it is ordered after it. */
    ASSERT(hlc_now(&f.clock, hlc_wall_ns()) > ahead);
    /* Even a record that loses LWW advances the clock (it is a timestamp seen). */
    struct store_rec older = rec("k", "w", ahead + 1000, 0);
    struct store_rec newest = rec("k", "x", ahead + 5000, 0);
    ASSERT_EQ(apply(&f, &newest), KV_APPLIED);
    ASSERT_EQ(apply(&f, &older), KV_OLDER);
    commit(&f);
    ASSERT(hlc_now(&f.clock, hlc_wall_ns()) > ahead + 5000);
    teardown(&f);
}

TEST(what_a_purged_tombstone_may_have_beaten_is_refused)
{
    struct fixture f;
    setup(&f);
    struct store_rec gone = rec("gone", NULL, 100, 1), kept = rec("kept", "v", 20, 1);
    ASSERT_EQ(apply(&f, &gone), KV_APPLIED); /* deleted at 100 */
    ASSERT_EQ(apply(&f, &kept), KV_APPLIED);
    commit(&f);
    uint64_t n = 0;
    ASSERT_OK(store_begin(f.st));
    ASSERT_OK(store_purge(f.st, 150, 100, &n));
    commit(&f);
    ASSERT_U64_EQ(n, 1);
    ASSERT_U64_EQ(store_purge_horizon(f.st), 100);

    /* The live value the delete replaced, arriving late: refused, not resurrected. */
    struct store_rec late = rec("gone", "old", 90, 1);
    ASSERT_EQ(apply(&f, &late), KV_PURGED);
    late.ts = 100; /* not above the horizon either */
    ASSERT_EQ(apply(&f, &late), KV_PURGED);
    struct store_rec old_del = rec("gone", NULL, 99, 1); /* nor an old tombstone */
    ASSERT_EQ(apply(&f, &old_del), KV_PURGED);
    commit(&f);
    ASSERT(stored(&f, "gone", NULL) == NULL);
    /* A key the store holds is decided by LWW as always, whatever its age. */
    struct store_rec aged = rec("kept", "w", 30, 1);
    ASSERT_EQ(apply(&f, &aged), KV_APPLIED);
    /* A newer write of the purged key is welcome. */
    struct store_rec newer = rec("gone", "new", 101, 1);
    ASSERT_EQ(apply(&f, &newer), KV_APPLIED);
    commit(&f);
    ASSERT_STR_EQ(stored(&f, "kept", NULL), "w");
    uint64_t ts = 0;
    ASSERT_STR_EQ(stored(&f, "gone", &ts), "new");
    ASSERT_U64_EQ(ts, 101);
    teardown(&f);
}

TEST_LIST{
    TEST_ENTRY(newer_wins_older_loses),
    TEST_ENTRY(equal_ts_is_decided_by_op_id),
    TEST_ENTRY(the_same_record_again_changes_nothing),
    TEST_ENTRY(tombstone_against_value),
    TEST_ENTRY(merkle_tree_follows_every_applied_record),
    TEST_ENTRY(the_clock_moves_past_what_it_receives),
    TEST_ENTRY(what_a_purged_tombstone_may_have_beaten_is_refused),
};

TEST_MAIN()
