"""What the spawn form's fields may hold where: the GPU count and runtime limits per backend,
Slurm partition and reservation (issue 12, "only what can work").

Pure data, from what the hub already knows: the admin's bounds (``options.Bounds``), the HTCondor
lane's capacity view (``scheduler.capacity``: its largest GPU count) and what Slurm offers this
user (``Scheduler.describe_resources``: per partition ``max_gpus_per_node`` and
``max_runtime_hours`` (its configured notebook runtime capped by MaxTime), per reservation
``remaining_hours`` and ``partitions``).

The page gets the result as JSON (``spawn_form_fields_script.html`` adapts the fields as the user
picks a backend, partition or reservation); without JavaScript the fields take the largest value
over all places (``overall``) and the server refuses what does not fit the chosen place, naming
the field. The server's checks stay the authority; nothing here decides a request.
"""

from __future__ import annotations

from typing import Any, Optional

from ..options import Bounds


def _place(gpus: int, runtime_hours: float, bounds: Bounds) -> dict[str, Any]:
    return {"gpus": max(0, min(int(gpus), bounds.max_gpus)),
            "runtime_hours": round(min(float(runtime_hours), bounds.max_runtime_hours), 2)}


def field_limits(bounds: Bounds, lane_gpus: Optional[int] = None,
                 slurm: Optional[dict] = None) -> dict[str, Any]:
    """{"htcondor": place, "slurm": {"default_partition", "partitions": {name: place},
    "reservations": {name: {"remaining_hours", "end", "partitions"}}}, "overall": place}
    with place = {"gpus", "runtime_hours"}; only the enabled backends. ``lane_gpus`` None: the
    lane's capacity is unknown (the bound applies)."""
    out: dict[str, Any] = {}
    places = []
    if "htcondor" in bounds.backends:
        out["htcondor"] = _place(bounds.max_gpus if lane_gpus is None else lane_gpus,
                                 bounds.max_runtime_hours, bounds)
        places.append(out["htcondor"])
    if "slurm" in bounds.backends:
        slurm = slurm or {}
        parts: dict[str, dict] = {}
        for p in slurm.get("partitions") or ():
            if isinstance(p, dict) and "name" in p:
                parts[p["name"]] = _place(p.get("max_gpus_per_node", bounds.max_gpus),
                                          p.get("max_runtime_hours", bounds.max_runtime_hours),
                                          bounds)
        resvs = {}
        for r in slurm.get("reservations") or ():
            if isinstance(r, dict) and "name" in r:
                resvs[r["name"]] = {"remaining_hours": r.get("remaining_hours"),
                                    "end": r.get("end"), "partitions": list(r.get("partitions") or ())}
        unknown = slurm.get("error") or not parts
        out["slurm"] = {"default_partition": slurm.get("default_partition") or "",
                        "partitions": parts, "reservations": resvs,
                        # Slurm's view failed: the form offers the bounds, the server decides
                        "unknown": _place(bounds.max_gpus, bounds.max_runtime_hours, bounds)
                        if unknown else None}
        places.extend(parts.values() or [out["slurm"]["unknown"]])
    out["overall"] = {"gpus": max((p["gpus"] for p in places), default=0),
                      "runtime_hours": max((p["runtime_hours"] for p in places),
                                           default=bounds.max_runtime_hours)}
    return out


def gpu_places(limits: dict[str, Any]) -> list[str]:
    """Where GPUs exist, in words for the field's hint (e.g. "HTCondor: up to 2")."""
    out = []
    if limits.get("htcondor", {}).get("gpus"):
        out.append(f"HTCondor: up to {limits['htcondor']['gpus']}")
    parts = (limits.get("slurm") or {}).get("partitions") or {}
    by_count: dict[int, list[str]] = {}
    for name, p in parts.items():
        if p["gpus"]:
            by_count.setdefault(p["gpus"], []).append(name)
    for n, names in sorted(by_count.items(), reverse=True):
        out.append(f"SLURM partition{'s' if len(names) > 1 else ''} {', '.join(names)}: up to {n}")
    return out
