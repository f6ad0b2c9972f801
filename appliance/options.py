"""User options: one schema, one validator, for the REST API and the spawn form.

A spawn request carries one JSON object (``user_options``). It is validated here, against bounds
the admin configures, before anything reaches a scheduler. The same pydantic model gives the JSON
schema shown in the API docs and drives the form (``appliance.hub.form``).

Contract (see docs/user-options.md)::

    backend        "htcondor" | "slurm"                  (required unless the admin sets a default)
    interface      "lab" | "notebook"                     default "lab"
    cpus           int, 1 .. max_cpus                     default 1
    memory_gb      number, >0 .. max_memory_gb            default 2
    gpus           int, 0 .. max_gpus                     default 0
    runtime_hours  number, >0 .. max_runtime_hours       default: backend/partition specific
    env            {NAME: value}                          names [A-Za-z_][A-Za-z0-9_]*, not reserved
    partition      slurm only; checked against what the user may use
    reservation    slurm only; likewise
    constraint     slurm only; node features joined by & | and parentheses

Errors are :class:`OptionsError` whose message starts with the offending field's name.
"""

from __future__ import annotations

import fnmatch
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from . import constraint as grammar
from .names import ENV_NAME_RE, SLURM_NAME_RE

DEFAULT_RESERVED_ENV = (
    "PATH", "LD_*", "PYTHON*", "JUPYTER*", "JUPYTERHUB_*", "KRB5*", "HOME", "USER", "LOGNAME",
    "SHELL", "_CONDOR_*", "SLURM_*", "BASH_ENV", "ENV", "IFS",
)
#: Options only the Slurm backend takes (refused for every other backend).
SLURM_ONLY_FIELDS = ("partition", "reservation", "constraint")
MAX_ENV_VARS = 64
MAX_ENV_NAME_LEN = 128
MAX_ENV_VALUE_LEN = 4096
#: All names and values of ``env`` together, in characters.
MAX_ENV_TOTAL = 16384
#: Unicode categories no value may hold: controls (Cc: newline, tab, ESC, ...), format characters
#: (Cf: zero-width and bidirectional overrides, which make a value look like another), line and
#: paragraph separators (Zl, Zp: line breaks to many readers) and surrogates (Cs: not encodable).
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def refused_character(value: str) -> Optional[str]:
    """A description of the first character of ``value`` in REFUSED_CATEGORIES, or None."""
    for i, c in enumerate(value):
        if unicodedata.category(c) in REFUSED_CATEGORIES:
            return f"U+{ord(c):04X} ({unicodedata.category(c)}) at position {i}"
    return None


class OptionsError(ValueError):
    """A user option was refused. ``field`` names it; ``str(err)`` is the user-facing message."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        self.message = message
        super().__init__(f"{field_name}: {message}")


@dataclass(frozen=True)
class Bounds:
    """What the admin allows; built from the spawner's traitlets."""

    backends: tuple[str, ...] = ("htcondor", "slurm")
    default_backend: Optional[str] = None
    max_cpus: int = 8
    max_memory_gb: float = 32.0
    max_gpus: int = 0
    max_runtime_hours: float = 168.0
    default_runtime_hours: float = 8.0
    reserved_env: tuple[str, ...] = DEFAULT_RESERVED_ENV


def _env_is_reserved(name: str, reserved: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in reserved)


