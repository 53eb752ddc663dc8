// SPI helpers.
#include "state/spi_rows.hpp"

extern "C" {
#include "utils/lsyscache.h"
}

namespace amebo::state {

uint64 SpiQuery(const char *sql, int nargs, Oid *argtypes, Datum *args, bool read_only) {
    int rc = SPI_execute_with_args(sql, nargs, argtypes, args, nullptr, read_only, 0);
    if (rc < 0)
        elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
    return SPI_processed;
}

Datum SpiValue(int column, bool *isnull) {
    Datum value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, column, isnull);
    if (*isnull)
        return (Datum)0;
    Oid type = SPI_gettypeid(SPI_tuptable->tupdesc, column);
    int16 length;
    bool by_value;
    get_typlenbyval(type, &length, &by_value);
    return SPI_datumTransfer(value, by_value, length);
}

} // namespace amebo::state
