/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for glob: Redis's stringmatchlen() semantics (wildcards, classes, ranges, escapes,
 * nocase and its corner cases), binary safety, a brute-force recursive reference model over
 * random short patterns, and pathological patterns that must finish in linear-ish time.
 */
#include "arborkv/glob.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "harness.h"

/* Literal pattern and subject (sizeof keeps embedded NULs). */
#define MATCH(pat, s)                                                                          \
    glob_match((const uint8_t *) (pat), sizeof(pat) - 1, (const uint8_t *) (s), sizeof(s) - 1, \
               false)
#define MATCH_NOCASE(pat, s) \
    glob_match((const uint8_t *) (pat), sizeof(pat) - 1, (const uint8_t *) (s), sizeof(s) - 1, true)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

TEST(literals)
{
    ASSERT(MATCH("hello", "hello"));
    ASSERT(!MATCH("hello", "hellO"));
    ASSERT(!MATCH("hello", "hell"));
    ASSERT(!MATCH("hell", "hello"));
    ASSERT(MATCH("", ""));
    ASSERT(!MATCH("", "a"));
    ASSERT(!MATCH("a", ""));
}

TEST(star)
{
    ASSERT(MATCH("*", "anything"));
    ASSERT(MATCH("h*llo", "hllo"));
    ASSERT(MATCH("h*llo", "heeeello"));
    ASSERT(!MATCH("h*llo", "heeeell"));
    ASSERT(MATCH("user:*", "user:42"));
    ASSERT(MATCH("user:*", "user:"));
    ASSERT(!MATCH("user:*", "user"));
    ASSERT(MATCH("*:42", "user:42"));
    ASSERT(MATCH("a*b*c", "aXXbYYc"));
    ASSERT(MATCH("a*b*c", "abc"));
    ASSERT(!MATCH("a*b*c", "acb"));
    ASSERT(MATCH("a**b", "ab"));
    ASSERT(MATCH("*a", "aaa"));
    ASSERT(MATCH("a*a", "aa"));
    ASSERT(!MATCH("a*a", "a"));
}

TEST(star_matches_empty_string)
{
    /* Deliberate: Redis's stringmatchlen("*", "") is 0, but KEYS * and SCAN special-case "*". */
    ASSERT(MATCH("*", ""));
    ASSERT(MATCH("**", ""));
    ASSERT(!MATCH("*a", ""));
    ASSERT(!MATCH("?", ""));
    ASSERT(!MATCH("[a]", ""));
}

TEST(question_mark)
{
    ASSERT(MATCH("h?llo", "hello"));
    ASSERT(MATCH("h?llo", "hallo"));
    ASSERT(!MATCH("h?llo", "hllo"));
    ASSERT(MATCH("???", "abc"));
    ASSERT(!MATCH("???", "ab"));
    ASSERT(MATCH("*?", "a"));
    ASSERT(!MATCH("*??", "a"));
}

TEST(class_set)
{
    ASSERT(MATCH("h[ae]llo", "hello"));
    ASSERT(MATCH("h[ae]llo", "hallo"));
    ASSERT(!MATCH("h[ae]llo", "hillo"));
    ASSERT(!MATCH("h[ae]llo", "hllo"));
    ASSERT(MATCH("[*]", "*"));
    ASSERT(!MATCH("[*]", "a"));
    ASSERT(MATCH("[?]x", "?x"));
    ASSERT(MATCH("[[]", "["));
}

TEST(class_negated)
{
    ASSERT(MATCH("h[^e]llo", "hallo"));
    ASSERT(MATCH("h[^e]llo", "hbllo"));
    ASSERT(!MATCH("h[^e]llo", "hello"));
    ASSERT(!MATCH("h[^e]llo", "hllo"));
    ASSERT(MATCH("[^a-c]", "d"));
    ASSERT(!MATCH("[^a-c]", "b"));
    ASSERT(MATCH("[a^]", "^")); /* '^' only negates right after '[' */
}

