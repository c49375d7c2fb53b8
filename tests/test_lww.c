/* SPDX-License-Identifier: MIT */
/* Unit tests for the last-write-wins order (replication.md §1). */
#include "arborkv/lww.h"

#include "harness.h"

static struct store_rec rec(uint64_t ts, uint8_t id0, const char *value)
{
    struct store_rec r = { .key = (const uint8_t *) "k", .key_len = 1, .ts = ts };
    memset(r.op_id, 0, sizeof(r.op_id));
    r.op_id[0] = id0;
    if (value) {
        r.value = (const uint8_t *) value;
        r.value_len = strlen(value);
    } else {
        r.tombstone = true;
    }
    return r;
}

TEST(ts_decides_first)
{
    struct store_rec a = rec(2, 0, "a"), b = rec(1, 255, "b");
    ASSERT(lww_cmp(&a, &b) > 0);
    ASSERT(lww_cmp(&b, &a) < 0);
    /* ts is unsigned: the top bit set is larger, not negative. */
    struct store_rec hi = rec(UINT64_C(1) << 63, 0, "x"), lo = rec(1, 0, "y");
    ASSERT(lww_cmp(&hi, &lo) > 0);
}

TEST(op_id_breaks_ts_ties_bytewise)
{
    struct store_rec a = rec(5, 0x80, "a"), b = rec(5, 0x7f, "b");
    ASSERT(lww_cmp(&a, &b) > 0); /* unsigned bytes */
    b.op_id[15] = 1;             /* later bytes matter only when earlier ones tie */
    ASSERT(lww_cmp(&a, &b) > 0);
    struct store_rec c = rec(5, 0x80, "a");
    c.op_id[15] = 1;
    ASSERT(lww_cmp(&c, &a) > 0);
}

TEST(a_delete_is_a_record_like_any_other)
{
    struct store_rec del = rec(10, 0, NULL), old_set = rec(9, 255, "v"), new_set = rec(11, 0, "v");
    ASSERT(lww_cmp(&del, &old_set) > 0); /* no resurrection by a late older SET */
    ASSERT(lww_cmp(&new_set, &del) > 0);
}

TEST(same_write_is_equal)
{
    struct store_rec a = rec(7, 3, "same"), b = rec(7, 3, "same");
    ASSERT_EQ(lww_cmp(&a, &b), 0);
    struct store_rec t1 = rec(7, 3, NULL), t2 = rec(7, 3, NULL);
    ASSERT_EQ(lww_cmp(&t1, &t2), 0);
}

TEST(damaged_ties_converge)
{
    struct store_rec tomb = rec(7, 3, NULL), val = rec(7, 3, "v");
    ASSERT(lww_cmp(&tomb, &val) > 0);
    ASSERT(lww_cmp(&val, &tomb) < 0);
    struct store_rec big = rec(7, 3, "b"), small = rec(7, 3, "a");
    ASSERT(lww_cmp(&big, &small) > 0);
    struct store_rec longer = rec(7, 3, "ab"), prefix = rec(7, 3, "a");
    ASSERT(lww_cmp(&longer, &prefix) > 0);
    struct store_rec empty = rec(7, 3, "");
    ASSERT(lww_cmp(&prefix, &empty) > 0);
    ASSERT(lww_cmp(&empty, &prefix) < 0);
}

TEST(antisymmetric_over_many_pairs)
{
    static const char *vals[] = { NULL, "", "a", "b", "ab" };
    for (uint64_t ts = 0; ts < 3; ts++)
        for (int id = 0; id < 3; id++)
            for (int v = 0; v < 5; v++)
                for (uint64_t ts2 = 0; ts2 < 3; ts2++)
                    for (int id2 = 0; id2 < 3; id2++)
                        for (int v2 = 0; v2 < 5; v2++) {
                            struct store_rec a = rec(ts, (uint8_t) id, vals[v]);
                            struct store_rec b = rec(ts2, (uint8_t) id2, vals[v2]);
                            int ab = lww_cmp(&a, &b), ba = lww_cmp(&b, &a);
                            ASSERT((ab > 0 && ba < 0) || (ab < 0 && ba > 0) ||
                                   (ab == 0 && ba == 0));
                            ASSERT((ab == 0) == (ts == ts2 && id == id2 && v == v2));
                        }
}

TEST_LIST{
    TEST_ENTRY(ts_decides_first),
    TEST_ENTRY(op_id_breaks_ts_ties_bytewise),
    TEST_ENTRY(a_delete_is_a_record_like_any_other),
    TEST_ENTRY(same_write_is_equal),
    TEST_ENTRY(damaged_ties_converge),
    TEST_ENTRY(antisymmetric_over_many_pairs),
};

TEST_MAIN()
