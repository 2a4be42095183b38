"""/docs (Swagger UI) and /redoc render in a real browser from this coordinator's own assets."""

from __future__ import annotations

from backend.app import create_app


def route_count() -> int:
    return sum(len(operations) for operations in create_app().openapi()["paths"].values())


def test_swagger_ui_renders_every_route_offline(watched):
    page = watched.page
    page.goto(f"{watched.home}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "fedmarket coordinator" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock", timeout=30_000)
    assert page.locator(".opblock").count() == route_count()
    watched.screenshot("api-docs")
    assert watched.errors == [] and watched.foreign_requests == []


def test_redoc_renders_every_route_offline(watched):
    page = watched.page
    page.goto(f"{watched.home}/redoc")
    page.wait_for_selector("h1", timeout=30_000)
    assert "fedmarket coordinator" in page.inner_text("h1")
    page.wait_for_selector("[data-section-id^='tag/']", timeout=30_000)
    sections = page.locator("[data-section-id^='tag/'][data-section-id*='/operation/']").evaluate_all(
        "nodes => nodes.map(node => node.getAttribute('data-section-id'))"
    )
    assert len(set(sections)) == route_count()
    watched.screenshot("api-redoc")
    assert watched.foreign_requests == []
    assert watched.errors == []
