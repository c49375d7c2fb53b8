/* SPDX-License-Identifier: MIT */
/*
 * store_int.h: internals shared by store.c (the connection, its statements and store_open) and
 * store_schema.c (what the tables are and how a database of an older version is brought up to
 * date). Private to the store: never include it elsewhere, as nothing else may see SQLite.
 *
 * Both functions run inside store_open(), on the loop's connection while it is opened with
 * EXCLUSIVE locking, before any statement is prepared. They report SQLite failures as SQLite
 * codes and leave the explanation to store_open (store.c, open_error), which maps every SQLite
 * failure of opening the same way: not a database, corrupt, permission denied, locked.
 */
#ifndef ARBORKV_STORE_INT_H
#define ARBORKV_STORE_INT_H

#include <stddef.h>

struct sqlite3; /* <sqlite3.h>: typedef struct sqlite3 sqlite3 */

/*
 * Reads the marker of an opened database (application_id, user_version). Returns its schema
 * version, 0 for an empty database (ours to initialize), or a negative errno with a reason in
 * err (errlen bytes, NUL-terminated) when the file is not ours to open: -EBADMSG (another
 * application's database, or our marker without a version) or -ENOTSUP (a newer arborkv's).
 * When SQLite fails to read it: -EIO with *sqlrc set and err untouched, for the caller to
 * explain from sqlite3_errmsg(db).
 */
int store_schema_check(struct sqlite3 *db, const char *path, int *sqlrc, char *err, size_t errlen);

/*
 * Brings a database of schema version from (0: empty) to the current one, one transaction per
 * version, each setting the marker with its tables. Returns SQLITE_OK (also when it is current),
 * or the SQLite code of the step that failed: that step's transaction is then still open, so
 * that the caller can read sqlite3_errmsg(db), and the caller rolls it back (the steps before it
 * stay committed; the next open goes on from there).
 */
int store_schema_migrate(struct sqlite3 *db, int from);

#endif
