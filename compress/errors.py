"""The library's one error type: every bad input it rejects, with a message meant for a person."""


class CompressError(ValueError):
    """Every bad input the library rejects: the message is meant for a person."""
