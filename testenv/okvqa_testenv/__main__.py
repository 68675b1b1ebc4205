"""`python -m okvqa_testenv images build [NAME...]`: the test environment's own command line."""

from __future__ import annotations

import sys

from okvqa_testenv import images

COMMANDS = {"images": images.main}
USAGE = "usage: python -m okvqa_testenv {images} ...  (python -m okvqa_testenv images --help)"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"{USAGE}\npython -m okvqa_testenv: error: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
