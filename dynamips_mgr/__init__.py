"""dynamips_mgr: a GNS3 1.5 compatible REST server for the Dynamips router emulator."""

__version__ = "0.1.0"
API_VERSION = "1.5.4"
