"""Server-side re-render time of the Compare page: four designs, a 200-point sweep each.

Runs the page in Streamlit's AppTest (the script run, caching and element serialisation, without a
browser) and times three kinds of rerun:

- unchanged: a rerun with the same inputs, so every ctxsim call is a cache hit;
- context moved: the context slider changes, so each design's single-context estimate reruns
  while the sweeps stay cached (the "move a slider" case);
- design changed: one design's window changes, so its sweep reruns too.

Usage: python benchmarks/dashboard_render.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = Path(__file__).resolve().parents[1] / "dashboards" / "views" / "compare.py"
QUERY = {
    "n_designs": "4",
    "compare_points": "200",
    "d1_model": "deepseek-v3.2",
    "d1_design": "dense",
    "d2_model": "deepseek-v3.2",
    "d3_model": "glm-5.2",
    "d4_model": "deepseek-v3.2",
    "d4_design": "SWA",
}
CONTEXTS = [65536, 131072, 262144, 524288, 1048576]


def _timed(at: AppTest) -> float:
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    assert not at.exception, at.exception
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="Reruns timed per case (default 15).")
    args = parser.parse_args()

    at = AppTest.from_file(str(PAGE), default_timeout=300)
    for key, value in QUERY.items():
        at.query_params[key] = value
    first = _timed(at)
    tables = [d.value for d in at.dataframe if "design" in d.value.columns and "context" in d.value.columns]
    assert len(tables[0]) == 4 * 200, f"expected 4 x 200 sweep rows, got {len(tables[0])}"

    unchanged = [_timed(at) for _ in range(args.repeats)]

    moved = []
    for i in range(args.repeats):
        at.get_by_key("context").set_value(CONTEXTS[i % len(CONTEXTS)])
        moved.append(_timed(at))

    changed = []
    for i in range(args.repeats):
        at.get_by_key("d4_window").set_value(1024 * (2 + i))
        changed.append(_timed(at))

    print(f"machine: {platform.machine()}, {platform.processor() or 'unknown CPU'}, Python {platform.python_version()}")
    print(f"first run (imports, cold caches): {first * 1e3:.0f} ms")
    for name, samples in (("unchanged", unchanged), ("context moved", moved), ("design changed", changed)):
        print(f"{name:>15}: median {statistics.median(samples) * 1e3:.0f} ms, max {max(samples) * 1e3:.0f} ms over {len(samples)}")


if __name__ == "__main__":
    main()
