"""The ops console: a FastAPI application under ``/admin`` (pages and a JSON API) to review and
label decisions, read each tenant's live figures, simulate a policy change, and refit and
promote calibrators.

- :mod:`proxy.admin.app`: the application, its error pages and security headers;
- :mod:`proxy.admin.context`: the parts it is given and who is asking (keys, sessions, CSRF);
- :mod:`proxy.admin.sessions`: signed session cookies and the login throttle;
- :mod:`proxy.admin.login`, :mod:`proxy.admin.pages`, :mod:`proxy.admin.api`: the routes;
- :mod:`proxy.admin.models`: the API's request and response bodies;
- :mod:`proxy.admin.tenants`, :mod:`proxy.admin.review`, :mod:`proxy.admin.simulator`,
  :mod:`proxy.admin.promotion`: what each page does; :mod:`proxy.admin.svg`: its figures.

It sits between :mod:`proxy.http` (which mounts it) and the layers below (it uses the
runtime's config, the store, the analysis modules); nothing below imports it.
"""

from proxy.admin.app import ADMIN_PATH, create_admin_app

__all__ = ["ADMIN_PATH", "create_admin_app"]
