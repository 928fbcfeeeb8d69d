"""Demo data from the user's plan (shared/seed-realtime-assignment-plan.md):
the shapes of ``LeadAssigned::broadcastWith()`` and
``AdminCapacityUpdated::broadcastWith()``, used as realistic test payloads."""

from __future__ import annotations

from typing import Any


def admin(admin_id: int, name: str) -> dict[str, Any]:
    return {"id": admin_id, "name": name, "email": f"admin{admin_id}@example.com",
            "leads_assigned_count": 12, "max_leads_per_day": 40}


def lead_assigned(lead_id: int = 42, new_admin: int = 5,
                  old_admin: int | None = 3) -> dict[str, Any]:
    new = admin(new_admin, "Ayşe Yılmaz")
    old = admin(old_admin, "Mehmet Demir") if old_admin else None
    return {
        "lead": {"id": lead_id, "name": "Zeynep Kaya", "phone": "+90 555 000 0000",
                 "lead_status": {"id": 1, "name": "Yeni"}, "assigned_admin": new},
        "assignment": {
            "new_admin": new,
            "old_admin": old,
            "assigned_by": admin(1, "Süper Admin"),
            "timestamp": "2026-11-25T10:00:00.000000Z",
            "type": "reassignment" if old else "initial_assignment",
        },
        "notification": {
            "title": "Lead Ataması Değişti",
            "message": f"Zeynep Kaya adlı lead {new['name']} adlı admine atandı 🎯",
            "type": "assignment",
            "priority": "normal",
        },
    }


def capacity_updated(admin_id: int = 5, current: int = 12, maximum: int = 40) -> dict[str, Any]:
    return {
        "admin": admin(admin_id, "Ayşe Yılmaz"),
        "capacity_change": 1,
        "new_capacity": {
            "current": current,
            "max": maximum,
            "available": max(0, maximum - current),
            "percentage": round(current / maximum * 100, 1) if maximum else 0,
        },
        "timestamp": "2026-11-25T10:00:00.000000Z",
    }
