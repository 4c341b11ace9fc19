"""The API parts that need no store: catalog, dry-run validation, errors as problem+json."""

from __future__ import annotations

import pytest
from api_support import make_api


@pytest.fixture(scope="module")
def client():
    api = make_api()
    api.client.headers.update(api.auth("a"))
    return api.client


def test_offers_sorted_by_price_per_gpu_hour_with_catalog_version(client):
    body = client.get("/v1/offers", params={"gpu": "H100:8", "limit": 40}).json()
    prices = [o["price_per_node_hour"] / o["gpus_per_node"] for o in body["offers"]]
    assert prices == sorted(prices) and len(prices) == 40
    assert len(body["catalog_version"]) == 64


def test_bad_accelerator_is_a_422_problem_naming_the_field(client):
    response = client.get("/v1/offers", params={"gpu": "H100:x"})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == "gpu"


def test_validate_dry_run_lists_candidates_and_reasons(client):
    spec = {"name": "probe", "team": "nlp", "gpus": 8, "gpu_types": ["H100"], "duration_hours": 10,
            "deadline": "2099-01-01T00:00:00Z"}
    body = client.post("/v1/jobs:validate", json=spec).json()
    assert body["candidate_count"] > 0
    costs = [c["cost"] for c in body["candidates"]]
    assert costs == sorted(costs)
    assert body["rejected"]["SpotNotAllowed"] > 0


@pytest.mark.parametrize("field, value", [("gpus", 0), ("gpu_types", []), ("bogus", 1), ("name", "Bad Name")])
def test_invalid_job_spec_is_a_422_naming_the_field(client, field, value):
    spec = {"name": "probe", "team": "nlp", "gpus": 8, "gpu_types": ["H100"], "duration_hours": 10,
            "deadline": "2099-01-01T00:00:00Z", field: value}
    response = client.post("/v1/jobs:validate", json=spec)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in {e["field"] for e in response.json()["errors"]}


def test_swagger_ui_is_served_without_a_cdn(client):
    page = client.get("/docs").text
    assert "/static-offline-docs/swagger-ui-bundle.js" in page
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert "cdn" not in page.lower()
