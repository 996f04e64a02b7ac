"""Replaces one generated section of a Markdown page in place.

Usage: python3 bench/harness/splice_section.py PAGE NAME SECTION_FILE

SECTION_FILE holds the new section, delimited by `<!-- NAME:begin -->` and
`<!-- NAME:end -->`. The page's old section between the same markers is replaced; a page
without them gets the section appended. The rest of the page is left as it was, so each
benchmark script refreshes only its own part of docs/benchmarks.md.
"""

import sys
from pathlib import Path


def splice(text: str, name: str, section: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if not (section.startswith(begin) and section.endswith(end)):
        raise SystemExit(f"the new section must start with {begin} and end with {end}")
    start = text.find(begin)
    stop = text.find(end, start) if start >= 0 else -1
    if start >= 0 and stop >= 0:
        return text[:start] + section + text[stop + len(end):]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    page, name, section_file = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    section = section_file.read_text().rstrip("\n")
    text = page.read_text() if page.exists() else ""
    page.write_text(splice(text, name, section))


if __name__ == "__main__":
    main()
