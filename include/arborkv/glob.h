/* SPDX-License-Identifier: MIT */
/*
 * glob: Redis-compatible glob matching, for KEYS, SCAN MATCH and CONFIG GET (protocol.md §5).
 *
 * Pattern syntax, as in Redis's stringmatchlen():
 *   *        any run of bytes, including none
 *   ?        exactly one byte
 *   [abc]    one byte from the set; [^abc] one byte not in it; [a-z] a range (ends may be given
 *            in either order); \x inside a class is the literal x; an unterminated class runs to
 *            the end of the pattern
 *   \x       the literal byte x; a lone trailing backslash is itself
 * Everything is (pointer, length) and binary-safe: NUL is an ordinary byte.
 */
#ifndef ARBORKV_GLOB_H
#define ARBORKV_GLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Returns true if the whole of s[0..s_len) matches pat[0..pat_len). nocase folds ASCII letters
 * (except escaped bytes inside a class, as in Redis). Both pointers are [borrow] and may be NULL
 * when their length is 0. Work is O(pat_len * s_len) at worst, with no recursion and no allocation.
 */
bool glob_match(const uint8_t *pat, size_t pat_len, const uint8_t *s, size_t s_len, bool nocase);

#endif
