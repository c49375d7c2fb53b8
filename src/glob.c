/* SPDX-License-Identifier: MIT */
/*
 * glob: Redis-compatible glob matching; see include/arborkv/glob.h.
 *
 * Redis's stringmatchlen() recurses at every '*' and relies on an early-exit flag (and a nesting
 * cap of 1000) to stay polynomial. Here the pattern is a sequence of tokens that each match exactly
 * one byte ('?', a class, an escaped or plain literal) separated by runs of '*', so the classic
 * iterative matcher applies: match tokens left to right; on a mismatch, go back to just after the
 * most recent '*' and let that star swallow one more byte. Backtracking to the last star only is
 * enough because tokens have a fixed width of one byte: whatever an earlier star could absorb, the
 * last one can absorb too. Each (pattern position, string position) pair is visited at most once
 * per star restart, so the work is O(pat_len * s_len) with O(1) memory, whatever the pattern.
 *
 * Token parsing copies stringmatchlen() exactly (Redis 7), including its corner cases:
 *   - in a class, "\x" is the literal x and is compared case-sensitively even with nocase;
 *   - a range's ends are swapped if reversed *before* nocase folds them ("[Z-a]" with nocase is
 *     the empty range 'z'..'a', as in Redis);
 *   - "[a-]" is the range 'a'..']' (swapped to ']'..'a'), because the range test looks two bytes
 *     ahead before looking for the closing ']';
 *   - an unterminated class ("[abc") runs to the end of the pattern; "[" alone matches nothing and
 *     "[^" matches any one byte;
 *   - a trailing lone '\' is a literal backslash.
 * Deliberate differences, both where Redis's result is an accident of its implementation:
 *   - bytes are compared as unsigned: Redis compares plain (signed on x86) chars in ranges, so
 *     "[a-\xff]" means something else there on x86 than on ARM; unsigned is what ARM Redis does;
 *   - a pattern of only stars matches the empty string. stringmatchlen("*", "") is 0 because its
 *     loop never starts, but KEYS and SCAN special-case "*" before calling it, so a client sees an
 *     empty key listed by KEYS *; here the matcher itself gets that right for every caller.
 *   - no 1000-star nesting cap (Redis answers "no match" past it): there is no recursion to bound.
 * Case folding is ASCII only (Redis's tolower() in the C locale).
 */
#include "arborkv/glob.h"

#include <assert.h>

static uint8_t fold(uint8_t ch)
{
    return ch >= 'A' && ch <= 'Z' ? (uint8_t) (ch + ('a' - 'A')) : ch;
}

/*
 * Matches the class starting at pat[*pi] == '[' against c and moves *pi past it (past the ']', or
 * to pat_len when the class is unterminated), following stringmatchlen()'s loop step by step.
 */
static bool class_match(const uint8_t *pat, size_t pat_len, size_t *pi, uint8_t c, bool nocase)
{
    size_t i = *pi + 1;
    bool negate = i < pat_len && pat[i] == '^';
    bool match = false;
    if (negate) i++;
    for (;;) {
        if (i >= pat_len) break; /* unterminated: the class is the rest of the pattern */
        if (pat[i] == '\\' && pat_len - i >= 2) {
            i++;
            if (pat[i] == c) match = true;
        } else if (pat[i] == ']') {
            i++;
            break;
        } else if (pat_len - i >= 3 && pat[i + 1] == '-') {
            uint8_t lo = pat[i], hi = pat[i + 2], x = c;
            if (lo > hi) {
                uint8_t t = lo;
                lo = hi;
                hi = t;
            }
            if (nocase) {
                lo = fold(lo);
                hi = fold(hi);
                x = fold(x);
            }
            if (x >= lo && x <= hi) match = true;
            i += 2;
        } else if (nocase ? fold(pat[i]) == fold(c) : pat[i] == c) {
            match = true;
        }
        i++;
    }
    *pi = i > pat_len ? pat_len : i;
    return negate ? !match : match;
}

/* Matches the one-byte token at pat[*pi] (not '*') against c and moves *pi past it. */
static bool token_match(const uint8_t *pat, size_t pat_len, size_t *pi, uint8_t c, bool nocase)
{
    size_t i = *pi;
    switch (pat[i]) {
    case '?':
        *pi = i + 1;
        return true;
    case '[':
        return class_match(pat, pat_len, pi, c, nocase);
    case '\\':
        if (pat_len - i >= 2) i++; /* escaped byte; a trailing lone '\' is literal */
        break;
    default:
        break;
    }
    *pi = i + 1;
    return nocase ? fold(pat[i]) == fold(c) : pat[i] == c;
}

bool glob_match(const uint8_t *pat, size_t pat_len, const uint8_t *s, size_t s_len, bool nocase)
{
    assert((pat || pat_len == 0) && (s || s_len == 0));
    size_t pi = 0, si = 0;
    size_t star_pi = 0, star_si = 0; /* token after the last star, and where that star's run ends */
    bool star = false;

    while (si < s_len) {
        if (pi < pat_len && pat[pi] == '*') {
            while (pi < pat_len && pat[pi] == '*')
                pi++;
            if (pi == pat_len) return true; /* a trailing star swallows the rest */
            star = true;
            star_pi = pi;
            star_si = si;
            continue;
        }
        if (pi < pat_len) {
            size_t next = pi;
            if (token_match(pat, pat_len, &next, s[si], nocase)) {
                pi = next;
                si++;
                continue;
            }
        }
        if (!star) return false;
        /* Backtrack: the last star absorbs one more byte; retry the tokens after it. */
        pi = star_pi;
        si = ++star_si;
    }
    while (pi < pat_len && pat[pi] == '*')
        pi++;
    return pi == pat_len;
}
