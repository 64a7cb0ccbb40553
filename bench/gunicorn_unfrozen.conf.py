"""The service's own Gunicorn settings without the frozen heap, for the memory comparison.

    gunicorn -c bench/gunicorn_unfrozen.conf.py wsgi:app

Everything in gunicorn.conf.py applies, except that the garbage collector runs
while the master loads and nothing is frozen before the fork: what the workers
would cost without ``gc.freeze()``.
"""

import gc
from pathlib import Path

_SERVICE_CONF = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"
exec(compile(_SERVICE_CONF.read_text(), str(_SERVICE_CONF), "exec"))
gc.enable()


def when_ready(server):
    pass


def pre_fork(server, worker):
    pass
