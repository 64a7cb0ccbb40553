"""Two checkouts of the service side by side: is one slower than the other?

python -m bench.versus --repo DIR [--runs 5] [--duration 6] [--warmup 2] [--store DIR]

Starts this checkout's service and the one in ``--repo`` (an older commit, say)
with the benchmark's settings, then alternates wrk runs between them, scenario by
scenario, so that a noisy machine slows both alike. Reports the median
requests/s of each and the median of the per-round ratios (this ÷ other).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bodies import build_scenarios, write_bodies
from bench.measure import measure
from bench.options import non_negative, positive
from bench.procs import Server, running, start
from bench.runner import ensure_demo_models
from bench.store import MODELS, load
from local_gunicorn import REPO_ROOT
from service.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="the other checkout of the service")
    parser.add_argument("--runs", type=positive, default=5, help="alternating rounds per scenario (5)")
    parser.add_argument("--duration", type=positive, default=6, help="seconds per measured run (6)")
    parser.add_argument("--warmup", type=non_negative, default=2, help="unmeasured seconds before each (2)")
    parser.add_argument("--workers", type=positive, default=2, help="Gunicorn workers (2)")
    parser.add_argument("--store", type=Path, help="model store (the demo models are trained into it)")
    args = parser.parse_args(argv)
    # The settings bench.run gives the service, so both checkouts run as `make bench` runs them.
    defaults = Settings()
    args.threads, args.model_threads = defaults.threads, defaults.model_threads
    with tempfile.TemporaryDirectory(prefix="bench-versus-") as raw, ExitStack() as stack:
        work = Path(raw)
        args.store = (args.store or work / "store").resolve()
        args.store.mkdir(parents=True, exist_ok=True)
        ensure_demo_models(args.store)
        bodies = {name: write_bodies(name, load(name, args.store).manifest, work) for name in MODELS}
        servers: dict[str, Server] = {}
        for label, repo in (("this", REPO_ROOT), ("other", args.repo.resolve())):
            server = start(f"service-{label}", args, work / "logs", cwd=repo)
            servers[label] = stack.enter_context(running(server, "/health"))
        print(f"this: {REPO_ROOT}\nother: {args.repo}\n")
        print("| Scenario | this req/s | other req/s | this ÷ other (median of rounds) | rounds |")
        print("|---|---|---|---|---|")
        for scenario in build_scenarios(bodies, quick=False):
            rates: dict[str, list[float]] = {"this": [], "other": []}
            for round_ in range(args.runs):
                # Alternate who goes first, so neither always runs on a warmer machine.
                order = ("this", "other") if round_ % 2 == 0 else ("other", "this")
                for label in order:
                    sample = measure(servers[label], scenario, seconds=args.duration, warmup=args.warmup)
                    if not sample.ok:
                        raise SystemExit(f"{label} {scenario.label}: {sample.error or 'failed requests'}")
                    rates[label].append(sample.requests_per_second)
            ratios = [a / b for a, b in zip(rates["this"], rates["other"], strict=True)]
            print(
                f"| {scenario.label} | {statistics.median(rates['this']):.0f} | "
                f"{statistics.median(rates['other']):.0f} | {statistics.median(ratios):.2f}x | "
                f"{' '.join(f'{r:.2f}' for r in ratios)} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
