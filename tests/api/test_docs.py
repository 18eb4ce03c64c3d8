"""`/docs` and `/redoc` load everything they need from this service: no script, style, font or
image from another host, so the pages work on a network that reaches nothing else (issue 11).

`make bench-docs-offline` renders both pages in headless Chromium with every other host
unreachable; these tests check what that depends on, in every run.
"""

from __future__ import annotations

import re

import httpx
import pytest

from api.docs import ASSET_FILES, ASSETS_PATH

# Every URL a page loads: src= and href= attributes, and url(...) in inline styles.
_LOADED = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^"')]+)""")
_CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


def loaded_urls(html: str) -> list[str]:
    return [first or second for first, second in _LOADED.findall(html)]


@pytest.mark.parametrize(
    ("page", "expected_assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
async def test_a_documentation_page_loads_only_this_services_assets(
    client: httpx.AsyncClient, page: str, expected_assets: set[str]
) -> None:
    response = await client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = loaded_urls(response.text)
    assert {url.rsplit("/", 1)[-1] for url in urls} >= expected_assets
    for url in urls:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        assert not url.startswith("//"), f"{page} loads {url} from another host"
    assert "googleapis" not in response.text
    assert "cdn." not in response.text
    # The page reads the document from this service too.
    assert "/openapi.json" in response.text


@pytest.mark.parametrize("name", ASSET_FILES)
async def test_every_asset_is_served(client: httpx.AsyncClient, name: str) -> None:
    response = await client.get(f"{ASSETS_PATH}/{name}")

    assert response.status_code == 200
    suffix = name[name.rindex(".") :]
    assert response.headers["content-type"].split(";")[0] in _CONTENT_TYPES[suffix]
    # The real bundles, not an empty placeholder.
    assert len(response.content) > (1_000 if suffix == ".png" else 50_000)


async def test_swagger_ui_asks_no_outside_validator(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert '"validatorUrl": null' in response.text


async def test_an_unknown_asset_is_a_problem_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{ASSETS_PATH}/nothing-here.js")
    assert response.status_code == 404
