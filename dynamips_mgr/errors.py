"""Domain exceptions. Each carries the HTTP status the web layer answers with."""


class ServerError(Exception):
    """Base of every error this server reports to a client."""

    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServerError):
    status = 400


class Forbidden(ServerError):
    status = 403


class NotFound(ServerError):
    status = 404


class Conflict(ServerError):
    status = 409


class ArgumentError(BadRequest):
    """A value cannot be carried to dynamips (quote, CR, LF...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"Invalid value for '{field}': {message}")
        self.field = field
