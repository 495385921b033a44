// The declarations in include/keyhaven_sqlite.h are SQLite's own, resolved against sqlite-nio's copy of SQLite;
// what is defined here is Keyhaven's: the SQL functions it adds to each connection.
#include "keyhaven_sqlite.h"

typedef struct sqlite3_context sqlite3_context;
typedef struct sqlite3_value sqlite3_value;

int sqlite_nio_sqlite3_create_function_v2(
    sqlite3 *db, const char *name, int arguments, int encoding, void *application,
    void (*function)(sqlite3_context *, int, sqlite3_value **), void (*step)(sqlite3_context *, int, sqlite3_value **),
    void (*final)(sqlite3_context *), void (*destroy)(void *));
void *sqlite_nio_sqlite3_aggregate_context(sqlite3_context *context, int bytes);
int sqlite_nio_sqlite3_value_type(sqlite3_value *value);
int64_t sqlite_nio_sqlite3_value_int64(sqlite3_value *value);
double sqlite_nio_sqlite3_value_double(sqlite3_value *value);
void sqlite_nio_sqlite3_result_int64(sqlite3_context *context, int64_t value);
void sqlite_nio_sqlite3_result_null(sqlite3_context *context);
void sqlite_nio_sqlite3_result_error_nomem(sqlite3_context *context);
void *sqlite_nio_sqlite3_wal_hook(sqlite3 *db, int (*hook)(void *, sqlite3 *, const char *, int), void *context);

/// The running state of one saturating_sum: the sum so far, and whether any non-NULL value was seen (SUM of no
/// values is NULL).
typedef struct {
    int64_t sum;
    int seen;
} keyhaven_saturating_sum;

static void keyhaven_saturating_sum_step(sqlite3_context *context, int count, sqlite3_value **values) {
    (void)count;
    int type = sqlite_nio_sqlite3_value_type(values[0]);
    if (type == KEYHAVEN_SQLITE_NULL) return;
    keyhaven_saturating_sum *state = sqlite_nio_sqlite3_aggregate_context(context, sizeof *state);
    if (!state) {
        sqlite_nio_sqlite3_result_error_nomem(context);
        return;
    }
    int64_t value;
    if (type == KEYHAVEN_SQLITE_FLOAT) {
        // A REAL (SQLite turns an overflowing integer expression into one) counts as the nearest 64-bit integer.
        double real = sqlite_nio_sqlite3_value_double(values[0]);
        value = real >= 9223372036854775807.0 ? INT64_MAX : real <= -9223372036854775808.0 ? INT64_MIN : (int64_t)real;
    } else {
        value = sqlite_nio_sqlite3_value_int64(values[0]);
    }
    int64_t sum;
    if (__builtin_add_overflow(state->sum, value, &sum)) sum = value > 0 ? INT64_MAX : INT64_MIN;
    state->sum = sum;
    state->seen = 1;
}

static void keyhaven_saturating_sum_final(sqlite3_context *context) {
    keyhaven_saturating_sum *state = sqlite_nio_sqlite3_aggregate_context(context, 0);
    if (state && state->seen) {
        sqlite_nio_sqlite3_result_int64(context, state->sum);
    } else {
        sqlite_nio_sqlite3_result_null(context);
    }
}

int keyhaven_sqlite_add_functions(sqlite3 *db) {
    // SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS
    int flags = 1 | 0x000000800 | 0x000200000;
    return sqlite_nio_sqlite3_create_function_v2(
        db, "saturating_sum", 1, flags, 0, 0, keyhaven_saturating_sum_step, keyhaven_saturating_sum_final, 0);
}

/// Counts one commit: `pages` is the number of frames in the log after it. A log that is shorter than after the
/// previous commit was restarted (emptied by a checkpoint), so this commit wrote all of it.
static int keyhaven_wal_hook(void *context, sqlite3 *db, const char *name, int pages) {
    (void)db;
    (void)name;
    keyhaven_wal_counts *counts = context;
    counts->commits += 1;
    counts->frames += pages >= counts->pages ? pages - counts->pages : pages;
    counts->pages = pages;
    return KEYHAVEN_SQLITE_OK;
}

void keyhaven_sqlite_watch_wal(sqlite3 *db, keyhaven_wal_counts *counts) {
    sqlite_nio_sqlite3_wal_hook(db, keyhaven_wal_hook, counts);
}
