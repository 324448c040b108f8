"""The HTTP service agencies call instead of the central database (``govbus serve``).

Every control-plane operation an agency performs is a route here, under ``/v1``; each checks
the bearer token, then that the caller may act as the agency the route names (Art. 24). The
database stays with the operator: only the service and the information center's
administration (migrations, ``up``/``down``, bulk import) open it.
"""

from govbus.api.app import create_app

__all__ = ["create_app"]
