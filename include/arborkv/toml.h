/* SPDX-License-Identifier: MIT */
/*
 * toml: a strict reader for the TOML subset of MerkleKV's config files (src/toml.c says what it
 * accepts and why it is ours). It knows no keys: the caller's handler gets every table header
 * and every `key = value` with its line and decides what they mean (conf.c).
 */
#ifndef ARBORKV_TOML_H
#define ARBORKV_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum toml_type { TOML_STR, TOML_INT, TOML_BOOL, TOML_ARRAY, TOML_OTHER };

struct toml_value {
    enum toml_type type; /* what was parsed */
    char *str;           /* TOML_STR: NUL-terminated, heap */
    int64_t i;           /* TOML_INT */
    bool b;              /* TOML_BOOL */
    char **items;        /* TOML_ARRAY of strings: NULL-terminated, heap; NULL if not all strings */
    size_t nitems;       /* TOML_ARRAY: elements */
    bool all_strings;    /* TOML_ARRAY: every element was a string */
    const char *bad;     /* not valid TOML (a bare word): the token, in the file text; or NULL */
    int bad_len;         /* its length, for messages (at most 40) */
};

/* Frees what the parser allocated in v and zeroes it. */
void toml_value_clear(struct toml_value *v);

struct toml_error {
    int line;         /* 1-based line of the error */
    char reason[512]; /* human-readable, no trailing newline */
};

struct toml_handler {
    /* A [table] header at line (optional). */
    void (*on_table)(void *arg, const char *table, int line);
    /* `key = value` in table ("" at top level); line is the key's. Returns 0, or -1 with why
     * (n bytes) set: the parse stops with that error at line. v is freed after the call. */
    int (*on_key)(void *arg, const char *table, const char *key, const struct toml_value *v,
                  int line, char *why, size_t n);
    void *arg;
};

/* Parses len bytes of text (a UTF-8 BOM is skipped). Returns 0, or -EINVAL with err set. */
int toml_parse(const char *text, size_t len, const struct toml_handler *h, struct toml_error *err);

#endif
