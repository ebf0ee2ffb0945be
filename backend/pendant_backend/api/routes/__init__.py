"""The API's routers, one per resource: alarms, devices, the fleet summary and health events. Each is
tagged, so that its operation ids read `<tag>-<function>` (pendant_backend.web) for client generators."""
