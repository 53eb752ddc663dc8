"""Named checks for the Python test programs: each prints ok or FAIL with what it checked,
and the failed ones are kept for the summary."""

import time

T_START = time.monotonic()


# Seconds since the test started, for the check lines.
def stamp():
    return f"{time.monotonic() - T_START:6.1f}s"


class Checks:
    """Counts the checks that passed and keeps the names of those that failed."""

    def __init__(self):
        self.passed = 0
        self.failed = []

    # Records a check: prints ok or FAIL with what was checked (and detail on failure).
    def check(self, condition, what, detail=""):
        if condition:
            self.passed += 1
            print(f"  ok   {stamp()} {what}", flush=True)
        else:
            self.failed.append(what)
            print(f"  FAIL {stamp()} {what}" + (f"\n         {detail}" if detail else ""),
                  flush=True)
        return bool(condition)

    # Checks actual == expected, printing the actual value.
    def eq(self, actual, expected, what):
        return self.check(actual == expected, f"{what}: {actual!r}",
                          f"expected {expected!r}, got {actual!r}")
