"""The spawn page form, rendered from the same bounds the validator uses.

``options_from_form`` only converts the form's strings into the JSON shape of ``user_options``
(ints, floats, the env mapping); all validation happens in ``appliance.options`` for the form and
the REST API alike. Conversion errors name the field too.
"""

from __future__ import annotations

import html
from typing import Any

from ..options import OptionsError


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


async def render_form(spawner) -> str:
    from .spawner import get_scheduler

    b = spawner.bounds()
    backends = list(b.backends)
    slurm: dict[str, Any] = {}
    if "slurm" in backends:
        try:
            slurm = await get_scheduler("slurm", spawner).describe_resources(spawner.user.name)
        except Exception as e:  # the form must still render; the message tells why
            spawner.log.warning("Slurm resources unavailable: %s", e)
            slurm = {"error": str(e)}
    default_backend = b.default_backend or backends[0]
    rows = []
    rows.append('<div class="form-group"><label>Batch system</label><div>')
    labels = {"htcondor": "HTCondor (high-throughput pool)", "slurm": "SLURM (HPC cluster)"}
    for name in backends:
        checked = " checked" if name == default_backend else ""
        rows.append(
            f'<label class="radio-inline"><input type="radio" name="backend" value="{_esc(name)}"'
            f' id="backend-{_esc(name)}"{checked}> {_esc(labels.get(name, name))}</label> '
        )
    rows.append("</div></div>")
    rows.append(
        '<div class="form-group"><label for="interface">Interface</label>'
        '<select class="form-control" name="interface" id="interface">'
        '<option value="lab" selected>JupyterLab</option>'
        '<option value="notebook">Classic Notebook</option></select></div>'
    )
    rows.append(
        f'<div class="form-group"><label for="cpus">CPU cores (1-{b.max_cpus})</label>'
        f'<input class="form-control" type="number" name="cpus" id="cpus" min="1" max="{b.max_cpus}" value="1"></div>'
    )
    rows.append(
        f'<div class="form-group"><label for="memory_gb">Memory in GiB (up to {b.max_memory_gb:g})</label>'
        f'<input class="form-control" type="number" name="memory_gb" id="memory_gb" min="0.5" step="0.5"'
        f' max="{b.max_memory_gb:g}" value="2"></div>'
    )
    if b.max_gpus > 0:
        rows.append(
            f'<div class="form-group"><label for="gpus">GPUs (0-{b.max_gpus})</label>'
            f'<input class="form-control" type="number" name="gpus" id="gpus" min="0" max="{b.max_gpus}" value="0"></div>'
        )
    rows.append(
        f'<div class="form-group"><label for="runtime_hours">Runtime in hours (empty: default; up to '
        f'{b.max_runtime_hours:g})</label><input class="form-control" type="number" name="runtime_hours"'
        f' id="runtime_hours" min="0.25" step="0.25" max="{b.max_runtime_hours:g}"></div>'
    )
    if "slurm" in backends:
        parts = slurm.get("partitions", []) or []
        resv = slurm.get("reservations", []) or []
        feats = slurm.get("features", []) or []
        rows.append('<fieldset id="slurm-options"><legend>SLURM only</legend>')
        if slurm.get("error"):
            rows.append(f'<p class="text-warning">SLURM information unavailable: {_esc(slurm["error"])}</p>')
        rows.append('<div class="form-group"><label for="partition">Partition</label>'
                    '<select class="form-control" name="partition" id="partition">'
                    '<option value="">(default)</option>')
        for p in parts:
            pname = p["name"] if isinstance(p, dict) else p
            rows.append(f'<option value="{_esc(pname)}">{_esc(pname)}</option>')
        rows.append("</select></div>")
        rows.append('<div class="form-group"><label for="reservation">Reservation</label>'
                    '<select class="form-control" name="reservation" id="reservation">'
                    '<option value="">(none)</option>')
        for r in resv:
            rname = r["name"] if isinstance(r, dict) else r
            rows.append(f'<option value="{_esc(rname)}">{_esc(rname)}</option>')
        rows.append("</select></div>")
        rows.append(
            '<div class="form-group"><label for="constraint">Node features (e.g. '
            f'<code>{_esc("&".join(feats[:2]) or "epyc")}</code>; known: {_esc(", ".join(feats))})</label>'
            '<input class="form-control" type="text" name="constraint" id="constraint" maxlength="256"></div>'
        )
        rows.append("</fieldset>")
    rows.append(
        '<div class="form-group"><label for="env">Environment variables (one NAME=value per line)</label>'
        '<textarea class="form-control" name="env" id="env" rows="3"></textarea></div>'
    )
    # Show the SLURM-only fields only while SLURM is picked (a disabled fieldset is not submitted).
    rows.append(
        "<script>(function(){function sync(){var s=document.getElementById('backend-slurm');"
        "var f=document.getElementById('slurm-options');if(!f)return;var on=!!(s&&s.checked);"
        "f.disabled=!on;f.style.display=on?'':'none';}"
        "document.querySelectorAll('input[name=backend]').forEach(function(r){"
        "r.addEventListener('change',sync);});sync();})();</script>"
    )
    return "\n".join(rows)


def _one(formdata: dict, key: str) -> str:
    v = formdata.get(key, [""])
    if isinstance(v, list):
        v = v[0] if v else ""
    return str(v).strip()


def options_from_form(formdata: dict) -> dict:
    """Form strings -> user_options JSON shape. Empty fields are left out (defaults apply)."""
    known = {"backend", "interface", "cpus", "memory_gb", "gpus", "runtime_hours", "env",
             "partition", "reservation", "constraint"}
    unknown = sorted(set(formdata) - known - {"_xsrf"})
    if unknown:
        raise OptionsError(unknown[0], "is not a known option")
    out: dict[str, Any] = {}
    for key in ("backend", "interface", "partition", "reservation", "constraint"):
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
        for key in ("partition", "reservation", "constraint"):
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
