"""aiohttp glue: routes, validation, error bodies, notifications."""
