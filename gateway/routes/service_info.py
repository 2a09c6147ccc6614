"""The API root: what this service is."""

from __future__ import annotations

from litestar import get

from gateway.api_schemas import ServiceInfo
from gateway.version import API_VERSION, DISTRIBUTION_NAME, package_version


@get("/v1", tags=["info"], summary="Service name and versions")
async def service_info() -> ServiceInfo:
    """Name, package version and API version of this gateway."""
    return ServiceInfo(name=DISTRIBUTION_NAME, version=package_version(), api_version=API_VERSION)
