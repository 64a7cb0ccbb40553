"""A Flask service that serves scikit-learn models over a validated JSON API.

The app is built by ``service.app.create_app``. This module imports nothing:
``gunicorn.conf.py`` imports ``service.config`` (and so this package) to point
prometheus_client at the workers' metrics directory, which has to happen before
anything imports that library (see ``service.config.share_metrics_dir``).
"""

__version__ = "0.1.0"
