"""The part of kubernetes-validate's API that the deployment tests use (the package ships no type hints).

``validate`` checks one object against the OpenAPI-derived JSON schema of Kubernetes ``desired_version``
(``"1.29"``; the newest release not after it that the package ships), with ``strict`` rejecting unknown
fields, and returns the version it used.
"""

from collections import deque
from collections.abc import Mapping

__version__: str

class ValidationError(Exception):
    """The object does not match the schema; ``path`` leads to the offending field."""

    message: str
    path: deque[str | int]
    version: str

class SchemaNotFoundError(Exception):
    """No schema for this kind and apiVersion (custom resources have none)."""

    kind: str
    version: str
    api_version: str
    message: str

class InvalidSchemaError(Exception):
    message: str

def validate(data: Mapping[str, object], desired_version: str, strict: bool = False) -> str: ...
def latest_version() -> str: ...