def check_constraint(text: str) -> list[str]:
    """The features a constraint names (``appliance.constraint``); OptionsError if malformed."""
    try:
        return grammar.features(text)
    except grammar.ConstraintError as e:
        raise OptionsError("constraint", e.message) from None


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @field_validator("env", check_fields=False)
    @classmethod
    def _check_env(cls, env: dict[str, str]) -> dict[str, str]:
        if len(env) > MAX_ENV_VARS:
            raise ValueError(f"at most {MAX_ENV_VARS} variables")
        total = 0
        for name, value in env.items():
            if len(name) > MAX_ENV_NAME_LEN:
                raise ValueError(f"a name is longer than {MAX_ENV_NAME_LEN} characters")
            if not ENV_NAME_RE.fullmatch(name):
                raise ValueError(f"name {name!r} is not of the form [A-Za-z_][A-Za-z0-9_]*")
            if len(value) > MAX_ENV_VALUE_LEN:
                raise ValueError(f"value of {name} is longer than {MAX_ENV_VALUE_LEN} characters")
            bad = refused_character(value)
            if bad:
                raise ValueError(f"value of {name} contains a control, format or line separator "
                                 f"character: {bad}")
            total += len(name) + len(value)
            if total > MAX_ENV_TOTAL:
                raise ValueError(f"names and values together are longer than {MAX_ENV_TOTAL} "
                                 "characters")
        return env

    @field_validator("partition", "reservation", check_fields=False)
    @classmethod
    def _check_slurm_name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not SLURM_NAME_RE.match(v):
            raise ValueError("must be a Slurm name (letters, digits, '_', '.', '-')")
        return v

    @field_validator("constraint", check_fields=False)
    @classmethod
    def _check_constraint(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            if len(v) > 256:
                raise ValueError("is longer than 256 characters")
            try:
                grammar.parse(v)
            except grammar.ConstraintError as e:
                raise ValueError(e.message) from None
        return v


_MODEL_CACHE: dict[Bounds, type[BaseModel]] = {}


def options_model(bounds: Bounds) -> type[BaseModel]:
    """The pydantic model for these bounds (cached): constraints appear in its JSON schema."""
    model = _MODEL_CACHE.get(bounds)
    if model is not None:
        return model
    backend_t = Literal[tuple(bounds.backends)]  # type: ignore[valid-type]
    backend_default: Any = bounds.default_backend if bounds.default_backend else ...
    model = create_model(
        "UserOptions",
        __base__=_Base,
        backend=(backend_t, Field(backend_default, description="Which batch system runs the notebook")),
        interface=(Literal["lab", "notebook"], Field("lab", description="JupyterLab or classic Notebook UI")),
        cpus=(int, Field(1, ge=1, le=bounds.max_cpus, description="CPU cores")),
        memory_gb=(float, Field(2.0, gt=0, le=bounds.max_memory_gb, description="Memory in GiB")),
        gpus=(int, Field(0, ge=0, le=bounds.max_gpus, description="GPUs")),
        runtime_hours=(Optional[float], Field(None, gt=0, le=bounds.max_runtime_hours,
                                               description="Wall-clock limit in hours")),
        env=(dict[str, str], Field(default_factory=dict, description="Extra environment variables")),
        partition=(Optional[str], Field(None, description="Slurm partition (Slurm only)")),
        reservation=(Optional[str], Field(None, description="Slurm reservation (Slurm only)")),
        constraint=(Optional[str], Field(None, description="Slurm node features, e.g. 'epyc&avx512'")),
    )
    _MODEL_CACHE[bounds] = model
    return model


@dataclass(frozen=True)
class UserOptions:
    """Validated options; plain values only."""

    backend: str
    interface: str = "lab"
    cpus: int = 1
    memory_gb: float = 2.0
    gpus: int = 0
    runtime_hours: Optional[float] = None
    env: dict[str, str] = field(default_factory=dict)
    partition: Optional[str] = None
    reservation: Optional[str] = None
    constraint: Optional[str] = None


def _message(err: dict[str, Any]) -> tuple[str, str]:
    loc = [str(p) for p in err.get("loc", ())]
    name = loc[0] if loc else "options"
    typ = err.get("type", "")
    if typ == "extra_forbidden":
        return name, "is not a known option"
    if typ == "missing":
        return name, "is required"
    if typ == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return name, f"must be one of {allowed}"
    msg = err.get("msg", "is invalid")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if len(loc) > 1 and name == "env":
        msg = f"{msg} ({'.'.join(loc[1:])})" if typ != "value_error" else msg
    return name, msg


def validate_options(data: Any, bounds: Bounds) -> UserOptions:
    """Validate raw user options (a dict from JSON or the form) or raise OptionsError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise OptionsError("options", "must be a JSON object")
    # JSON numbers: accept an integer where a float is expected, never a string or bool.
    data = dict(data)
    for key in ("memory_gb", "runtime_hours"):
        v = data.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            data[key] = float(v)
    model = options_model(bounds)
    try:
        m = model.model_validate(data)
    except ValidationError as e:
        name, msg = _message(e.errors()[0])
        raise OptionsError(name, msg) from None
    opts = UserOptions(**m.model_dump())
    for name, value in opts.env.items():
        if _env_is_reserved(name, bounds.reserved_env):
            raise OptionsError("env", f"{name} is reserved by the administrator")
    if opts.backend != "slurm":
        for name in SLURM_ONLY_FIELDS:
            if getattr(opts, name) is not None:
                raise OptionsError(name, "is only for the slurm backend")
    return opts


def json_schema(bounds: Bounds) -> dict[str, Any]:
    """JSON schema of the options, for the API docs and the form."""
    return options_model(bounds).model_json_schema()
