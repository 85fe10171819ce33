"""Command line of trubrics-mp (``trubrics-mp`` and ``python -m trubrics_mp``)."""

import sys


def main() -> int:
    print("trubrics-mp: no command yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
