"""Errors the model layer raises; the server maps them to HTTP statuses."""


class ModelError(Exception):
    """Base class for model-layer errors."""


class InvalidInput(ModelError, ValueError):
    """The input cannot be run by this model (e.g. too long with truncation off, unknown token ids)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InputTooLong(InvalidInput):
    """A (query, document) pair is longer than the reranker's limit and truncation is off (413)."""


class ModelNotReady(ModelError):
    """The model is still loading, or failed to load: try again later."""


class ModelLoadError(ModelError):
    """The model's source could not be loaded."""


class UnknownModel(ModelError, LookupError):
    """No served model has this name."""

    def __init__(self, name: str | None, served: list[str], kind: str, *, served_as: str | None = None) -> None:
        listed = f"served {kind} models: {', '.join(served) or 'none'}"
        if served_as is not None:  # served, but for another kind of request
            message = f"model {name!r} is served for {served_as}, not {kind}; {listed}"
        elif name is None and not served:
            message = f"no {kind} model is served here"
        elif name is None:
            message = f"no model named and {len(served)} {kind} models are served; name one of: {', '.join(served)}"
        else:
            message = f"model {name!r} is not served; {listed}"
        super().__init__(message)
        self.name = name
        self.served = served
        self.served_as = served_as
