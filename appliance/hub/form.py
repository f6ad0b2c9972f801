"""The spawn page form: a Jinja template (``templates/spawn_form.html``) admins can override.

``render_form`` renders it from plain data the spawner passes in (:func:`form_context`: the same
bounds the validator uses, the enabled backends, what SLURM offers this user); this module never
imports the spawner.

``options_from_form`` only converts the form's strings into the JSON shape of ``user_options``
(ints, floats, the env mapping); all validation happens in ``appliance.options`` for the form and
the REST API alike. Conversion errors name the field too.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Iterable, Optional

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader

from ..options import SLURM_ONLY_FIELDS, Bounds, OptionsError

#: the package's own templates; admins' ``c.JupyterHub.template_paths`` are searched first
PACKAGE_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
TEMPLATE = "spawn_form.html"
BACKEND_LABELS = {"htcondor": "HTCondor (high-throughput pool)", "slurm": "SLURM (HPC cluster)"}


def _names(items: Iterable[Any]) -> list[str]:
    """Names of partitions/reservations, given as names or as dicts with a "name"."""
    return [item["name"] if isinstance(item, dict) else item for item in items or ()]


def form_context(bounds: Bounds, slurm: Optional[dict] = None) -> dict[str, Any]:
    """The template's data: the admin's bounds and, when SLURM is enabled, what this user may use
    there (``Scheduler.describe_resources``, or ``{"error": message}`` when it failed)."""
    backends = list(bounds.backends)
    checked = bounds.default_backend or backends[0]
    context: dict[str, Any] = {
        "backends": [{"name": name, "label": BACKEND_LABELS.get(name, name),
                      "checked": name == checked} for name in backends],
        "max_cpus": bounds.max_cpus,
        "max_memory_gb": f"{bounds.max_memory_gb:g}",
        "max_gpus": bounds.max_gpus,
        "max_runtime_hours": f"{bounds.max_runtime_hours:g}",
        "slurm": None,
    }
    if "slurm" in backends:
        slurm = slurm or {}
        features = list(slurm.get("features") or ())
        context["slurm"] = {
            "partitions": _names(slurm.get("partitions")),
            "reservations": _names(slurm.get("reservations")),
            "features": features,
            "feature_example": "&".join(features[:2]) or "epyc",
            "error": slurm.get("error"),
        }
    return context


@functools.lru_cache(maxsize=16)
def _environment(template_paths: tuple[str, ...]) -> Environment:
    loader = ChoiceLoader([
        FileSystemLoader(list(template_paths)),
        # lets an override extend the shipped form: {% extends "appliance/spawn_form.html" %}
        PrefixLoader({"appliance": FileSystemLoader(PACKAGE_TEMPLATES)}),
        FileSystemLoader(PACKAGE_TEMPLATES),
    ])
    return Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True)


def render_form(context: dict[str, Any], template_paths: Iterable[str] = ()) -> str:
    """The form HTML: ``spawn_form.html`` from the first of ``template_paths`` (the hub's
    ``c.JupyterHub.template_paths``) that has one, else the package's."""
    env = _environment(tuple(template_paths))
    return env.get_template(TEMPLATE).render(**context)


def _one(formdata: dict, key: str) -> str:
    v = formdata.get(key, [""])
    if isinstance(v, list):
        v = v[0] if v else ""
    return str(v).strip()


def options_from_form(formdata: dict) -> dict:
    """Form strings -> user_options JSON shape. Empty fields are left out (defaults apply)."""
    known = {"backend", "interface", "cpus", "memory_gb", "gpus", "runtime_hours", "env",
             *SLURM_ONLY_FIELDS}
    unknown = sorted(set(formdata) - known - {"_xsrf"})
    if unknown:
        raise OptionsError(unknown[0], "is not a known option")
    out: dict[str, Any] = {}
    for key in ("backend", "interface", *SLURM_ONLY_FIELDS):
        v = _one(formdata, key)
        if v:
            out[key] = v
    for key, conv in (("cpus", int), ("gpus", int), ("memory_gb", float), ("runtime_hours", float)):
        v = _one(formdata, key)
        if v:
            try:
                out[key] = conv(v)
            except ValueError:
                raise OptionsError(key, f"{v!r} is not a number") from None
    if out.get("backend") != "slurm":
        for key in SLURM_ONLY_FIELDS:
            out.pop(key, None)
    env_text = formdata.get("env", [""])
    env_text = env_text[0] if isinstance(env_text, list) and env_text else (env_text or "")
    env: dict[str, str] = {}
    for n, line in enumerate(str(env_text).splitlines(), 1):
        if not line.strip():
            continue
        if "=" not in line:
            raise OptionsError("env", f"line {n} is not NAME=value")
        name, value = line.split("=", 1)
        env[name.strip()] = value
    if env:
        out["env"] = env
    return out
