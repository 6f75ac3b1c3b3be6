"""`make bench` (quick, under 5 minutes) and `make bench FULL=1`: every benchmark, one after another.

Each writes its figures into bench/results.json; this prints them all at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from bench import (
    feed_bench,
    import_bench,
    load_bench,
    oneroster_bench,
    rollover_bench,
    roster_bench,
    signin_during_import,
)
from bench.harness import RESULTS, save, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="the full sizes (takes much longer)")
    full = parser.parse_args().full
    for bench in (
        import_bench,
        signin_during_import,
        feed_bench,
        load_bench,
        roster_bench,
        oneroster_bench,
        rollover_bench,
    ):
        save(asyncio.run(bench.main(full)))
    print()
    print(table([(key, str(value)) for key, value in sorted(json.loads(RESULTS.read_text()).items())]))


if __name__ == "__main__":
    main()
