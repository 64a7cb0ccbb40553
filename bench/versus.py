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

from bench.bodies import BATCH_ROWS, ModelBodies, Scenario, write_bodies
from bench.procs import REPO_ROOT, Server, start_service
from bench.runner import ensure_demo_models, measure, running
from bench.store import MODELS, load

CONNECTIONS = {"single": (1, 8), "batch": (1, 4)}


def scenarios(bodies: dict[str, ModelBodies]) -> list[Scenario]:
    found = [Scenario(m, 1, c, bodies[m].single) for m in MODELS for c in CONNECTIONS["single"]]
    return found + [Scenario(m, BATCH_ROWS, c, bodies[m].batch) for m in MODELS for c in CONNECTIONS["batch"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="the other checkout of the service")
    parser.add_argument("--runs", type=int, default=5, help="alternating rounds per scenario (5)")
    parser.add_argument("--duration", type=int, default=6, help="seconds per measured run (6)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds before each (2)")
    parser.add_argument("--workers", type=int, default=2, help="Gunicorn workers (2)")
    parser.add_argument("--store", type=Path, help="model store (the demo models are trained into it)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-versus-") as raw, ExitStack() as stack:
        work = Path(raw)
        store = (args.store or work / "store").resolve()
        store.mkdir(parents=True, exist_ok=True)
        ensure_demo_models(store)
        bodies = {name: write_bodies(name, load(name, store).manifest, work) for name in MODELS}
        servers: dict[str, Server] = {}
        for label, repo in (("this", REPO_ROOT), ("other", args.repo.resolve())):
            server = start_service(
                f"service-{label}",
                store,
                work / "logs",
                workers=args.workers,
                threads=2,
                cwd=repo,
                SERVICE_MODELS=",".join(MODELS),
                SERVICE_MODEL_THREADS="1",
                SERVICE_GRACEFUL_TIMEOUT="5",
            )
            servers[label] = stack.enter_context(running(server, "/health"))
        print(f"this: {REPO_ROOT}\nother: {args.repo}\n")
        print("| Scenario | this req/s | other req/s | this ÷ other (median of rounds) | rounds |")
        print("|---|---|---|---|---|")
        for scenario in scenarios(bodies):
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
