"""``govbus serve``: the HTTP service on uvicorn, over TLS (and mutual TLS) when configured."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from govbus.core.config import Settings
from govbus.core.errors import ConfigError


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS arguments from the Service settings; ConfigError naming the variable
    when they do not combine."""
    cert, key, ca = (settings.api_tls_cert_file, settings.api_tls_key_file,
                     settings.api_client_ca_file)
    if bool(cert) != bool(key):
        raise ConfigError("GOVBUS_API_TLS_CERT_FILE and GOVBUS_API_TLS_KEY_FILE go together: "
                          "set both for HTTPS, or neither")
    if ca and not cert:
        raise ConfigError("GOVBUS_API_CLIENT_CA_FILE (mutual TLS) needs HTTPS: set "
                          "GOVBUS_API_TLS_CERT_FILE and GOVBUS_API_TLS_KEY_FILE too")
    for env, path in (("GOVBUS_API_TLS_CERT_FILE", cert), ("GOVBUS_API_TLS_KEY_FILE", key),
                      ("GOVBUS_API_CLIENT_CA_FILE", ca)):
        if path and not path.is_file():
            raise ConfigError(f"{env}={path}: no such file")
    if not cert:
        return {}
    out: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    if ca:
        out |= {"ssl_ca_certs": str(ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return out


def url_of(settings: Settings, host: str | None = None, port: int | None = None) -> str:
    scheme = "https" if settings.api_tls_cert_file else "http"
    shown = host or settings.api_host
    if shown in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    return f"{scheme}://{shown}:{port or settings.api_port}"


def serve(host: str | None = None, port: int | None = None) -> None:
    """Run the service until stopped (SIGTERM or Ctrl-C)."""
    import uvicorn

    from govbus.api.app import create_app
    from govbus.core import db

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.from_env()
    tls = tls_options(settings)
    db.migrate(settings.database_url)
    app = create_app(settings)
    logging.getLogger("govbus.api").info("govbus serve on %s (OpenAPI at /openapi.json, "
                                         "docs at /docs)", url_of(settings, host, port))
    uvicorn.run(app, host=host or settings.api_host, port=port or settings.api_port,
                log_level="info", access_log=False, proxy_headers=False,
                server_header=False, **tls)


if __name__ == "__main__":
    serve()
