"""Rendering step inputs: 10,000 companies x 2 inputs per chunk call, renders per second.

The two inputs are the seed's: the homepage a step stored (one expression, so the value keeps its
type) and a text template over the company. A share of the companies have no stored page, so the
missing path (InputMissing with its reference) is measured too. Pure CPU, no database.

    python bench/inputs.py [--companies 10000] [--missing 0.1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from enrichhq import inputs
from enrichhq.models import Company

SCRAPE = "scrape-homepage-via-zenrows"
CONFIG = {
    "inputs": {
        "html": f"{{{{ steps['{SCRAPE}'].homepage_html }}}}",
        "about": "{{ company.name }} ({{ company.domain }}): {{ steps['extract'].urls | length }} links",
    }
}


def measure(companies: int, missing: float, repeat: int) -> tuple[float, float, int, int]:
    """(best seconds per chunk call, compile seconds, rendered companies, missing companies)."""
    started = time.perf_counter()
    spec = inputs.InputSpec.of(CONFIG)
    compiled = time.perf_counter() - started
    chunk = [Company(f"c{i}", f"company-{i}.test", f"Company {i}") for i in range(companies)]
    page = "<html>" + "x" * 50_000 + "</html>"
    every = max(1, round(1 / missing)) if missing > 0 else companies + 1
    rows = {
        SCRAPE: {c.id: {"homepage_html": page} for i, c in enumerate(chunk) if missing <= 0 or i % every},
        "extract": {
            c.id: {"urls": [f"https://{c.domain}/case-studies/{n}" for n in range(5)]} for c in chunk
        },
    }
    best = float("inf")
    out: dict[str, inputs.Outcome] = {}
    for _ in range(repeat):
        started = time.perf_counter()
        out = inputs.render_chunk(spec, chunk, rows)
        best = min(best, time.perf_counter() - started)
    gone = sum(isinstance(v, inputs.InputMissing) for v in out.values())
    return best, compiled, len(out) - gone, gone


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--companies", type=int, default=10_000)
    parser.add_argument("--missing", type=float, default=0.1, help="share of companies without a page")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    best, compiled, rendered, gone = measure(args.companies, args.missing, args.repeat)
    renders = args.companies * len(CONFIG["inputs"])
    print(
        f"inputs: {args.companies:,} companies x {len(CONFIG['inputs'])} inputs in {best:.3f}s "
        f"(best of {args.repeat}): {renders / best:,.0f} renders/s, {args.companies / best:,.0f} companies/s; "
        f"{rendered:,} rendered, {gone:,} input_missing; compiling the spec took {compiled * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
