"""A small client of the cloudsched REST API (httpx), used by the CLI.

    CLOUDSCHED_API_URL   where the API listens (default http://127.0.0.1:8080)
    CLOUDSCHED_API_KEY   the caller's key (`cloudsched keys create` prints one)

Errors come back as RFC 9457 problem documents; `ApiProblem` carries them to the caller.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLOUDSCHED_", extra="ignore")

    api_url: str = "http://127.0.0.1:8080"
    api_key: str | None = None
    api_timeout_s: float = 120.0  # a plan run takes up to its solver time limit


class ApiProblem(Exception):
    def __init__(self, status: int, body: dict[str, Any]):
        self.status, self.body = status, body
        detail = body.get("detail") or body.get("title") or f"HTTP {status}"
        super().__init__(f"{status}: {detail}")

    @property
    def lines(self) -> list[str]:
        out = [str(self)]
        out += [f"  {e.get('field')}: {e.get('message')}" for e in self.body.get("errors", [])]
        out += [f"  - {c}" for c in self.body.get("changes", [])]
        return out


class Client:
    def __init__(self, settings: ClientSettings | None = None, http: httpx.Client | None = None):
        """`http`: an httpx client to use instead (tests pass the app's TestClient)."""
        settings = settings or ClientSettings()
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._http = http or httpx.Client(base_url=settings.api_url, headers=headers,
                                          timeout=settings.api_timeout_s)
        if http is not None:
            self._http.headers.update(headers)

    def _call(self, method: str, path: str, **kwargs) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiProblem(0, {"detail": f"cannot reach the API at {self._http.base_url}: {exc}"}) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text[:500]}
            raise ApiProblem(response.status_code, body)
        return response.json()

    # jobs
    def submit_job(self, spec: dict, idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/v1/jobs", json=spec, headers=headers)

    def list_jobs(self, **filters) -> dict:
        return self._call("GET", "/v1/jobs", params={k: v for k, v in filters.items() if v is not None})

    def get_job(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict:
        return self._call("POST", f"/v1/jobs/{job_id}/actions/cancel")

    def set_offer_rule(self, job_id: str, pin: str | None = None, forbid: list[str] | None = None) -> dict:
        """Sent as given (the API refuses a pin with forbids, or an empty id); neither lifts the rule."""
        body = ({"pin": pin} if pin is not None else {}) | ({"forbid": forbid} if forbid else {})
        return self._call("PUT", f"/v1/jobs/{job_id}/offer-rule", json=body)

    # plans
    def create_plan(self, time_limit_s: float | None = None) -> dict:
        body = {"time_limit_s": time_limit_s} if time_limit_s else {}
        return self._call("POST", "/v1/plans", json=body)

    def get_plan(self, plan_id: str) -> dict:
        return self._call("GET", f"/v1/plans/{plan_id}")

    def diff_plan(self, plan_id: str, against: str | None = None) -> dict:
        return self._call("GET", f"/v1/plans/{plan_id}/diff", params={"against": against} if against else {})

    def explain(self, plan_id: str, job_id: str) -> dict:
        return self._call("GET", f"/v1/plans/{plan_id}/jobs/{job_id}/explanation")

    def approve_plan(self, plan_id: str, fingerprint: str, comment: str = "") -> dict:
        return self._call("POST", f"/v1/plans/{plan_id}/actions/approve",
                          json={"expected_fingerprint": fingerprint, "comment": comment})

    def reject_plan(self, plan_id: str, comment: str) -> dict:
        return self._call("POST", f"/v1/plans/{plan_id}/actions/reject", json={"comment": comment})

    # reports
    def cost_report(self, team: str | None = None, since: str | None = None) -> dict:
        params = {k: v for k, v in {"team": team, "since": since}.items() if v}
        return self._call("GET", "/v1/reports/cost", params=params)
