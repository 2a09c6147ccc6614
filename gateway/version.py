"""Version information for the gateway and its HTTP API."""

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION_NAME = "slurm-gateway"
API_VERSION = "v1"


def package_version() -> str:
    """Installed version of the slurm-gateway distribution ("0+unknown" if not installed)."""
    try:
        return version(DISTRIBUTION_NAME)
    except PackageNotFoundError:
        return "0+unknown"
