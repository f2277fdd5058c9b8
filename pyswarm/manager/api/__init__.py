"""The manager's HTTP API: app.py builds it; auth.py says who may call what; requests.py and responses.py
are the bodies; errors.py maps the manager's refusals to statuses; routes/ has one router per resource."""

from pyswarm.manager.api.app import create_app

__all__ = ["create_app"]