TEST(class_range)
{
    ASSERT(MATCH("h[a-b]llo", "hallo"));
    ASSERT(MATCH("h[a-b]llo", "hbllo"));
    ASSERT(!MATCH("h[a-b]llo", "hcllo"));
    ASSERT(MATCH("[0-9][0-9]", "42"));
    ASSERT(!MATCH("[0-9]", "x"));
    ASSERT(MATCH("[a-cx-z]", "y"));
    ASSERT(MATCH("[z-a]", "m")); /* reversed ends are swapped */
    ASSERT(MATCH("[a-a]", "a"));
    ASSERT(MATCH("[-a]", "-"));
}

TEST(class_range_quirks_as_redis)
{
    /* "[a-]": the range test looks two bytes ahead first, so this is 'a'..']', i.e. ']'..'a'. */
    ASSERT(MATCH("[a-]", "_"));
    ASSERT(MATCH("[a-]", "a"));
    ASSERT(!MATCH("[a-]", "-"));
    /* ... and the class then has no closing ']', so it runs to the end of the pattern. */
    ASSERT(MATCH("[a-]x", "x"));
    ASSERT(!MATCH("[a-]x", "_x"));
}

TEST(class_unterminated)
{
    ASSERT(MATCH("[abc", "b"));
    ASSERT(!MATCH("[abc", "bc"));
    ASSERT(!MATCH("[abc", "d"));
    ASSERT(!MATCH("[", "["));
    ASSERT(!MATCH("[", "a"));
    ASSERT(MATCH("[^", "q"));
    ASSERT(!MATCH("[^", ""));
    ASSERT(MATCH("a[", "a") == false);
    ASSERT(MATCH("x[\\", "x\\"));
}

TEST(escapes)
{
    ASSERT(MATCH("h\\*llo", "h*llo"));
    ASSERT(!MATCH("h\\*llo", "hello"));
    ASSERT(MATCH("\\?", "?"));
    ASSERT(!MATCH("\\?", "a"));
    ASSERT(MATCH("\\[a]", "[a]"));
    ASSERT(MATCH("\\\\", "\\"));
    ASSERT(MATCH("\\a", "a"));
    ASSERT(MATCH("a\\", "a\\")); /* a lone trailing backslash is literal */
    ASSERT(!MATCH("a\\", "a"));
    ASSERT(MATCH("*\\*", "abc*"));
    ASSERT(!MATCH("*\\*", "abc"));
}

TEST(escapes_in_class)
{
    ASSERT(MATCH("[\\]]", "]"));
    ASSERT(MATCH("[\\]a]", "a"));
    ASSERT(MATCH("[\\-]", "-"));
    ASSERT(MATCH("[\\^a]", "^"));
    ASSERT(MATCH("[a\\-z]", "-"));
    ASSERT(!MATCH("[a\\-z]", "m")); /* the escape breaks the range */
}

TEST(nocase)
{
    ASSERT(MATCH_NOCASE("HELLO", "hello"));
    ASSERT(MATCH_NOCASE("hello", "HeLLo"));
    ASSERT(!MATCH("HELLO", "hello"));
    ASSERT(MATCH_NOCASE("h?LLO", "hello"));
    ASSERT(MATCH_NOCASE("*O", "hello"));
    ASSERT(MATCH_NOCASE("[A-Z]", "q"));
    ASSERT(MATCH_NOCASE("[a-z]", "Q"));
    ASSERT(!MATCH("[A-Z]", "q"));
    ASSERT(MATCH_NOCASE("[XYZ]", "y"));
    ASSERT(MATCH_NOCASE("\\A", "a")); /* an escaped literal outside a class still folds */
    ASSERT(MATCH_NOCASE("maxmemory*", "MAXMEMORY-POLICY"));
    ASSERT(!MATCH_NOCASE("\xc3\x89", "\xc3\xa9")); /* ASCII folding only */
}

TEST(nocase_quirks_as_redis)
{
    /* An escaped byte inside a class is compared exactly, even with nocase. */
    ASSERT(!MATCH_NOCASE("[\\A]", "a"));
    ASSERT(MATCH_NOCASE("[\\A]", "A"));
    /* Range ends are ordered before folding: [Z-a] is 'Z'..'a' without nocase ('_' is inside),
     * and the empty 'z'..'a' with it. */
    ASSERT(MATCH("[Z-a]", "_"));
    ASSERT(!MATCH_NOCASE("[Z-a]", "_"));
    ASSERT(!MATCH_NOCASE("[Z-a]", "z"));
}

