"""The Dynamips module: manager, routers, devices, NIOs and the hypervisor layer."""
