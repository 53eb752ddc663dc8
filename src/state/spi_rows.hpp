// Small SPI helpers for the state module's catalog lookups (PostgreSQL side: no C++ objects).
#pragma once

#include "pg/postgres.hpp"

extern "C" {
#include "executor/spi.h"
}

namespace amebo::state {

// Runs a read-only query with text/other arguments under an open SPI connection; returns
// the number of rows (in SPI_tuptable).
uint64 SpiQuery(const char *sql, int nargs, Oid *argtypes, Datum *args, bool read_only);

// Column column of row 0 of the last SPI result, copied into the memory context that was
// current before SPI_connect (by SPI_datumTransfer); isnull reports NULL.
Datum SpiValue(int column, bool *isnull);

} // namespace amebo::state
