"""The gRPC server of one Gunicorn worker: started after the fork, stopped with the worker.

grpcio starts threads of its own (polling, its executor) when a server starts,
and threads do not survive a fork: the master never imports this module, and
each worker starts its own server once forked (``service.app.start_worker``).
The workers share the port through ``SO_REUSEPORT``, as they share the HTTP
socket the master opened: the kernel spreads new connections over them. A
port that another program holds without that option fails the worker's start,
naming the port.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from service.api.metrics import ServiceMetrics
from service.keyring import KeyRing
from service.state import ServiceState
from service.v2.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from service.v2.grpc_service import InferenceService

log = logging.getLogger(__name__)


def start_grpc(current: ServiceState, metrics: ServiceMetrics, ring: KeyRing | None) -> grpc.Server:
    """Serve the Open Inference Protocol on ``SERVICE_GRPC_PORT`` from this process."""
    settings = current.settings
    bind = settings.grpc_bind
    assert bind is not None
    server = grpc.server(
        # As many calls in flight as the worker has HTTP threads: a call waiting for a
        # gathered model call holds its thread, as a request does.
        ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.so_reuseport", 1),
            # The body limit of HTTP requests, for a message too.
            ("grpc.max_receive_message_length", settings.max_body_bytes),
        ],
    )
    add_GRPCInferenceServiceServicer_to_server(InferenceService(current, metrics, ring), server)
    try:
        server.add_insecure_port(bind)
    except RuntimeError as error:
        raise RuntimeError(f"cannot serve gRPC on {bind} (SERVICE_GRPC_PORT): {error}") from None
    server.start()
    log.info("serving the Open Inference Protocol over gRPC on %s", bind)
    return server


def stop_grpc(server: grpc.Server, grace: float) -> None:
    """Refuse new calls and let those in flight finish, for at most ``grace`` seconds."""
    server.stop(grace).wait(grace + 1.0)
