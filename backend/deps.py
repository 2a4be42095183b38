"""FastAPI dependencies, injected through `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from backend.db import Database
from backend.services import Services
from backend.settings import Settings
from fedmarket.chain import MarketClient
from fedmarket.store import DirectoryStore


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_db(services: ServicesDep) -> Database:
    return services.db


def get_store(services: ServicesDep) -> DirectoryStore:
    return services.store


def get_chain(services: ServicesDep) -> MarketClient:
    return services.chain


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
StoreDep = Annotated[DirectoryStore, Depends(get_store)]
ChainDep = Annotated[MarketClient, Depends(get_chain)]
