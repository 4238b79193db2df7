"""Typed Python client of the Model Trainer API (``Client``, ``AsyncClient``) and the ``mt`` CLI
(``mt_client.cli``). Built on ``mt_contracts``: answers decode into the Structs the server encodes."""

from mt_client.client import AsyncClient, Client, is_terminal
from mt_client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    FieldError,
    Forbidden,
    IntegrityError,
    NotFound,
    Problem,
    ProtocolError,
    RangeNotSatisfiable,
    ServerError,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from mt_client.models import ArtifactFile, ArtifactHead, ArtifactListing, Downloaded, Health, Streamed

__all__ = [
    "ApiError",
    "ArtifactFile",
    "ArtifactHead",
    "ArtifactListing",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "Downloaded",
    "FieldError",
    "Forbidden",
    "Health",
    "IntegrityError",
    "NotFound",
    "Problem",
    "ProtocolError",
    "RangeNotSatisfiable",
    "ServerError",
    "Streamed",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "is_terminal",
]
