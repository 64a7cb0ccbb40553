"""Pages for people: a home page listing the models, and one page per model to try it.

``views.py`` holds the blueprint and its views, ``controls.py`` how a manifest
reads on a page; the templates and the CSS and JavaScript live in this package
(``templates/pages/``, ``static/``), served by the service itself.
"""

from service.pages.views import bp

__all__ = ["bp"]
