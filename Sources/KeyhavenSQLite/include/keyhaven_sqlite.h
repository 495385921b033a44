// The part of SQLite's C API that Keyhaven calls directly.
//
// SQLite is compiled into the process once, by sqlite-nio, with its functions renamed `sqlite_nio_sqlite3_*`.
// Keyhaven uses that same copy: two copies of SQLite in one process, opening the same file, would break each
// other's POSIX locks (https://sqlite.org/howtocorrupt.html, §2.2.1). These declarations match SQLite 3's
// documented signatures; the linker finds the definitions in sqlite-nio's objects.
#ifndef KEYHAVEN_SQLITE_H
#define KEYHAVEN_SQLITE_H

#include <stdint.h>

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;

int sqlite_nio_sqlite3_open_v2(const char *filename, sqlite3 **db, int flags, const char *vfs);
int sqlite_nio_sqlite3_close_v2(sqlite3 *db);
int sqlite_nio_sqlite3_busy_timeout(sqlite3 *db, int milliseconds);
const char *sqlite_nio_sqlite3_errmsg(sqlite3 *db);
int sqlite_nio_sqlite3_extended_errcode(sqlite3 *db);
int sqlite_nio_sqlite3_get_autocommit(sqlite3 *db);
int sqlite_nio_sqlite3_db_config(sqlite3 *db, int op, ...);

int sqlite_nio_sqlite3_prepare_v3(
    sqlite3 *db, const char *sql, int bytes, unsigned int flags, sqlite3_stmt **statement, const char **tail);
int sqlite_nio_sqlite3_step(sqlite3_stmt *statement);
int sqlite_nio_sqlite3_reset(sqlite3_stmt *statement);
int sqlite_nio_sqlite3_clear_bindings(sqlite3_stmt *statement);
int sqlite_nio_sqlite3_finalize(sqlite3_stmt *statement);
int sqlite_nio_sqlite3_stmt_status(sqlite3_stmt *statement, int op, int reset);

int sqlite_nio_sqlite3_bind_parameter_count(sqlite3_stmt *statement);
int sqlite_nio_sqlite3_bind_double(sqlite3_stmt *statement, int index, double value);
int sqlite_nio_sqlite3_bind_int64(sqlite3_stmt *statement, int index, int64_t value);
int sqlite_nio_sqlite3_bind_null(sqlite3_stmt *statement, int index);
int sqlite_nio_sqlite3_bind_text64(
    sqlite3_stmt *statement, int index, const char *text, uint64_t bytes, void (*destructor)(void *),
    unsigned char encoding);
int sqlite_nio_sqlite3_bind_blob64(
    sqlite3_stmt *statement, int index, const void *bytes, uint64_t count, void (*destructor)(void *));

int sqlite_nio_sqlite3_column_count(sqlite3_stmt *statement);
const char *sqlite_nio_sqlite3_column_name(sqlite3_stmt *statement, int column);
int sqlite_nio_sqlite3_column_type(sqlite3_stmt *statement, int column);
int64_t sqlite_nio_sqlite3_column_int64(sqlite3_stmt *statement, int column);
double sqlite_nio_sqlite3_column_double(sqlite3_stmt *statement, int column);
const unsigned char *sqlite_nio_sqlite3_column_text(sqlite3_stmt *statement, int column);
const void *sqlite_nio_sqlite3_column_blob(sqlite3_stmt *statement, int column);
int sqlite_nio_sqlite3_column_bytes(sqlite3_stmt *statement, int column);

/// Binds a copy of `count` bytes of UTF-8 text (SQLite's SQLITE_TRANSIENT). An empty buffer may have no address;
/// SQLite would bind a NULL pointer as NULL, so it gets an empty string's.
static inline int keyhaven_sqlite_bind_text(sqlite3_stmt *statement, int index, const char *text, uint64_t count) {
    return sqlite_nio_sqlite3_bind_text64(statement, index, text ? text : "", count, (void (*)(void *))-1, 1);
}

/// Binds a copy of `count` bytes (SQLite's SQLITE_TRANSIENT); an empty buffer is an empty blob, not NULL.
static inline int keyhaven_sqlite_bind_blob(sqlite3_stmt *statement, int index, const void *bytes, uint64_t count) {
    return sqlite_nio_sqlite3_bind_blob64(statement, index, bytes ? bytes : "", count, (void (*)(void *))-1);
}

/// Turns on the query planner stability guarantee (SQLITE_DBCONFIG_ENABLE_QPSG): a plan never depends on bound
/// values, so binding new values to a cached statement never makes SQLite prepare it again.
static inline int keyhaven_sqlite_enable_qpsg(sqlite3 *db) {
    return sqlite_nio_sqlite3_db_config(db, 1007, 1, (int *)0);
}

/// How many times SQLite prepared `statement` again since it was first prepared (SQLITE_STMTSTATUS_REPREPARE).
static inline int keyhaven_sqlite_reprepares(sqlite3_stmt *statement) {
    return sqlite_nio_sqlite3_stmt_status(statement, 5, 0);
}

/// Adds Keyhaven's SQL functions to `db`: `saturating_sum(x)`, an aggregate that adds whole numbers as SUM does
/// but stops at the largest (or smallest) 64-bit integer instead of failing with "integer overflow", as
/// PostgreSQL's `LEAST(SUM(x), 9223372036854775807)` does. Defined in shim.c.
int keyhaven_sqlite_add_functions(sqlite3 *db);

/// What the write-ahead log received, counted by the hook ``keyhaven_sqlite_watch_wal`` installs: commits, frames
/// (pages) appended by them, and the frames in the log after the last commit. Read and written on the thread that
/// commits on the connection only.
typedef struct {
    int64_t commits;
    int64_t frames;
    int pages;
} keyhaven_wal_counts;

/// Installs a hook on `db` that counts every commit into `counts` (which must outlive the connection). It replaces
/// SQLite's automatic checkpoint, which would otherwise run inside the commit that crosses its threshold: whoever
/// installs it checkpoints the log itself. Defined in shim.c.
void keyhaven_sqlite_watch_wal(sqlite3 *db, keyhaven_wal_counts *counts);

/// Copies committed frames of the log into the database file without waiting for readers or writers
/// (SQLITE_CHECKPOINT_PASSIVE); `log` and `copied` receive the frames in the log and the frames copied.
int sqlite_nio_sqlite3_wal_checkpoint_v2(sqlite3 *db, const char *name, int mode, int *log, int *copied);

enum {
    KEYHAVEN_SQLITE_OK = 0,
    KEYHAVEN_SQLITE_ROW = 100,
    KEYHAVEN_SQLITE_DONE = 101,
    KEYHAVEN_SQLITE_INTEGER = 1,
    KEYHAVEN_SQLITE_FLOAT = 2,
    KEYHAVEN_SQLITE_TEXT = 3,
    KEYHAVEN_SQLITE_BLOB = 4,
    KEYHAVEN_SQLITE_NULL = 5,
    KEYHAVEN_SQLITE_OPEN_READWRITE = 0x00000002,
    KEYHAVEN_SQLITE_OPEN_CREATE = 0x00000004,
    KEYHAVEN_SQLITE_OPEN_NOMUTEX = 0x00008000,
    KEYHAVEN_SQLITE_PREPARE_PERSISTENT = 0x01,
};

#endif
