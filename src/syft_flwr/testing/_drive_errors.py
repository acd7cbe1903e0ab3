"""Errors of the fake Drive server, in Drive's JSON shape, and their usual forms."""

from __future__ import annotations

from typing import Any

__all__ = ["DriveApiError", "insufficient", "invalid", "not_found"]


class DriveApiError(Exception):
    """An error answered in Drive's JSON shape: ``{"error": {"code", "message", "errors"}}``."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        location: str | None = None,
        location_type: str = "parameter",
        domain: str = "global",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.location = location
        self.location_type = location_type
        self.domain = domain

    def to_json(self) -> dict[str, Any]:
        """Return the error body Drive sends."""
        detail: dict[str, Any] = {
            "message": self.message,
            "domain": self.domain,
            "reason": self.reason,
        }
        if self.location:
            detail["location"] = self.location
            detail["locationType"] = self.location_type
        return {
            "error": {"code": self.status, "message": self.message, "errors": [detail]}
        }


def not_found(file_id: str) -> DriveApiError:
    return DriveApiError(
        404, "notFound", f"File not found: {file_id}.", location="fileId"
    )


def insufficient(message: str = "") -> DriveApiError:
    return DriveApiError(
        403,
        "insufficientFilePermissions",
        message or "The user does not have sufficient permissions for this file.",
    )


def invalid(message: str, location: str | None = None) -> DriveApiError:
    return DriveApiError(400, "invalid", message, location=location)
