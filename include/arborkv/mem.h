/* SPDX-License-Identifier: MIT */
/*
 * mem: allocation wrappers that abort on out-of-memory.
 *
 * A half-working replica is worse than a restart (anti-entropy repairs the gap), so our own
 * allocations never return NULL: they print the size and abort(). Sizes that come from the
 * network or a file must be checked against a named limit *before* calling these.
 */
#ifndef ARBORKV_MEM_H
#define ARBORKV_MEM_H

#include <stddef.h>

#define UNUSED(x) ((void) (x))

/* Returns **new** memory of n bytes; release with free(). Never returns NULL. */
void *xmalloc(size_t n);
/* Returns **new** zeroed memory for nmemb * size bytes (overflow-checked); release with free(). */
void *xcalloc(size_t nmemb, size_t size);
/* Resizes [take] p to n bytes; returns **new** pointer; release with free(). */
void *xrealloc(void *p, size_t n);
/* Returns **new** copy of the NUL-terminated s; release with free(). */
char *xstrdup(const char *s);
/* Returns **new** NUL-terminated copy of the n bytes at p; release with free(). */
char *xstrndup(const char *p, size_t n);

#endif
