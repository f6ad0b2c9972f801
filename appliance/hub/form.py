"""The spawn page form: a Jinja template (``templates/spawn_form.html``) admins can override.

``render_form`` renders it from plain data the spawner passes in (:func:`form_context`: the same
bounds the validator uses, the enabled backends, what SLURM offers this user); this module never
imports the spawner.

``options_from_form`` only converts the form's strings into the JSON shape of ``user_options``
(ints, floats, the env mapping); all validation happens in ``appliance.options`` for the form and
the REST API alike. Conversion errors name the field too.

Presets (``BatchSpawner.presets``, checked by :func:`check_presets` when the hub starts) are cards
at the top of the form. The chosen card's options are the base of the request; a field counts only
where its submitted value differs from the value the page showed (the hidden ``shown`` snapshot),
so a preset works without JavaScript (fields left as shown) and with it (picking a card fills the
fields and takes a new snapshot). A preset names option values; the fields it does not name take
the validator's defaults, except ``env``: that stays the user's own unless the preset names it.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import MISSING, fields
from typing import Any, Iterable, Optional

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader

from ..constraint_schema import SCHEMA as CONSTRAINT_SCHEMA
from ..options import SLURM_ONLY_FIELDS, Bounds, OptionsError, UserOptions, validate_options
from .form_limits import field_limits, gpu_places

#: the package's own templates; admins' ``c.JupyterHub.template_paths`` are searched first
PACKAGE_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
TEMPLATE = "spawn_form.html"
BACKEND_LABELS = {"htcondor": "HTCondor (high-throughput pool)", "slurm": "SLURM (HPC cluster)"}
SHORT_BACKEND = {"htcondor": "HTCondor", "slurm": "SLURM"}
#: The form's fields, in page order; their names are the user_options keys.
FIELDS = ("backend", "interface", "cpus", "memory_gb", "gpus", "runtime_hours", *SLURM_ONLY_FIELDS,
          "env")


def _number(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


#: What the form shows for an option the request leaves out (the validator's defaults).
DEFAULT_VALUES = {f.name: "" if f.default in (None, MISSING) else _number(f.default)
                  for f in fields(UserOptions) if f.name in FIELDS and f.name != "backend"}
PRESET_KEYS = {"name", "description", "options"}


class PresetError(ValueError):
    """A configured preset is unusable; the message names the preset and the field."""


def form_values(options: Optional[dict], bounds: Bounds) -> dict[str, str]:
    """user_options (JSON shape) -> the strings the form's fields show. Missing options show
    their defaults; ``env`` becomes NAME=value lines."""
    options = options or {}
    values = dict(DEFAULT_VALUES, backend=bounds.default_backend or bounds.backends[0])
    for key in FIELDS:
        v = options.get(key)
        if v is None:
            continue
        if key == "env":
            values["env"] = "\n".join(f"{k}={val}" for k, val in dict(v).items())
        else:
            values[key] = _number(v)
    return values


def summary(options: dict) -> str:
    """A one-line description of (valid) options, e.g. "HTCondor, 1 CPU, 2 GiB, JupyterLab".
    Environment variables appear by name only (their values may be secrets)."""
    b = options.get("backend", "")
    cpus = int(options.get("cpus", 1))
    parts = [SHORT_BACKEND.get(b, b), f"{cpus} CPU{'' if cpus == 1 else 's'}",
             f"{_number(float(options.get('memory_gb', 2.0)))} GiB"]
    if options.get("gpus"):
        parts.append(f"{options['gpus']} GPU{'' if options['gpus'] == 1 else 's'}")
    if options.get("runtime_hours"):
        parts.append(f"{_number(float(options['runtime_hours']))} h")
    for key in SLURM_ONLY_FIELDS:
        if options.get(key):
            parts.append(f"{key} {options[key]}")
    parts.append("Classic Notebook" if options.get("interface") == "notebook" else "JupyterLab")
    if options.get("env"):
        parts.append("env " + " ".join(sorted(options["env"])))
    return ", ".join(parts)


def check_presets(presets: Iterable[Any], bounds: Bounds) -> list[dict]:
    """The admin's presets, each validated like a user's request (``appliance.options``);
    PresetError naming the preset and the field otherwise. Returns them as plain dicts."""
    out: list[dict] = []
    seen: set[str] = set()
    for i, p in enumerate(presets or ()):
        where = f"presets[{i}]"
        if not isinstance(p, dict):
            raise PresetError(f"{where}: must be a dict with name, description and options")
        name = p.get("name")
        if not isinstance(name, str) or not name.strip():
            raise PresetError(f"{where}: name must be a non-empty string")
        where = f"preset {name!r}"
        extra = sorted(set(p) - PRESET_KEYS)
        if extra:
            raise PresetError(f"{where}: {extra[0]!r} is not a preset key "
                              f"(name, description, options)")
        if name in seen:
            raise PresetError(f"{where}: the name is used twice")
        seen.add(name)
        description = p.get("description", "")
        if not isinstance(description, str):
            raise PresetError(f"{where}: description must be a string")
        options = p.get("options")
        if not isinstance(options, dict) or not options:
            raise PresetError(f"{where}: options must be a non-empty dict of option values")
        try:
            validate_options(options, bounds)
        except OptionsError as e:
            raise PresetError(f"{where}: {e.field}: {e.message}") from None
        out.append({"name": name, "description": description, "options": dict(options)})
    return out


def _names(items: Iterable[Any]) -> list[str]:
    """Names of partitions/reservations, given as names or as dicts with a "name"."""
    return [item["name"] if isinstance(item, dict) else item for item in items or ()]


def matching_preset(options: dict, presets: list[dict], bounds: Bounds) -> Optional[str]:
    """The name of the first preset asking for the same server as ``options`` (None: none);
    ``env`` counts only for a preset that names it."""
    try:
        mine = validate_options(options, bounds).__dict__
    except OptionsError:
        return None
    for p in presets:
        theirs = validate_options(p["options"], bounds).__dict__
        keys = set(mine) - (set() if "env" in p["options"] else {"env"})
        if all(mine[k] == theirs[k] for k in keys):
            return p["name"]
    return None


def _offered(preset: dict, slurm: Optional[dict]) -> bool:
    """False for a SLURM preset naming a partition or reservation this user is not offered
    (when the lists are known)."""
    opts = preset["options"]
    if opts.get("backend") != "slurm" or slurm is None or slurm.get("error"):
        return True
    return all(not opts.get(key) or opts[key] in slurm[key + "s"]
               for key in ("partition", "reservation"))


def _card_values(options: dict, bounds: Bounds) -> dict[str, str]:
    """What picking a preset puts in the fields (env only when the preset names it)."""
    values = form_values(options, bounds)
    if "env" not in options:
        del values["env"]
    return values


def form_context(bounds: Bounds, slurm: Optional[dict] = None, presets: Iterable[dict] = (),
                 values: Optional[dict] = None, chosen: Optional[str] = None,
                 errors: Optional[dict] = None, last: Optional[dict] = None,
                 limits: Optional[dict] = None) -> dict[str, Any]:
    """The template's data: the admin's bounds and, when SLURM is enabled, what this user may use
    there (``Scheduler.describe_resources``, or ``{"error": message}`` when it failed).

    ``presets`` are the checked presets (:func:`check_presets`); ``values`` the strings the fields
    show (default: :func:`form_values` of nothing); ``chosen`` the checked preset's name ("": the
    custom card; None: the first preset); ``errors`` {field: message} shown next to the field;
    ``last`` the user's last accepted options (their summary is shown on the custom card);
    ``limits`` the GPU and runtime limits per place (``form_limits.field_limits``; default: from
    the bounds and ``slurm``)."""
    backends = list(bounds.backends)
    limits = limits if limits is not None else field_limits(bounds, None, slurm)
    defaults = form_values(None, bounds)
    values = dict(defaults, **(values or {}))
    errors = dict(errors or {})
    context: dict[str, Any] = {
        "backends": [{"name": name, "label": BACKEND_LABELS.get(name, name),
                      "checked": name == values["backend"]} for name in backends],
        "max_cpus": bounds.max_cpus,
        "max_memory_gb": f"{bounds.max_memory_gb:g}",
        # without JavaScript the fields allow the most any place has (the server checks the place)
        "max_gpus": limits["overall"]["gpus"],
        "max_runtime_hours": f"{limits['overall']['runtime_hours']:g}",
        "limits": limits,
        "gpu_places": gpu_places(limits),
        "slurm": None,
        "values": values,
        "errors": errors,
    }
    if "slurm" in backends:
        slurm = slurm or {}
        features = list(slurm.get("features") or ())
        context["slurm"] = {
            "partitions": _names(slurm.get("partitions")),
            "reservations": _names(slurm.get("reservations")),
            "reservation_ends": [r for r in slurm.get("reservations") or ()
                                 if isinstance(r, dict) and r.get("remaining_hours") is not None],
            "features": features,
            "feature_example": "&".join(features[:2]) or "epyc",
            "error": slurm.get("error"),
            "constraint_schema": CONSTRAINT_SCHEMA,
        }
    cards = [p for p in presets if _offered(p, context["slurm"])]
    if chosen is None:
        chosen = cards[0]["name"] if cards else ""
    if chosen not in {p["name"] for p in cards}:
        chosen = ""
    context["presets"] = [{
        "id": f"preset-{n}", "name": p["name"], "description": p["description"],
        "summary": summary(validate_options(p["options"], bounds).__dict__),
        "fill": _card_values(p["options"], bounds), "checked": p["name"] == chosen,
    } for n, p in enumerate(cards, 1)]
    context["custom_checked"] = chosen == ""
    context["last_summary"] = summary(last) if last else ""
    # the fields are open to see when they decide (no preset chosen) or one of them is wrong
    context["advanced_open"] = chosen == "" or bool(set(errors) & set(FIELDS))
    # with JavaScript, a preset chosen on a page showing only defaults fills the fields at once
    context["fill_on_load"] = bool(chosen) and values == defaults
    return context


@functools.lru_cache(maxsize=16)
def _environment(template_paths: tuple[str, ...]) -> Environment:
    loader = ChoiceLoader([
        FileSystemLoader(list(template_paths)),
        # lets an override extend the shipped form: {% extends "appliance/spawn_form.html" %}
        PrefixLoader({"appliance": FileSystemLoader(PACKAGE_TEMPLATES)}),
        FileSystemLoader(PACKAGE_TEMPLATES),
    ])
    env = Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["utc"] = _utc
    return env


def _utc(ts: float) -> str:
    """A time stamp for the page: "2026-12-04 11:40 UTC"."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def render_form(context: dict[str, Any], template_paths: Iterable[str] = ()) -> str:
    """The form HTML: ``spawn_form.html`` from the first of ``template_paths`` (the hub's
    ``c.JupyterHub.template_paths``) that has one, else the package's."""
    env = _environment(tuple(template_paths))
    return env.get_template(TEMPLATE).render(**context)


