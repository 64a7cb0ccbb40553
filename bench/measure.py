"""The measurements: wrk (or h2load) runs with the server's CPU time around them, memory after a load,
threads.

Every figure is taken with the server idle before and after (a backlog left by
one run must not be charged to the next), and every failure becomes a failed
sample rather than an abort: the report says which scenario failed and why.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import h2load, wrk
from bench.bodies import BATCH_ROWS, ModelBodies, Scenario
from bench.mlp import NAME as MLP_NAME
from bench.model_alone import time_model
from bench.plan import GRPC_WIRE, V2_BINARY_WIRE, Contender, Planned
from bench.procs import IDLE_TIMEOUT, Server, ready, running, start
from bench.results import Memory, Sample, Series, ThreadsSection, ThreadsVariant, WorkerThreads
from local_gunicorn import ServerError

THREADS_CONNECTIONS = 4  # as in the busiest batch scenario: more requests in flight than workers
MEMORY_WORKERS = (1, 4)
MEMORY_LOAD_SECONDS = 2
THREADS_STORE = "threads-store"  # under the run's temporary folder


def say(message: str) -> None:
    """Progress on stderr: stdout carries the report only."""
    print(message, file=sys.stderr, flush=True)


def settle(server: Server) -> None:
    if not server.wait_idle():
        say(f"warning: {server.name} still busy {IDLE_TIMEOUT:.0f}s after its load stopped; carrying on")


Load = Callable[..., wrk.WrkResult | h2load.H2loadResult]  # called with seconds=: what the run measured


def load_of(server: Server, scenario: Scenario, contender: Contender | None) -> Load:
    """How ``contender`` (None: the scenario's own route) loads ``server``: wrk over HTTP/1.1,
    with post.lua or, for the binary tensor extension, post_binary.lua; h2load for gRPC."""
    connections = scenario.connections
    if contender is None:
        return partial(wrk.run, server.base_url, scenario.path, scenario.bodies, connections=connections)
    path, bodies = contender.path(scenario), contender.bodies(scenario)
    if contender.wire == GRPC_WIRE:
        return partial(h2load.run, server.grpc_url, path, bodies, connections=connections)
    if contender.wire == V2_BINARY_WIRE:
        assert scenario.v2 is not None  # contender.bodies found them
        sizes = (str(scenario.v2.binary_size), str(scenario.v2.binary_header))
        return partial(
            wrk.run,
            server.base_url,
            path,
            bodies,
            connections=connections,
            script=wrk.BINARY_SCRIPT,
            script_args=sizes,
        )
    return partial(wrk.run, server.base_url, path, bodies, connections=connections)


def measure(
    server: Server, scenario: Scenario, *, seconds: int, warmup: int, contender: Contender | None = None
) -> Sample:
    """A warm-up (not measured), then one measured run with the server's CPU time around it;
    ``contender``: asked its way (another route, query or protocol) rather than the scenario's."""
    if not server.alive():
        return Sample.failed(f"{server.name} is not running (exit {server.proc.returncode})")
    run = load_of(server, scenario, contender)
    grpc = contender is not None and contender.wire == GRPC_WIRE
    try:
        if warmup:
            run(seconds=warmup)
            # When wrk stops, the requests it left queued are still served: let them finish
            # before the clock starts, or their CPU time lands on the measured requests.
            settle(server)
        failed_calls = server.grpc_failures() if grpc else 0
        before = server.cpu_seconds()
        result = run(seconds=seconds)
        after = server.cpu_seconds()
        # Likewise, this server's backlog must not eat into the next server's run.
        settle(server)
        if grpc:
            # An HTTP 200 to h2load, but an error answer all the same, as a non-2xx is to wrk.
            failed_calls = server.grpc_failures() - failed_calls
    # OSError, ValueError: the service's /metrics did not answer, or not as expected.
    except (wrk.WrkError, h2load.H2loadError, OSError, ValueError) as error:
        return Sample.failed(str(error))
    finally:
        server.trim_log()
    if not server.alive():
        return Sample.failed(f"{server.name} exited during the run:\n{server.output(10)}")
    if result.requests == 0:
        return Sample.failed(f"no request completed within {seconds} s")
    per_second = result.requests_per_second
    return Sample(
        requests=result.requests,
        requests_per_second=per_second,
        rows_per_second=per_second * scenario.rows,
        p50_ms=result.p50_us / 1000,
        p99_ms=result.p99_us / 1000,
        cpu_us_per_request=(after - before) / result.requests * 1e6,
        non_2xx=result.non_2xx + failed_calls,
        socket_errors=result.socket_errors,
    )


def interleave(
    servers: dict[str, Server], plan: list[Planned], args: argparse.Namespace
) -> dict[tuple[str, str], Series]:
    """For each run, for each scenario, each contender in turn: a slow spell on the machine
    then lands on every contender rather than on one. A contender whose server is not in
    ``servers`` (it could not be prepared) is left out; the report says why."""
    found: dict[tuple[str, str], list[Sample]] = {
        (p.label, c.label): [] for p in plan for c in p.contenders if c.server in servers
    }
    for number in range(1, args.runs + 1):
        for planned in plan:
            for contender in planned.contenders:
                if contender.server not in servers:
                    continue
                sample = measure(
                    servers[contender.server],
                    planned.scenario,
                    seconds=args.duration,
                    warmup=args.warmup,
                    contender=contender,
                )
                found[(planned.label, contender.label)].append(sample)
                say(
                    f"[run {number}/{args.runs}] {planned.label:<28} {contender.label:<21} {describe(sample)}"
                )
    return {key: Series(samples) for key, samples in found.items()}


def measure_memory(
    kind: str, workers: int, args: argparse.Namespace, logs: Path, load: list[Scenario]
) -> Memory:
    name = f"{kind}-memory-{workers}"
    server = start(name, args, logs, workers=workers)
    try:
        with running(server, *ready(server, load[0])):
            for scenario in load:
                # At least one connection per worker, so that every worker has served both models.
                connections = max(scenario.connections, workers)
                wrk.run(
                    server.base_url,
                    scenario.path,
                    scenario.bodies,
                    connections=connections,
                    seconds=MEMORY_LOAD_SECONDS,
                )
            time.sleep(0.5)
            return Memory(kind, workers, tuple(server.pss_kb()))
    except (ServerError, wrk.WrkError) as error:
        return Memory(kind, workers, error=str(error).splitlines()[0])


def run_memory(args: argparse.Namespace, logs: Path, bodies: dict[str, Any]) -> list[Memory]:
    load_scenarios = [
        Scenario("iris", 1, 8, bodies["iris"].single),
        Scenario("breast_cancer", BATCH_ROWS, 1, bodies["breast_cancer"].batch),
    ]
    found = []
    for kind in ("service", "service-unfrozen", "tutorial"):
        for workers in MEMORY_WORKERS:
            say(f"memory: {kind} with {workers} worker(s)")
            found.append(measure_memory(kind, workers, args, logs, load_scenarios))
    return found


def run_threads(
    args: argparse.Namespace, logs: Path, estimator: Any, bodies: ModelBodies, stack: contextlib.ExitStack
) -> ThreadsSection:
    """The sizing rule on a BLAS-bound model: one native thread per worker (workers x 1 = cores
    by default) against one per core in every worker (workers x cores threads sharing the cores)."""
    cores = os.cpu_count() or 1
    counts = tuple(dict.fromkeys((1, cores)))
    say("threads: timing the mlp alone")
    alone = []
    for count in counts:
        timing = time_model(
            MLP_NAME, estimator, bodies.batch_matrix, threads=count, blocks=21, budget_seconds=3
        )
        alone.append((count, timing.seconds_per_call))
    scenario = Scenario(MLP_NAME, BATCH_ROWS, THREADS_CONNECTIONS, bodies.batch)
    servers = {}
    for count in counts:
        servers[count] = start(
            f"service-threads-{count}",
            args,
            logs,
            SERVICE_MODEL_STORE=str(logs.parent / THREADS_STORE),
            SERVICE_MODELS=MLP_NAME,
            SERVICE_DEFAULT_MODEL=MLP_NAME,
            SERVICE_MODEL_THREADS=str(count),
        )
        stack.callback(servers[count].stop)
    for server in servers.values():
        server.wait_until_answering("/health")
        # A native pool's threads spin for a moment when a worker starts them: let that pass
        # (and every worker boot) before the first reading, or idle threads count as running.
        settle(server)
    master_threads = [server.master_threads() for server in servers.values()]
    samples: dict[int, list[Sample]] = {count: [] for count in counts}
    seen: dict[int, list[list[WorkerThreads]]] = {count: [] for count in counts}
    for number in range(1, args.runs + 1):
        for count, server in servers.items():
            before = server.worker_threads()
            sample = measure(server, scenario, seconds=args.duration, warmup=args.warmup)
            seen[count].append(threads_used(before, server.worker_threads()))
            samples[count].append(sample)
            shown = ", ".join(f"{w.os_threads} ({w.ran} ran)" for w in seen[count][-1])
            say(f"[threads {number}/{args.runs}] model threads {count:<3} {describe(sample)}  {shown}")
    for server in servers.values():
        server.stop()
    variants = [ThreadsVariant(count, Series(samples[count]), seen[count]) for count in counts]
    return ThreadsSection(
        scenario.label, cores, args.workers, args.threads, variants, alone, tuple(master_threads)
    )


def threads_used(
    before: dict[int, tuple[int, dict[int, int]]], after: dict[int, tuple[int, dict[int, int]]]
) -> list[WorkerThreads]:
    """Per worker, its OS threads and how many of them used CPU between the two readings:
    an idle native pool thread counts in the first figure but not in the second."""
    found = []
    for pid, (count, ticks) in sorted(after.items()):
        earlier = before.get(pid, (0, {}))[1]
        found.append(
            WorkerThreads(count, sum(1 for tid, used in ticks.items() if used > earlier.get(tid, 0)))
        )
    return found


def describe(sample: Sample) -> str:
    if sample.error:
        return "FAIL: " + sample.error
    text = (
        f"{sample.requests_per_second:9.1f} req/s  p50 {sample.p50_ms:7.1f} ms  "
        f"cpu {sample.cpu_us_per_request or 0:8.0f} µs/req"
    )
    return text + (f"  FAIL: {sample.faults} non-2xx/errors" if not sample.ok else "")
