/* SPDX-License-Identifier: MIT */
/*
 * line: the MerkleKV-compatible line protocol (protocol.md §1-§3), as a pure parser.
 *
 * Two steps, neither touching a socket:
 *   1. framing: line_next() finds the next request line in a byte buffer;
 *   2. grammar: line_parse() turns one request line into a canonical argv for the shared command
 *      dispatcher, or into the exact client-facing error message of protocol.md §2/§3.
 *
 * Canonical argv (argv[0] is a static upper-case command name; the other slices point into the
 * request line and stay valid as long as it does):
 *   GET k                      -> GET k
 *   SET k v                    -> SET k v            (v = everything after the key, verbatim)
 *   DEL k | DELETE k           -> DEL k
 *   INC/INCR k [n]             -> INCRBY k n         (n defaults to "1"; already validated)
 *   DEC/DECR k [n]             -> DECRBY k n
 *   APPEND k v / PREPEND k v   -> APPEND k v / PREPEND k v
 *   MGET k1 k2 ...             -> MGET k1 k2 ...
 *   MSET k1 v1 ...             -> MSET k1 v1 ...
 *   SCAN [prefix]              -> SCAN [prefix]
 *   EXISTS k1 ...              -> EXISTS k1 ...
 *   DBSIZE                     -> DBSIZE
 *   PING [msg]                 -> PING [msg]         (msg = rest verbatim)
 *   ECHO msg                   -> ECHO msg
 *   MEMORY                     -> MEMORY
 *   CLIENT [LIST]              -> CLIENT LIST
 *   TRUNCATE / FLUSHDB         -> TRUNCATE / FLUSHDB (arguments ignored; TRUNCATE keeps its name
 *                                                     so STATS counts it as bulk, protocol.md §4)
 *   STATS / INFO / VERSION     -> STATS / INFO / VERSION   (STATS, INFO: arguments ignored)
 *   HASH [arg]                 -> HASH [arg]
 *   SYNC host port [flags]     -> SYNC host port [--full] [--verify]   (validated)
 *   REPLICATE action           -> REPLICATE ENABLE|DISABLE|STATUS
 *   SHUTDOWN / QUIT            -> SHUTDOWN / QUIT    (QUIT: arguments ignored)
 */
#ifndef ARBORKV_LINE_H
#define ARBORKV_LINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arborkv/buf.h"

/* protocol.md §1: the longest accepted request line, terminator ("\n", and "\r" if any) included.
 */
#define LINE_MAX_BYTES (1024 * 1024)

/* Incremental framing state, embedded by the connection. */
struct line_parser {
    size_t scanned; /* bytes at the front of the input already known to hold no '\n' */
};

void line_parser_init(struct line_parser *p);

/*
 * Finds the next request line in data[0..len).
 * Returns 1 and sets *line (a [borrow] pointer into data), *line_len (without the '\n' and without
 * one '\r' before it) and *consumed (bytes to drop from the input, terminator included);
 * returns 0 when more bytes are needed; returns -E2BIG when the pending line is already longer
 * than LINE_MAX_BYTES (the caller replies "ERROR line too long" and closes).
 * With eof true, trailing bytes without '\n' are returned as one last line (protocol.md §1).
 * The caller must call it again with the same data advanced by *consumed (or with more data
 * appended after a 0 return); p->scanned remembers progress so long lines are scanned once.
 */
int line_next(struct line_parser *p, const uint8_t *data, size_t len, bool eof,
              const uint8_t **line, size_t *line_len, size_t *consumed);

/* A parsed request: a canonical argv or an error message. */
struct line_cmd {
    struct slice *argv; /* argc entries; heap array owned by the struct, reused across parses */
    size_t argc;        /* number of entries in argv (>= 1 on success) */
    size_t argv_cap;    /* entries allocated */
    struct buf err;     /* on error: the message that follows "ERROR " (no CRLF) */
};

void line_cmd_init(struct line_cmd *c);
void line_cmd_clear(struct line_cmd *c);

/*
 * Parses one request line (as returned by line_next) per protocol.md §2-§3.
 * Returns 0 with c->argv filled, or -EBADMSG with c->err holding the message after "ERROR ".
 * argv slices borrow from line (and from static strings); valid until line changes or the next
 * line_parse on c.
 */
int line_parse(struct line_cmd *c, const uint8_t *line, size_t len);

/*
 * SYNC's arguments after the host (protocol.md §3): args[0] the port (ASCII digits, 0..=65535),
 * then --full and --verify, each at most once. Shared by the line grammar and the RESP form of
 * the command. Returns 0 with *port, *full and *verify set; or -EBADMSG with *why the error
 * message and *bad the token to append to it (NULL when why is the whole message).
 */
int line_sync_args(const struct slice *args, size_t n, int *port, bool *full, bool *verify,
                   const char **why, const struct slice **bad);

#endif
