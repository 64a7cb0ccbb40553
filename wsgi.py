"""WSGI entry point: Gunicorn serves ``app``; ``flask --app wsgi`` runs the CLI.

The app is built from this process's settings, the object ``gunicorn.conf.py``
configured the server with.
"""

from service.app import create_app
from service.config import process_settings

app = create_app(process_settings())
