"""WSGI entry point: Gunicorn serves ``app``; ``flask --app wsgi`` runs the CLI."""

from service import create_app

app = create_app()
