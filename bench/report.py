"""What the benchmark scripts share to write bench/RESULTS.md: one section replaced in place."""

import os
import re


# Writes lines (a section starting with "## title") into out: replaces the existing section
# of that title, or appends it, so that a benchmark run alone updates its own section only.
def write_section(out, title, lines):
    text = open(out).read() if os.path.exists(out) else ""
    section = "\n".join(lines).strip("\n") + "\n"
    match = re.search(rf"^## {re.escape(title)}.*?(?=^## |\Z)", text, re.M | re.S)
    if match:
        text = text[:match.start()] + section + ("\n" if match.end() < len(text) else "") \
            + text[match.end():]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    with open(out, "w") as f:
        f.write(text)
