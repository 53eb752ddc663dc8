// Statements run by a background process outside any transaction (the worker), each in a
// transaction of its own, with text parameters and text results. PostgreSQL side; callable
// from C++ (errors come back as pg::PgError).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace amebo::pg {

// A result row: every column as text, "" for NULL.
using SqlRow = std::vector<std::string>;

// Runs sql with parameters $1… (type text; cast them in sql; std::nullopt for NULL) in a
// transaction of its own and returns its rows.
std::vector<SqlRow> RunSql(const char *sql,
                           const std::vector<std::optional<std::string>> &args = {});

// The first column of the first row, or "" when there is none.
std::string RunSqlValue(const char *sql, const std::vector<std::optional<std::string>> &args = {});

// Frees what earlier statements' results used; call at the start of each loop pass.
void ResetSqlMemory();

} // namespace amebo::pg