TEST(binary_safe)
{
    ASSERT(MATCH("a\0*", "a\0bc"));
    ASSERT(!MATCH("a\0*", "a"));
    ASSERT(MATCH("a?c", "a\0c"));
    ASSERT(MATCH("[\0]", "\0"));
    ASSERT(MATCH("*\0", "xyz\0"));
    ASSERT(!MATCH("abc", "abc\0"));
    ASSERT(MATCH("\\\0", "\0"));
    ASSERT(glob_match(NULL, 0, NULL, 0, false));
    ASSERT(!glob_match(NULL, 0, (const uint8_t *) "a", 1, false));
}

TEST(high_bytes_are_unsigned)
{
    ASSERT(MATCH("[\x80-\xff]", "\xc3"));
    ASSERT(!MATCH("[\x80-\xff]", "a"));
    ASSERT(MATCH("[a-\xff]", "\xff"));
    ASSERT(!MATCH("[a-\xff]", "\x10"));
    ASSERT(MATCH("caf\xc3\xa9:*", "caf\xc3\xa9:1"));
}

TEST(config_get_style_patterns)
{
    ASSERT(MATCH_NOCASE("save", "save"));
    ASSERT(MATCH_NOCASE("*", "appendonly"));
    ASSERT(MATCH_NOCASE("max*", "maxclients"));
    ASSERT(!MATCH_NOCASE("max*", "port"));
}

/*
 * Reference model: a direct recursive reading of the semantics, written independently of
 * glob.c (exponential, so only for short inputs). Each non-star token is parsed by a
 * two-pass class reader: collect the items, then test them.
 */
static uint8_t ref_fold(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t) (c | 0x20) : c;
}

/* Returns the width of the token at p[0] (not '*') and sets *ok to whether it matches c. */
static size_t ref_token(const uint8_t *p, size_t n, uint8_t c, bool nocase, bool *ok)
{
    if (p[0] == '?') {
        *ok = true;
        return 1;
    }
    if (p[0] == '\\' && n >= 2) {
        *ok = nocase ? ref_fold(p[1]) == ref_fold(c) : p[1] == c;
        return 2;
    }
    if (p[0] != '[') {
        *ok = nocase ? ref_fold(p[0]) == ref_fold(c) : p[0] == c;
        return 1;
    }
    size_t i = 1;
    bool neg = false, hit = false;
    if (i < n && p[i] == '^') {
        neg = true;
        i++;
    }
    while (i < n) {
        size_t left = n - i;
        if (p[i] == '\\' && left >= 2) { /* escaped member: exact comparison */
            hit = hit || p[i + 1] == c;
            i += 2;
        } else if (p[i] == ']') {
            i++;
            *ok = neg != hit;
            return i;
        } else if (left >= 3 && p[i + 1] == '-') {
            unsigned a = p[i], b = p[i + 2], x = c;
            unsigned lo = a < b ? a : b, hi = a < b ? b : a;
            if (nocase) {
                lo = ref_fold((uint8_t) lo);
                hi = ref_fold((uint8_t) hi);
                x = ref_fold(c);
            }
            hit = hit || (x >= lo && x <= hi);
            i += 3;
        } else {
            hit = hit || (nocase ? ref_fold(p[i]) == ref_fold(c) : p[i] == c);
            i++;
        }
    }
    *ok = neg != hit;
    return n; /* unterminated class: the rest of the pattern */
}

static bool ref_match(const uint8_t *p, size_t pn, const uint8_t *s, size_t sn, bool nocase)
{
    if (pn == 0) return sn == 0;
    if (p[0] == '*')
        return ref_match(p + 1, pn - 1, s, sn, nocase) ||
               (sn > 0 && ref_match(p, pn, s + 1, sn - 1, nocase));
    if (sn == 0) return false;
    bool ok = false;
    size_t w = ref_token(p, pn, s[0], nocase, &ok);
    return ok && ref_match(p + w, pn - w, s + 1, sn - 1, nocase);
}

