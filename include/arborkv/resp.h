/* SPDX-License-Identifier: MIT */
/*
 * resp: RESP2 request parser and reply encoder (protocol.md §5), pure and socket-free.
 *
 * Requests are arrays of bulk strings ("*<n>\r\n" then n times "$<len>\r\n<bytes>\r\n"). The
 * parser is resumable: it keeps its position inside a partially received frame, so a frame that
 * arrives one byte at a time costs O(frame) in total. Arguments are returned as offsets into the
 * caller's input buffer (which may be reallocated between calls) and resolved with resp_arg().
 * Anything else (nested arrays, missing '$', bad lengths, lengths over the limits) is a protocol
 * error: the parser records a sticky error and message in the style of Redis
 * ("Protocol error: invalid multibulk length"); the caller replies "-ERR <msg>" and closes.
 */
#ifndef ARBORKV_RESP_H
#define ARBORKV_RESP_H

#include <stddef.h>
#include <stdint.h>

#include "arborkv/buf.h"

#define RESP_MAX_ARGS        (1024 * 1024)       /* elements in one request array */
#define RESP_MAX_BULK_BYTES  (64 * 1024 * 1024)  /* bytes in one bulk string */
#define RESP_MAX_FRAME_BYTES (256 * 1024 * 1024) /* bytes in one whole request frame */
#define RESP_MAX_LINE_BYTES  (64 * 1024)         /* a "*<n>" or "$<n>" header line */

struct resp_arg {
    size_t off; /* offset of the first byte in the input passed to resp_parser_next */
    size_t len; /* bytes */
};

struct resp_parser {
    int state;             /* internal: which header or payload is expected next */
    size_t pos;            /* bytes of the current frame already parsed */
    size_t scan;           /* offset up to which the current header line holds no "\r\n" */
    int64_t nargs;         /* elements announced by the array header */
    int64_t bulk_len;      /* length announced by the current "$" header, or -1 */
    struct resp_arg *args; /* parsed arguments of the current frame; heap, owned */
    size_t argc;           /* arguments parsed so far */
    size_t args_cap;       /* entries allocated in args */
    int err;               /* sticky: 0 or a negative errno once a protocol error was seen */
    char errstr[128];      /* message for "-ERR " when err != 0 */
};

void resp_parser_init(struct resp_parser *p);
void resp_parser_clear(struct resp_parser *p);

/*
 * Parses the next request frame, which starts at data[0] (data[0..len) holds all unconsumed input;
 * after a 0 return the caller calls again with the same start and more bytes appended).
 * Returns 1 when a whole frame is ready: p->argc arguments in p->args (offsets relative to data)
 * and *consumed = frame size; the next call starts a new frame at data + *consumed.
 * An empty array ("*0\r\n") or a run of blank lines between frames yields 1 with argc 0
 * (callers skip it, as Redis does).
 * Returns 0 when more bytes are needed, or <0 (-EBADMSG or -E2BIG) on a protocol error, with
 * p->errstr set; the error is sticky until resp_parser_init/clear.
 */
int resp_parser_next(struct resp_parser *p, const uint8_t *data, size_t len, size_t *consumed);

/* Reply encoders: append one RESP2 value to out. */
void resp_add_simple(struct buf *out, const char *s);              /* +s\r\n */
void resp_add_error(struct buf *out, const char *msg, size_t len); /* -msg\r\n (CR/LF -> ' ') */
void resp_add_int(struct buf *out, int64_t v);                     /* :v\r\n */
void resp_add_bulk(struct buf *out, const void *p, size_t len);    /* $len\r\n...\r\n */
void resp_add_bulk_str(struct buf *out, const char *s);
void resp_add_null(struct buf *out);                /* $-1\r\n */
void resp_add_array_len(struct buf *out, size_t n); /* *n\r\n */
void resp_add_null_array(struct buf *out);          /* *-1\r\n */

#endif
