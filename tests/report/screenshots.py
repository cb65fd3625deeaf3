"""docs/report-<spec>.jpg: the shipped tutorial, ioi and syllogism specs run on the embedded
Gemma-3-270m, their reports photographed whole at 1,400 px with every figure and view opened and
drawn (what test_report_pixels.py checks on tiny models).

    python tests/report/screenshots.py [--runs DIR] [SPEC ...]

Runs go to --runs (default ./runs/screenshots); a second call reuses their stored steps, so it
only re-renders the reports. Prints what the pixel test measures, for a look before committing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.report.browser import browser, full_page, measure_figures, open_report, overflow  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", default=["tutorial", "ioi", "syllogism"])
    parser.add_argument("--runs", default="runs/screenshots")
    args = parser.parse_args()
    import mi_dsl

    for name in args.specs:
        results = mi_dsl.run(ROOT / "specs" / f"{name}.yaml", out_dir=args.runs, progress=False)
        with browser() as instance:
            page, errors = open_report(instance, results.run_dir)
            figures = measure_figures(page)
            weak = [(f["name"], f["pixels"]["coloured"]) for f in figures if f["pixels"]["coloured"] <= 100]
            print(f"{name}: {results.run_dir}; {len(figures)} figures and views; console errors {errors}; "
                  f"overflow {overflow(page)}; sparse {weak}")
            full_page(page, ROOT / "docs" / f"report-{name}.jpg")


if __name__ == "__main__":
    main()