TEST(random_against_reference_model)
{
    static const char pat_alpha[] = "ab*?[]^-\\A";
    static const char str_alpha[] = "ab-]^\\A*";
    uint32_t seed = 7;
    uint8_t pat[9], s[9];
    for (int iter = 0; iter < 300000; iter++) {
        seed = seed * 1103515245u + 12345u;
        size_t pn = (seed >> 16) % sizeof(pat);
        seed = seed * 1103515245u + 12345u;
        size_t sn = (seed >> 16) % sizeof(s);
        for (size_t i = 0; i < pn; i++) {
            seed = seed * 1103515245u + 12345u;
            pat[i] = (uint8_t) pat_alpha[(seed >> 16) % (sizeof(pat_alpha) - 1)];
        }
        for (size_t i = 0; i < sn; i++) {
            seed = seed * 1103515245u + 12345u;
            s[i] = (uint8_t) str_alpha[(seed >> 16) % (sizeof(str_alpha) - 1)];
        }
        bool nocase = (iter & 1) != 0;
        bool want = ref_match(pat, pn, s, sn, nocase);
        bool got = glob_match(pat, pn, s, sn, nocase);
        if (want != got) {
            fprintf(stderr, "pattern \"%.*s\" string \"%.*s\" nocase %d: want %d got %d\n",
                    (int) pn, (const char *) pat, (int) sn, (const char *) s, nocase, want, got);
            abort();
        }
    }
}

TEST(pathological_stars_finish_quickly)
{
    size_t n = 100000;
    uint8_t *s = malloc(n);
    ASSERT(s != NULL);
    memset(s, 'a', n);
    double t0 = now_s();
    static const char p1[] = "*a*a*a*a*a*a*b";
    ASSERT(!glob_match((const uint8_t *) p1, sizeof(p1) - 1, s, n, false));
    static const char p2[] = "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
    ASSERT(!glob_match((const uint8_t *) p2, sizeof(p2) - 1, s, n, false));
    static const char p3[] = "*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*b";
    ASSERT(!glob_match((const uint8_t *) p3, sizeof(p3) - 1, s, n, false));
    static const char p4[] = "*[a]*[a]*[a]*[a]*[a]*[a]*[a]*[a]*[b]";
    ASSERT(!glob_match((const uint8_t *) p4, sizeof(p4) - 1, s, n, true));
    s[n - 1] = 'b';
    ASSERT(glob_match((const uint8_t *) p1, sizeof(p1) - 1, s, n, false));
    ASSERT(glob_match((const uint8_t *) p2, sizeof(p2) - 1, s, n, false));
    double elapsed = now_s() - t0;
    ASSERT(elapsed < 5.0); /* O(pattern * string): milliseconds, even under sanitizers */
    free(s);
}

TEST(pathological_many_stars)
{
    /* 2000 star groups (past Redis's nesting cap of 1000) against 20000 bytes. */
    size_t pn = 4001, sn = 20000;
    uint8_t *p = malloc(pn), *s = malloc(sn);
    ASSERT(p != NULL && s != NULL);
    for (size_t i = 0; i + 1 < pn; i += 2) {
        p[i] = '*';
        p[i + 1] = 'a';
    }
    p[pn - 1] = '*';
    memset(s, 'a', sn);
    double t0 = now_s();
    ASSERT(glob_match(p, pn, s, sn, false));
    p[pn - 1] = 'b';
    ASSERT(!glob_match(p, pn, s, sn, false));
    ASSERT(now_s() - t0 < 10.0);
    free(p);
    free(s);
}

TEST_LIST{
    TEST_ENTRY(literals),
    TEST_ENTRY(star),
    TEST_ENTRY(star_matches_empty_string),
    TEST_ENTRY(question_mark),
    TEST_ENTRY(class_set),
    TEST_ENTRY(class_negated),
    TEST_ENTRY(class_range),
    TEST_ENTRY(class_range_quirks_as_redis),
    TEST_ENTRY(class_unterminated),
    TEST_ENTRY(escapes),
    TEST_ENTRY(escapes_in_class),
    TEST_ENTRY(nocase),
    TEST_ENTRY(nocase_quirks_as_redis),
    TEST_ENTRY(binary_safe),
    TEST_ENTRY(high_bytes_are_unsigned),
    TEST_ENTRY(config_get_style_patterns),
    TEST_ENTRY(random_against_reference_model),
    TEST_ENTRY(pathological_stars_finish_quickly),
    TEST_ENTRY(pathological_many_stars),
};

TEST_MAIN()
