/* SPDX-License-Identifier: MIT */
/*
 * buf: a growable, binary-safe byte buffer.
 *
 * The struct is embedded by its owner and grows in place, so callers never swap pointers after an
 * append. `data` is always NUL-terminated one past `len` once anything was appended (handy for
 * logging text), but nothing relies on that for binary content.
 */
#ifndef ARBORKV_BUF_H
#define ARBORKV_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data; /* NULL until the first append; heap, owned by the buf */
    size_t len;    /* bytes in use */
    size_t cap;    /* bytes allocated; cap >= len + 1 once data != NULL */
};

/* A (pointer, length) view of bytes owned by someone else. */
struct slice {
    const uint8_t *p; /* [borrow] first byte; may be NULL when len == 0 */
    size_t len;       /* bytes */
};

/* Compares s with an upper-case ASCII word, ASCII letters of s case-insensitively: <0, 0, >0. */
int slice_cmp_upper(const struct slice *s, const char *upper);
/* Whether s equals the upper-case ASCII word, case-insensitively. */
bool slice_is(const struct slice *s, const char *upper);

/* Writes a formatted reason into err (errlen bytes, NUL-terminated; nothing when err is NULL or
 * errlen 0) and returns rc, for `return reason_printf(err, errlen, -EIO, "...", ...);`. */
int reason_printf(char *err, size_t errlen, int rc, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

void buf_init(struct buf *b);
/* Frees the storage and reinitializes b. NULL-safe. */
void buf_clear(struct buf *b);
/* Forgets the contents, keeps the allocation. */
void buf_reset(struct buf *b);
/* Makes room for at least extra more bytes after len. */
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_append_str(struct buf *b, const char *s);
void buf_append_u64(struct buf *b, uint64_t v);
void buf_append_i64(struct buf *b, int64_t v);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/*
 * Parses a strict signed 64-bit decimal, [+-]?[0-9]+ with no overflow, no spaces (the syntax of
 * Rust's i64::from_str, which MerkleKV clients expect, and of Redis's integers). Returns false
 * when p[0..len) is not one; *out (may be NULL) is set only on success.
 */
bool parse_i64(const uint8_t *p, size_t len, int64_t *out);

/* Appends one "name:value\r\n" line (the STATS/INFO layout). */
void buf_add_field(struct buf *b, const char *name, uint64_t value);

/* Drops the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Cuts the buffer back to n bytes (n <= len). */
void buf_truncate(struct buf *b, size_t n);

#endif
