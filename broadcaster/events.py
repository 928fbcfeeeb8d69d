"""Typed builders for the app's broadcast events, so a Python service emits what the Laravel
app would: the same channels (``broadcastOn()``), name (``broadcastAs()``) and payload
(``broadcastWith()``), field for field.

The events are those of the realtime assignment plan (LeadAssigned, AdminCapacityUpdated).
Resources (``LeadResource``, ``AdminResource``) are passed as the dicts their ``toArray()``
returns; the builders add exactly what the PHP events compute on top of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

#: What a JsonResource's toArray() returns (LeadResource, AdminResource).
Resource = Mapping[str, Any]

LEADS_MANAGEMENT = "leads-management"
ADMIN_CAPACITY_UPDATES = "admin-capacity-updates"


@dataclass(frozen=True, slots=True)
class LaravelEvent:
    """One ShouldBroadcast event as Laravel hands it to its broadcaster."""

    channels: tuple[str, ...]  # Echo's names: PrivateChannel('x') is 'private-x'
    name: str                  # broadcastAs(); Echo listens with a leading dot
    payload: dict[str, Any]    # broadcastWith(); the broadcaster adds 'socket'


def private_channel(name: str) -> str:
    """``new PrivateChannel($name)``."""
    return f"private-{name}"


def admin_dashboard_channel(admin_id: Any) -> str:
    """``new PrivateChannel('admin-dashboard.' . ($admin?->id ?? 'unassigned'))``."""
    return private_channel(f"admin-dashboard.{'unassigned' if admin_id is None else admin_id}")


def iso_timestamp(at: datetime | None = None) -> str:
    """Carbon's ``now()->toISOString()``: UTC, microseconds, ``Z``
    (``2026-11-25T10:00:00.000000Z``). A naive ``at`` is taken as UTC."""
    at = at or datetime.now(UTC)
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def php_round(value: float, precision: int = 0) -> float:
    """PHP's ``round()``: half away from zero on the decimal value PHP prints
    (``round(12.25, 1)`` is 12.3; Python's ``round`` gives 12.2)."""
    quantum = Decimal(1).scaleb(-precision)
    return float(Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP))


def full_name(admin: Resource) -> str:
    """``Admin::getFullName()``: ``full_name`` when the resource has it, else first and last
    name, else ``name``."""
    if admin.get("full_name"):
        return str(admin["full_name"])
    parts = [str(admin[k]) for k in ("first_name", "last_name") if admin.get(k)]
    return " ".join(parts) if parts else str(admin.get("name") or "")


def _id(admin: Resource | None) -> Any:
    return None if admin is None else admin.get("id")


def lead_assigned(lead: Resource, new_admin: Resource | None, old_admin: Resource | None,
                  assigned_by: Resource, *, new_admin_full_name: str | None = None,
                  at: datetime | None = None) -> LaravelEvent:
    """``LeadAssigned``: on ``leads-management`` and the new and old admin's private
    dashboards (``private-admin-dashboard.unassigned`` for a missing one; Laravel publishes
    twice when both are the same, and so does this)."""
    lead_name = "" if lead.get("name") is None else str(lead["name"])
    if new_admin is not None:
        name = new_admin_full_name if new_admin_full_name is not None else full_name(new_admin)
        title = f"Yeni lead atandı: {lead_name}"
        message = f"Lead {name} adlı admin'e atandı"
    else:
        title = f"Lead ataması kaldırıldı: {lead_name}"
        message = "Lead'in ataması kaldırıldı"
    return LaravelEvent(
        channels=(LEADS_MANAGEMENT, admin_dashboard_channel(_id(new_admin)),
                  admin_dashboard_channel(_id(old_admin))),
        name="lead.assigned",
        payload={
            "lead": dict(lead),
            "assignment": {
                "new_admin": None if new_admin is None else dict(new_admin),
                "old_admin": None if old_admin is None else dict(old_admin),
                "assigned_by": dict(assigned_by),
                "timestamp": iso_timestamp(at),
                "type": "reassignment" if old_admin is not None else "initial_assignment",
            },
            "notification": {
                "title": title,
                "message": message,
                "type": "assignment",
                "priority": "normal",
            },
        },
    )


def capacity(current: int, maximum: int) -> dict[str, Any]:
    """``new_capacity`` of AdminCapacityUpdated: available never below zero, the percentage
    rounded to one decimal (PHP's round), 0 when there is no maximum."""
    return {
        "current": current,
        "max": maximum,
        "available": max(0, maximum - current),
        "percentage": php_round(current / maximum * 100, 1) if maximum else 0,
    }


def admin_capacity_updated(admin: Resource, capacity_change: int, *,
                           current: int | None = None, maximum: int | None = None,
                           at: datetime | None = None) -> LaravelEvent:
    """``AdminCapacityUpdated``: on ``leads-management`` and ``admin-capacity-updates``.
    ``current`` and ``maximum`` default to the admin's ``leads_assigned_count`` and
    ``max_leads_per_day``."""
    current = int(admin.get("leads_assigned_count") or 0) if current is None else current
    maximum = int(admin.get("max_leads_per_day") or 0) if maximum is None else maximum
    return LaravelEvent(
        channels=(LEADS_MANAGEMENT, ADMIN_CAPACITY_UPDATES),
        name="admin.capacity.updated",
        payload={
            "admin": dict(admin),
            "capacity_change": capacity_change,
            "new_capacity": capacity(current, maximum),
            "timestamp": iso_timestamp(at),
        },
    )


__all__ = ["ADMIN_CAPACITY_UPDATES", "LEADS_MANAGEMENT", "LaravelEvent", "Resource",
           "admin_capacity_updated", "admin_dashboard_channel", "capacity", "full_name",
           "iso_timestamp", "lead_assigned", "php_round", "private_channel"]
