// The launcher that keeps the amebo worker running in amebo.database_name (launcher.cpp).
#pragma once

#include "pg/postgres.hpp"

namespace amebo::worker {

// Registers the launcher and the DROP DATABASE hook (only when preloaded).
void InitLauncher();

} // namespace amebo::worker

extern "C" {
// The launcher process's entry point (bgw_function_name).
PGDLLEXPORT void amebo_launcher_main(Datum argument);
}
