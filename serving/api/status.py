"""A request's failure as TF Serving reports it: a canonical error code and one message.

REST answers `{"error": message}` with the HTTP status TF Serving maps the code to; gRPC
aborts with the same code. Raised anywhere a request is handled; never crashes the server.
"""
from __future__ import annotations

#: TF Serving's canonical-code -> HTTP status mapping (util/net_http ToHTTPStatusCode).
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 408,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
    "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


class ServingStatus(Exception):
    """An error answer: `code` is a grpc.StatusCode name, `message` the one-line text."""

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status
        #: HTTP: close the connection after the answer (a body too large to read and discard)
        self.close_connection = False

    @property
    def http_status(self) -> int:
        return self._http_status or HTTP_STATUS.get(self.code, 500)

    @property
    def grpc_code(self):
        import grpc
        return getattr(grpc.StatusCode, self.code)

    @classmethod
    def invalid(cls, message: str) -> ServingStatus:
        return cls("INVALID_ARGUMENT", message)

    @classmethod
    def not_found(cls, message: str) -> ServingStatus:
        return cls("NOT_FOUND", message)

    @classmethod
    def too_large(cls, message: str) -> ServingStatus:
        """A request over the size limit: HTTP 413, gRPC RESOURCE_EXHAUSTED (what grpc itself answers
        for a message over max_receive_message_length)."""
        return cls("RESOURCE_EXHAUSTED", message, http_status=413)

    @classmethod
    def unavailable(cls, message: str) -> ServingStatus:
        return cls("UNAVAILABLE", message)

    def __repr__(self) -> str:
        return f"ServingStatus({self.code}, {self.message!r})"
