"""Why the batcher refused or failed a request."""


class BatcherError(Exception):
    pass


class QueueFull(BatcherError):
    """The queue is at its bound: try again later (429)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"the server is at capacity; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


class RequestTooLarge(BatcherError):
    """The request alone is larger than the whole queue (413)."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"the request has {size} {what}; at most {limit} can be queued")
        self.limit = limit


class ShuttingDown(BatcherError):
    """The batcher is draining for shutdown and takes no new work (503)."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down")


class BatchFailed(BatcherError):
    """The batch holding this request's items raised; only that batch's requests fail."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"inference failed: {type(cause).__name__}: {cause}")
        self.cause = cause
