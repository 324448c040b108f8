"""The command line as the service's client: with ``GOVBUS_API_URL`` set (or an embedded
runtime's service running, and no ``DATABASE_URL``), every command an agency uses calls the
service with the agency's token and needs no database address."""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx

from govbus.core.access import AccessError, token_from
from govbus.core.config import read_runtime
from govbus.core.errors import (
    ConfigError,
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
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout,
                                 verify=tls_context(Service.from_env()))

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


def tls_context(service: Service) -> ssl.SSLContext:
    """The command line's TLS: the system's trust anchors or ``GOVBUS_API_CA_FILE``, and the
    client certificate of ``GOVBUS_API_CLIENT_CERT_FILE`` where the service asks for one."""
    ca = service.api_ca_file
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if service.api_client_cert_file:
            context.load_cert_chain(str(service.api_client_cert_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"GOVBUS_API_CA_FILE / GOVBUS_API_CLIENT_CERT_FILE cannot be used: "
                          f"{exc}") from exc
    return context


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
    token = token_from(token_file)
    if not token:
        raise AccessError(f"acting as an agency through the service at {url} needs its token "
                          "(Art. 24): pass --token-file, or set GOVBUS_TOKEN_FILE or "
                          "GOVBUS_TOKEN", rule="access.no_token")
    return Client(url, token)




def client_settings(http: Client | None) -> Any:
    """The process's settings; without a database address when it acts through ``http``."""
    from govbus.core.config import Settings

    return Settings.from_env(database=http is None)


def service_registry(http: Client) -> Any:
    """A schema registry that reads the registered contracts through the service."""
    from govbus.core.registry import SchemaRegistry

    class ServiceRegistry(SchemaRegistry):
        def fetch(self, schema_id: int | None = None, resource_id: str | None = None
                  ) -> tuple[Any, ...] | None:
            path = (f"/v1/schemas/ids/{schema_id}" if schema_id is not None else
                    f"/v1/schemas/latest/{resource_id}")
            try:
                row = http.get(path)
            except NotFoundError:
                return None
            return (row["schema_id"], row["resource_id"], row["version"], row["contract"],
                    row["envelope_schema"])

    return ServiceRegistry("")


class ServedGrant:
    """A grant as the service lists it: enough for a subscriber to pick its topics."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.grant_id, self.recipient = row["grant_id"], row["recipient"]
        self.resource_id, self.state = row["resource"], row["state"]
        self.fields: tuple[str, ...] = tuple(row.get("fields") or ())

    def in_force(self, at: Any) -> bool:
        return bool(self.state == "in_force")


class ServiceControlPlane:
    """A subscriber's control plane through the service (consumers.subscriber.ControlPlane):
    the service checks the token on every call; an unreachable service is a DatabaseError,
    so the subscriber keeps its topics and retries."""

    def __init__(self, http: Client) -> None:
        self.http = http

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            return self.http.call(method, path, **kw)
        except ServiceError as exc:
            if exc.status in (0, 502, 503, 504):
                raise DatabaseError(str(exc)) from exc
            raise

    def check(self, agency: str) -> None:
        self._call("GET", "/v1/grants", params={"agency": agency, "active": True})

    def grants(self, agency: str) -> list[ServedGrant]:
        rows = self._call("GET", "/v1/grants", params={"agency": agency})
        return [ServedGrant(r) for r in rows if r["recipient"] == agency]

    def confirm(self, keys: list[tuple[str, str, str, str | None]]) -> int:
        if not keys:
            return 0
        agency = keys[0][1]
        out = self._call("POST", "/v1/receipts", json={"agency": agency, "receipts": [
            {"event_id": k[0], "channel": k[2], "content_sha256": k[3]} for k in keys]})
        return int(out["confirmed"])

    def schema(self, schema_id: int) -> dict[str, Any] | None:
        """A delivery schema by id, from the service's Schema Registry API."""
        try:
            found = self._call("GET", f"/registry/schemas/ids/{int(schema_id)}")
        except ServiceError as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(found["schema"])  # type: ignore[no-any-return]
