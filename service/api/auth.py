"""Who may call what: the API key check that runs before every view.

Off when no keys file is configured (``SERVICE_API_KEYS_FILE``): the demo mode,
on a loopback bind. On, a request must carry a known key (``X-API-Key: KEY`` or
``Authorization: Bearer KEY``) on every route but these:

- the probes (``/health``, ``/ready``), always open: an orchestrator has no key;
- ``/metrics``, open unless ``SERVICE_PROTECT_METRICS``;
- the docs and the pages (what a person reads in a browser, which sends no
  header), open unless ``SERVICE_PROTECT_DOCS``.

A CORS preflight (``OPTIONS``) never carries credentials and answers no data, so
it is not checked either. A key limited to some models is refused (403) on
routes that name another. The client's name, never its key, is kept for the
access log (``service.client`` in the WSGI environ), the audit log and the metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flask import Flask, g, request

from service.errors import NotAuthenticated, NotPermitted
from service.keyring import Client, KeyRing

# Blueprint -> group; a path no route matches belongs to the API (an unknown client learns nothing).
_GROUPS = {"health": "probes", "v2_health": "probes", "metrics": "metrics", "docs": "docs", "pages": "docs"}
# Routes of the default model, which name no model in their path.
_DEFAULT_MODEL_ROUTES = {"predict.predict_default", "predict.predict_default_batch", "models.metadata"}
HEADER = "X-API-Key"


def sent_key() -> str | None:
    """The key the request carries, from ``X-API-Key`` or a bearer ``Authorization``."""
    return key_from(request.headers.get(HEADER), request.headers.get("Authorization", ""))


def key_from(api_key: str | None, authorization: str) -> str | None:
    """The key of an ``X-API-Key`` value, else of a bearer ``Authorization`` (gRPC metadata too)."""
    if api_key:
        return api_key.strip()
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


EXTENSION_KEY = "service.auth"


@dataclass(frozen=True)
class Guard:
    """Which routes ask for a key, and the check itself."""

    ring: KeyRing
    default_model: str
    open_groups: frozenset[str]

    def protects(self, blueprint: str | None) -> bool:
        return _GROUPS.get(blueprint or "", "api") not in self.open_groups

    @staticmethod
    def names_a_model(endpoint: str, arguments: Iterable[str]) -> bool:
        return "name" in arguments or endpoint in _DEFAULT_MODEL_ROUTES

    def check(self) -> None:
        if request.method == "OPTIONS" or not self.protects(request.blueprint):
            return
        key = sent_key()
        client = self.ring.client(key)
        if client is None:
            raise NotAuthenticated(
                f"This route needs an API key: send it as '{HEADER}: KEY' or 'Authorization: Bearer KEY'."
                if key is None
                else "The API key is not known to this service."
            )
        g.client = client
        request.environ["service.client"] = client.name
        model = (request.view_args or {}).get("name")
        if model is None and request.endpoint in _DEFAULT_MODEL_ROUTES:
            model = self.default_model
        if model is not None and not client.may_use(model):
            raise NotPermitted(client.name, model)


def init_app(
    app: Flask, ring: KeyRing, *, default_model: str, protect_metrics: bool, protect_docs: bool
) -> Guard:
    open_groups = {"probes"} | ({"metrics"} if not protect_metrics else set())
    if not protect_docs:
        open_groups.add("docs")
    guard = Guard(ring, default_model, frozenset(open_groups))
    app.extensions[EXTENSION_KEY] = guard
    app.before_request(guard.check)
    return guard


def guard_of(app: Flask) -> Guard | None:
    """The app's key check; None when API keys are off."""
    return app.extensions.get(EXTENSION_KEY)


def current_client() -> Client | None:
    """The client of this request, when keys are on and it sent one."""
    return g.get("client")


def client_name() -> str | None:
    client = current_client()
    return None if client is None else client.name
