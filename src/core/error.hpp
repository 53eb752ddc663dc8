// Errors raised by amebo's C++ code. Pure C++: no PostgreSQL header may be included here.
#pragma once

#include <stdexcept>
#include <string>

namespace amebo {

// The SQLSTATEs amebo raises, as five-character codes.
namespace sqlstate {
// amebo's own class "AM" (not used by PostgreSQL or the SQL standard).
inline constexpr char kWrongExpectedVersion[] = "AM001";
inline constexpr char kEventIdConflict[] = "AM002";
inline constexpr char kImmutableEvent[] = "AM003";
inline constexpr char kSchemaViolation[] = "AM004";
inline constexpr char kUnknownAction[] = "AM005";
inline constexpr char kIncompatibleSchema[] =
    "AM006"; // raised by amebo_internal.add_action_schema (SQL)
inline constexpr char kInvalidSchema[] = "AM007";
inline constexpr char kSnapshotBeyondVersion[] = "AM008"; // raised by amebo.save_snapshot (SQL)
inline constexpr char kEventNotLeased[] = "AM009"; // raised by amebo.ack and amebo.nack (SQL)
inline constexpr char kStreamDeleted[] = "AM010";  // an append to a hard-deleted stream
// Standard codes amebo uses for bad input.
inline constexpr char kNullValueNotAllowed[] = "22004";
inline constexpr char kInvalidParameterValue[] = "22023";
inline constexpr char kProgramLimitExceeded[] = "54000";
inline constexpr char kStatementTooComplex[] = "54001";
inline constexpr char kObjectNotInPrerequisiteState[] = "55000";
inline constexpr char kFeatureNotSupported[] = "0A000";
inline constexpr char kInternalError[] = "XX000";
} // namespace sqlstate

// An error with a SQLSTATE, message, and optional detail and hint, thrown by C++ code and
// turned into a PostgreSQL error by the border guard (src/pg/guard.hpp).
class Error : public std::runtime_error {
  public:
    Error(const char *code, std::string message, std::string detail = {}, std::string hint = {})
        : std::runtime_error(message), code_(code), detail_(std::move(detail)),
          hint_(std::move(hint)) {}

    const std::string &code() const { return code_; }
    const std::string &detail() const { return detail_; }
    const std::string &hint() const { return hint_; }

  private:
    std::string code_;
    std::string detail_;
    std::string hint_;
};

} // namespace amebo
