"""HighLevel's OAuth endpoints, as the OAuth specs (v2 ``oauth.json``, v3 ``oauth-v3.json``) say:
the routes, and which module answers each.

``POST /oauth/token``, the refresh-token grant (rotating single-use refresh tokens, access
tokens that expire), is ``oauth_grant.py``. ``POST /oauth/locationToken`` and
``/oauth/location-token`` (an agency token mints a location token) and ``GET
/oauth/installedLocations`` and ``/oauth/installed-locations`` (where the app is installed)
are ``oauth_agency.py``. Their checks of the caller are ``gates.py``'s; the grants and tokens
themselves live in ``oauth.py``.
"""

from __future__ import annotations

from functools import partial

from aiohttp import web

from pipeline.sandbox.app import Sandbox
from pipeline.sandbox.oauth_agency import AgencyApi
from pipeline.sandbox.oauth_grant import TokenGrant

OAUTH_TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
LOCATION_TOKEN_PATH = "/oauth/locationToken"  # noqa: S105
LOCATION_TOKEN_V3_PATH = "/oauth/location-token"  # noqa: S105
INSTALLED_LOCATIONS_PATH = "/oauth/installedLocations"
INSTALLED_LOCATIONS_V3_PATH = "/oauth/installed-locations"


def add_oauth_routes(app: web.Application, sandbox: Sandbox) -> None:
    """Register the OAuth routes (before the catch-all 404)."""
    grant, agency = TokenGrant(sandbox), AgencyApi(sandbox)
    router = app.router
    router.add_post(OAUTH_TOKEN_PATH, grant.token)
    for v3, token_path, installed_path in (
        (False, LOCATION_TOKEN_PATH, INSTALLED_LOCATIONS_PATH),
        (True, LOCATION_TOKEN_V3_PATH, INSTALLED_LOCATIONS_V3_PATH),
    ):
        router.add_post(token_path, partial(agency.location_token, v3=v3))
        router.add_get(installed_path, partial(agency.installed_locations, v3=v3), allow_head=False)
