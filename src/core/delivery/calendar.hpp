// Proleptic Gregorian calendar arithmetic shared by the time formats of delivery. Pure C++.
#pragma once

#include <cstdint>

namespace amebo::delivery {

// Days since 1970-01-01 of a Gregorian date (Howard Hinnant's days_from_civil algorithm).
int64_t DaysFromCivil(int64_t year, int month, int day);

// Number of days in a month (1..12) of a year.
int DaysInMonth(int64_t year, int month);

} // namespace amebo::delivery
