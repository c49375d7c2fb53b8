/* SPDX-License-Identifier: MIT */
/* Unit tests for buf: growth, binary safety, numbers, consume/truncate. */
#include "arborkv/buf.h"

#include <stdint.h>

#include "harness.h"

TEST(append_grows_and_keeps_bytes)
{
    struct buf b;
    buf_init(&b);
    for (int i = 0; i < 10000; i++) {
        uint8_t c = (uint8_t) i;
        buf_append(&b, &c, 1);
    }
    ASSERT_EQ(b.len, 10000);
    ASSERT(b.cap > b.len);
    for (int i = 0; i < 10000; i++)
        ASSERT_EQ(b.data[i], (uint8_t) i);
    ASSERT_EQ(b.data[b.len], 0);
    buf_clear(&b);
    ASSERT(b.data == NULL);
    buf_clear(NULL);
}

TEST(binary_safe_with_nul_bytes)
{
    struct buf b;
    buf_init(&b);
    buf_append(&b, "a\0b\r\n", 5);
    ASSERT_EQ(b.len, 5);
    ASSERT_MEM_EQ(b.data, "a\0b\r\n", 5);
    buf_clear(&b);
}

TEST(numbers_and_printf)
{
    struct buf b;
    buf_init(&b);
    buf_append_u64(&b, 0);
    buf_append_str(&b, " ");
    buf_append_u64(&b, UINT64_MAX);
    buf_append_str(&b, " ");
    buf_append_i64(&b, INT64_MIN);
    buf_append_str(&b, " ");
    buf_append_i64(&b, -42);
    buf_printf(&b, " %s=%d", "x", 7);
    ASSERT_STR_EQ((const char *) b.data, "0 18446744073709551615 -9223372036854775808 -42 x=7");
    buf_clear(&b);
}

TEST(consume_and_truncate)
{
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, "hello world");
    buf_consume(&b, 6);
    ASSERT_SLICE_EQ(b.data, b.len, "world");
    buf_truncate(&b, 3);
    ASSERT_SLICE_EQ(b.data, b.len, "wor");
    buf_consume(&b, 100);
    ASSERT_EQ(b.len, 0);
    buf_reset(&b);
    ASSERT_EQ(b.len, 0);
    buf_clear(&b);
}

TEST(large_printf)
{
    struct buf b;
    buf_init(&b);
    char big[5000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    buf_printf(&b, "<%s>", big);
    ASSERT_EQ(b.len, sizeof(big) + 1);
    ASSERT_EQ(b.data[0], '<');
    ASSERT_EQ(b.data[b.len - 1], '>');
    buf_clear(&b);
}

TEST_LIST{
    TEST_ENTRY(append_grows_and_keeps_bytes),
    TEST_ENTRY(binary_safe_with_nul_bytes),
    TEST_ENTRY(numbers_and_printf),
    TEST_ENTRY(consume_and_truncate),
    TEST_ENTRY(large_printf),
};

TEST_MAIN()
