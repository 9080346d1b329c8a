"""One property read as the service reads it, or refused with the service's 400 (contract sections 6 and 8).

Values are read as the service reads them: its OData (JSON Light, DataServiceVersion 3.0) reader converts a JSON
string to the property's type with .NET's Convert.ChangeType (integers: optional sign and surrounding white space;
booleans: true/false in any case) and durations with XmlConvert.ToTimeSpan (xs:duration, where a year is 365 days
and a month 30). The Azure CLI on azure-batch 15 sends its numeric flags as strings, e.g. {"targetDedicatedNodes":
"1"}. A converted value is written back into the body, so it is stored, used and echoed as the number, boolean or
canonical duration the service would hold. A JSON number is never read as a string, nor a fraction as a whole.
"""

from __future__ import annotations

import re
from datetime import timedelta

from batch_emulator import wire
from batch_emulator.errors import BatchError, invalid, missing

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_WHOLE = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+[ \t\n\v\f\r]*")  # Int32.Parse, NumberStyles.Integer
_XS_DURATION = re.compile(
    r"(?P<sign>-)?P(?:(?P<years>[0-9]+)Y)?(?:(?P<months>[0-9]+)M)?(?:(?P<days>[0-9]+)D)?"
    r"(?:T(?:(?P<hours>[0-9]+)H)?(?:(?P<minutes>[0-9]+)M)?(?:(?P<seconds>[0-9]+(?:\.[0-9]+)?)S)?)?"
)  # XmlConvert.ToTimeSpan


def unsupported(prop: str) -> BatchError:
    return BatchError(
        400,
        "UnsupportedProperty",
        f"The property {prop} is not supported by the Azure Batch emulator.",
        PropertyName=prop,
    )


def renamed(prop: str, now: str, version: str) -> BatchError:
    return BatchError(
        400,
        "UnsupportedProperty",
        f"The property {prop} is not supported in this api-version: it is called {now} from {version} on.",
        PropertyName=prop,
    )


def require(body: dict, prop: str, path: str = "") -> object:
    value = body.get(prop)
    if value is None or value == "":
        raise missing(path + prop)
    return value


def is_id(value: object) -> bool:
    """1 to 64 letters, digits, hyphens and underscores: what the service takes as an id."""
    return isinstance(value, str) and bool(_ID.match(value))


def ident(body: dict, prop: str = "id", path: str = "") -> str:
    value = require(body, prop, path)
    if not is_id(value):
        raise invalid(path + prop, value, "An id has 1 to 64 characters: letters, digits, hyphens and underscores.")
    return value


def integer(body: dict, prop: str, low: int, high: int, default: int, path: str = "") -> int:
    value = body.get(prop, default)
    if value is None:
        return default
    number = value
    if isinstance(value, str) and _WHOLE.fullmatch(value):
        number = body[prop] = int(value)
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        raise invalid(path + prop, value, f"It must be a whole number from {low} to {high}.")
    return number


def boolean(body: dict, prop: str, default: bool, path: str = "") -> bool:
    value = body.get(prop, default)
    if isinstance(value, str) and value.strip(" \t\n\v\f\r\0").lower() in ("true", "false"):
        value = body[prop] = value.strip(" \t\n\v\f\r\0").lower() == "true"
    if not isinstance(value, bool):
        raise invalid(path + prop, value, "It must be true or false.")
    return value


def choice(body: dict, prop: str, allowed: set[str], default: str, path: str = "") -> str:
    value = body.get(prop, default)
    if not isinstance(value, str) or value.lower() not in allowed:
        raise invalid(path + prop, value, f"It must be one of {sorted(allowed)}.")
    return value.lower()


def duration(body: dict, prop: str, path: str = "") -> timedelta:
    value = body.get(prop)
    if value is None:
        return wire.INFINITE
    try:
        parsed = wire.parse_duration(value)
    except ValueError:
        parsed = _xs_duration(value)
        if parsed is None:
            raise invalid(path + prop, value, "It must be an ISO 8601 duration such as PT1H.") from None
        if parsed > timedelta(0):
            body[prop] = canonical(parsed)
    if parsed <= timedelta(0):
        raise invalid(path + prop, value, "It must be positive.")
    return parsed


def _xs_duration(value: object) -> timedelta | None:
    """What XmlConvert.ToTimeSpan also reads: white space around, a sign, years (365 days) and months (30)."""
    m = _XS_DURATION.fullmatch(value.strip(" \t\n\r")) if isinstance(value, str) else None
    if not m or not any(v for k, v in m.groupdict().items() if k != "sign") or m.group(0).endswith("T"):
        return None
    n = {k: float(v or 0) for k, v in m.groupdict().items() if k != "sign"}
    try:
        parsed = timedelta(
            days=n["years"] * 365 + n["months"] * 30 + n["days"],
            hours=n["hours"],
            minutes=n["minutes"],
            seconds=n["seconds"],
        )
    except OverflowError:
        return None
    return -parsed if m.group("sign") else parsed


def canonical(value: timedelta) -> str:
    """The duration as the service writes it back (XmlConvert.ToString): P1279DT12H30M5S."""
    days, rest = value.days, value.seconds
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if seconds or value.microseconds:
        clock += f"{seconds}" + (f".{value.microseconds:06d}".rstrip("0") if value.microseconds else "") + "S"
    text = "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")
    return text if text != "P" else "PT0S"


def listed(body: dict, prop: str, path: str = "") -> list:
    value = body.get(prop) or []
    if not isinstance(value, list):
        raise invalid(path + prop, value, "It must be a list.")
    return value


def refuse(body: dict, props: tuple[str, ...], path: str = "") -> None:
    for prop in props:
        if body.get(prop) not in (None, [], {}, False):
            raise unsupported(path + prop)


def environment(body: dict, prop: str, path: str = "") -> dict[str, str]:
    env = {}
    for i, item in enumerate(listed(body, prop, path)):
        where = f"{path}{prop}[{i}]."
        name = require(item, "name", where)
        if not isinstance(name, str) or "=" in name or "\0" in name:
            raise invalid(where + "name", name)
        env[name] = str(item.get("value") or "")
    return env
