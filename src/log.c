/* SPDX-License-Identifier: MIT */
/*
 * log: leveled one-line logging to stderr; see include/arborkv/log.h.
 *
 * Each line is formatted into a local buffer and written with a single write(2) so lines from
 * the paho threads (issue: replication) never interleave mid-line.
 */
#include "arborkv/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum log_level log_threshold = LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

const char *log_level_name(enum log_level l)
{
    return (l >= LOG_DEBUG && l <= LOG_ERROR) ? level_names[l] : "?";
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = LOG_DEBUG; i <= LOG_ERROR; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum log_level) i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = LOG_WARN;
        return 0;
    }
    return -EINVAL;
}

void log_write(enum log_level l, const char *fmt, ...)
{
    char line[2048];
    struct timespec now;
    struct tm tm;
    (void) clock_gettime(CLOCK_REALTIME, &now);
    (void) gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    int m = snprintf(line + n, sizeof(line) - n, ".%03ldZ %-5s ", now.tv_nsec / 1000000L,
                     log_level_name(l));
    if (m > 0) n += (size_t) m;
    va_list ap;
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m > 0) n += ((size_t) m < sizeof(line) - n - 1) ? (size_t) m : sizeof(line) - n - 2;
    line[n++] = '\n';
    /* stderr is best effort: a closed or full pipe must not take the server down. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void) w;
}
