"""One router per resource, collected here."""

from backend.routers import accounts, blobs, health, tasks

ROUTERS = [tasks.router, accounts.router, blobs.router, health.router]
