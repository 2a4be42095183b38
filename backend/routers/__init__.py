"""One router per resource, collected here."""

from backend.routers import blobs, health, tasks

ROUTERS = [tasks.router, blobs.router, health.router]
