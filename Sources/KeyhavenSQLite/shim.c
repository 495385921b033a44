// The declarations in include/keyhaven_sqlite.h are all there is: SQLite itself is sqlite-nio's copy.
#include "keyhaven_sqlite.h"
