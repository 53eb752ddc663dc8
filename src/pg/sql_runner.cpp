// Statements in a transaction each, through SPI (see sql_runner.hpp).
#include "pg/sql_runner.hpp"

#include <unordered_map>

#include "pg/guard.hpp"

extern "C" {
#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
}

namespace amebo::pg {

namespace {

// Memory for parameters and results, reset once per loop pass.
MemoryContext g_sql_context = nullptr;

// Prepared plans by statement text (the worker runs a handful of fixed statements).
std::unordered_map<std::string, SPIPlanPtr> g_plans;

// Rows copied out of SPI into g_sql_context: count x columns C strings (NULL for NULL).
struct CopiedRows {
    uint64 count;
    int columns;
    char **values;
};

// The memory context for statements' parameters and results.
MemoryContext SqlContext() {
    if (g_sql_context == nullptr)
        g_sql_context =
            AllocSetContextCreate(TopMemoryContext, "amebo worker sql", ALLOCSET_DEFAULT_SIZES);
    return g_sql_context;
}

// Runs one statement in its own transaction, prepared once and kept in *plan (PostgreSQL
// side: no C++ objects here). A kept plan is checked again by PostgreSQL after DDL.
CopiedRows Execute(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
                   SPIPlanPtr *plan) {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    SPI_connect();
    PushActiveSnapshot(GetTransactionSnapshot());
    pgstat_report_activity(STATE_RUNNING, sql);
    if (*plan == nullptr) {
        SPIPlanPtr prepared = SPI_prepare(sql, nargs, types);
        if (prepared == nullptr)
            elog(ERROR, "amebo worker: could not prepare \"%s\": %s", sql,
                 SPI_result_code_string(SPI_result));
        SPI_keepplan(prepared);
        *plan = prepared;
    }
    int result = SPI_execute_plan(*plan, values, nulls, false, 0);
    if (result < 0)
        elog(ERROR, "amebo worker: \"%s\" failed: %s", sql, SPI_result_code_string(result));
    int columns = SPI_tuptable ? SPI_tuptable->tupdesc->natts : 0;
    CopiedRows rows{SPI_processed, columns,
                    static_cast<char **>(MemoryContextAllocZero(
                        SqlContext(), sizeof(char *) * (SPI_processed * columns + 1)))};
    for (uint64 i = 0; i < SPI_processed; i++)
        for (int c = 0; c < columns; c++) {
            char *value = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1);
            rows.values[i * columns + c] =
                value ? MemoryContextStrdup(SqlContext(), value) : nullptr;
        }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    pgstat_report_activity(STATE_IDLE, nullptr);
    return rows;
}

} // namespace

std::vector<SqlRow> RunSql(const char *sql, const std::vector<std::optional<std::string>> &args) {
    int nargs = static_cast<int>(args.size());
    MemoryContext context = SqlContext();
    auto *types = static_cast<Oid *>(
        Call([&] { return MemoryContextAlloc(context, sizeof(Oid) * (nargs + 1)); }));
    auto *values = static_cast<Datum *>(
        Call([&] { return MemoryContextAlloc(context, sizeof(Datum) * (nargs + 1)); }));
    auto *nulls =
        static_cast<char *>(Call([&] { return MemoryContextAllocZero(context, nargs + 1); }));
    for (int i = 0; i < nargs; i++) {
        types[i] = TEXTOID;
        nulls[i] = args[i] ? ' ' : 'n';
        values[i] = 0;
        if (args[i]) {
            const std::string &text = *args[i];
            values[i] = Call([&] {
                MemoryContext old = MemoryContextSwitchTo(context);
                Datum datum = PointerGetDatum(cstring_to_text_with_len(text.data(), text.size()));
                MemoryContextSwitchTo(old);
                return datum;
            });
        }
    }
    // A commit leaves TopMemoryContext current; an error is copied into the current context.
    MemoryContextSwitchTo(context);
    SPIPlanPtr *plan = &g_plans[sql];
    CopiedRows copied = Call([&] { return Execute(sql, nargs, types, values, nulls, plan); });
    std::vector<SqlRow> rows(copied.count);
    for (uint64 i = 0; i < copied.count; i++)
        for (int c = 0; c < copied.columns; c++) {
            const char *value = copied.values[i * copied.columns + c];
            rows[i].emplace_back(value ? value : "");
        }
    return rows;
}

std::string RunSqlValue(const char *sql, const std::vector<std::optional<std::string>> &args) {
    auto rows = RunSql(sql, args);
    return rows.empty() || rows[0].empty() ? std::string() : rows[0][0];
}

void ResetSqlMemory() {
    MemoryContextSwitchTo(TopMemoryContext);
    MemoryContextReset(SqlContext());
}

} // namespace amebo::pg
