"""The broker's HTTP side: portal pages and the JSON API."""

from .app import create_app

__all__ = ["create_app"]
