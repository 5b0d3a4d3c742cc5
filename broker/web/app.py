"""The broker's aiohttp application: the portal, the JSON API and the admin API (a
sub-application), thin layers over :class:`broker.service.Broker`; see :mod:`broker.web.common`
for what they share."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import AsyncIterator

from aiohttp import web

from wire import serving

from ..service import Broker
from . import admin_api, api, portal
from .common import (BROKER_KEY, MAX_BODY, Shedding, client_middleware, errors_middleware,
                     security_headers)

logger = logging.getLogger("pforte.web")

STATIC_DIR = Path(__file__).parent / "static"
PACKAGED_NOVNC_DIR = Path(__file__).parent / "novnc"    # in the wheel (scripts/build-wheel)
CHECKOUT_NOVNC_DIR = Path(__file__).resolve().parents[2] / "node_modules" / "@novnc" / "novnc"
DEFAULT_NOVNC_DIR = PACKAGED_NOVNC_DIR if PACKAGED_NOVNC_DIR.is_dir() else CHECKOUT_NOVNC_DIR
PACKAGED_RDP_DIR = Path(__file__).parent / "rdp"         # IronRDP, the RDP client of the page
CHECKOUT_RDP_DIR = Path(__file__).resolve().parents[2] / "node_modules" / "@devolutions"
DEFAULT_RDP_DIR = PACKAGED_RDP_DIR if PACKAGED_RDP_DIR.is_dir() else CHECKOUT_RDP_DIR


def create_app(broker: Broker, *, novnc_dir: Path = DEFAULT_NOVNC_DIR) -> web.Application:
    """The broker's application; starting it starts the broker, cleanup closes it."""
    shedding = Shedding(broker.config.requests_in_flight, broker.config.requests_queued)
    app = web.Application(middlewares=[client_middleware, errors_middleware, shedding.middleware],
                          client_max_size=MAX_BODY)
    app[BROKER_KEY] = broker
    app.on_response_prepare.append(security_headers)
    app.on_response_prepare.append(serving.name_the_server)
    app.add_routes(portal.routes)
    app.add_routes(api.routes)
    app.add_subapp("/api/v1/admin/", admin_api.create())
    app.router.add_static("/static/", STATIC_DIR)
    if novnc_dir.is_dir():
        app.router.add_static("/novnc/", novnc_dir)
    else:
        logger.warning("noVNC not found at %s: the desktop page will not work "
                       "(run the setup, which installs it with npm)", novnc_dir)
    if DEFAULT_RDP_DIR.is_dir():
        app.router.add_static("/rdp/", DEFAULT_RDP_DIR)
    else:
        logger.warning("IronRDP not found at %s: RDP desktops will not open in the page "
                       "(run the setup, which installs it with npm)", DEFAULT_RDP_DIR)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await broker.start()
        yield
        await broker.close()
    app.cleanup_ctx.append(lifecycle)
    return app