def _raw(formdata: dict, key: str) -> str:
    v = formdata.get(key, [""])
    if isinstance(v, list):
        v = v[0] if v else ""
    return str(v or "")


def _one(formdata: dict, key: str) -> str:
    return _raw(formdata, key).strip()


def _field(formdata: dict, key: str) -> str:
    """A field's submitted value as compared with the page's snapshot (browsers send CRLF)."""
    v = _raw(formdata, key).replace("\r\n", "\n")
    return v if key == "env" else v.strip()


def _shown(formdata: dict) -> dict[str, str]:
    try:
        shown = json.loads(_raw(formdata, "shown") or "{}")
    except ValueError:
        raise OptionsError("shown", "is not the form's JSON snapshot") from None
    if not isinstance(shown, dict):
        raise OptionsError("shown", "is not the form's JSON snapshot")
    return {str(k): str(v).replace("\r\n", "\n") for k, v in shown.items()}


def with_preset(formdata: dict, presets: Iterable[dict], bounds: Bounds) -> dict:
    """Form data with the chosen preset (field ``preset``) applied: the preset's values (the
    defaults for what it does not name; ``env`` stays the user's unless it names one), then every
    field whose submitted value differs from the ``shown`` snapshot (the user changed it)."""
    name = _one(formdata, "preset")
    rest = {k: v for k, v in formdata.items() if k not in ("preset", "shown")}
    if not name:
        return rest
    preset = next((p for p in presets if p["name"] == name), None)
    if preset is None:
        raise OptionsError("preset", f"{name!r} is not one of the presets")
    shown = _shown(formdata)
    base = form_values(preset["options"], bounds)
    out: dict[str, list[str]] = {}
    for key in FIELDS:
        if key in formdata and (_field(formdata, key) != shown.get(key)
                                or (key == "env" and "env" not in preset["options"])):
            out[key] = [_raw(formdata, key)]
        else:
            out[key] = [base[key]]
    out.update({k: v for k, v in rest.items() if k not in FIELDS})  # unknown keys: refused below
    return out


def options_from_form(formdata: dict, presets: Iterable[dict] = (),
                      bounds: Optional[Bounds] = None) -> dict:
    """Form strings -> user_options JSON shape. Empty fields are left out (defaults apply).
    A chosen preset is applied first (:func:`with_preset`)."""
    if "preset" in formdata or "shown" in formdata:
        formdata = with_preset(formdata, presets, bounds or Bounds())
    known = set(FIELDS)
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
