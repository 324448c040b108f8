"""The command line as the service's client: with ``GOVBUS_API_URL`` set (or an embedded
runtime's service running, and no ``DATABASE_URL``), every command an agency uses calls the
service with the agency's token and needs no database address."""

from __future__ import annotations

from typing import Any

import httpx

from govbus.core.access import AccessError, token_from
from govbus.core.config import read_runtime
from govbus.core.errors import (
    ConflictError,
    DatabaseError,
    ForbiddenError,
    GovbusError,
    NotFoundError,
)
from govbus.core.settings_spec import Service, read_env

#: the error class a refusal is raised as, by its status
_BY_STATUS: dict[int, type[GovbusError]] = {401: AccessError, 403: ForbiddenError,
                                            404: NotFoundError, 409: ConflictError,
                                            503: DatabaseError}


class ServiceError(GovbusError):
    """The service refused or failed; carries the status, the rule and the article."""

    status = 0


def api_url() -> str | None:
    """``GOVBUS_API_URL``; else, unless ``DATABASE_URL`` names a database to use directly,
    the service of the running embedded runtime; else None (the database directly)."""
    values = read_env()
    if values["api_url"]:
        return str(values["api_url"]).rstrip("/")
    if values["database_url"]:
        return None
    url = read_runtime(values["state_dir"]).get("api_url")
    return str(url) if url else None


class Client:
    """Calls to the service as the agency whose token it holds."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        service = Service.from_env()
        cert = str(service.api_client_cert_file) if service.api_client_cert_file else None
        verify: Any = str(service.api_ca_file) if service.api_ca_file else True
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout,
                                 verify=verify, cert=cert)

    def call(self, method: str, path: str, json: Any = None,
             params: dict[str, Any] | None = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v not in (None, False)}
        try:
            response = self.http.request(method, path, json=json, params=query)
        except httpx.HTTPError as exc:
            raise ServiceError(f"the HTTP service at {self.url} cannot be reached: {exc} "
                               "(GOVBUS_API_URL; `govbus status`)") from exc
        if response.is_success:
            return response.json() if response.content else None
        raise refusal(response)

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, json=body if body is not None else {})

    def close(self) -> None:
        self.http.close()


def refusal(response: httpx.Response) -> GovbusError:
    """The error a refusal of the service stands for, with its message, rule and article."""
    try:
        error = response.json()["error"]
        message, rule, article = error["message"], error["rule"], error.get("article") or ""
    except (ValueError, KeyError, TypeError):
        message, rule, article = (f"HTTP {response.status_code}: {response.text[:200]}",
                                  "http.refused", "")
    cls = _BY_STATUS.get(response.status_code, ServiceError)
    exc = cls(f"{message} [{rule}{', ' + article if article else ''}; HTTP "
              f"{response.status_code}]", rule=rule, article=article)
    if isinstance(exc, ServiceError):
        exc.status = response.status_code
    return exc


def client(token_file: str | None = None) -> Client | None:
    """A client of the service as the agency of ``--token-file`` (else ``GOVBUS_TOKEN_FILE``
    / ``GOVBUS_TOKEN``), when the command line acts through the service; else None."""
    url = api_url()
    if url is None:
        return None
    return Client(url, token_from(token_file))


