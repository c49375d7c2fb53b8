/* SPDX-License-Identifier: MIT */
/*
 * log: one line per event on stderr: "<ISO time> <level> <message>".
 *
 * The macros test the level before formatting anything. Nothing is logged per command or per
 * connection at the default level (info): a harness that never reads stderr must not block us.
 * Leaf modules (line, resp, codec, merkle, hlc, buf) never log.
 */
#ifndef ARBORKV_LOG_H
#define ARBORKV_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

extern enum log_level log_threshold; /* messages below this level are dropped */

/* Parses "debug", "info", "warn"/"warning", "error" (case-insensitive). Returns 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level l);

void log_write(enum log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_at(l, ...)                                         \
    do {                                                       \
        if ((l) >= log_threshold) log_write((l), __VA_ARGS__); \
    } while (0)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

#endif
