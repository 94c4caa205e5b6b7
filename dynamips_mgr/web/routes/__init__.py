"""Route modules, one per resource; importing them fills the route table."""

import importlib

MODULES = ("server", "projects", "dynamips_vms", "dynamips_devices", "openapi")


def load_routes() -> None:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
