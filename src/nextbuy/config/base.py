"""What every params.yaml section model shares: strict types, bounds checked, no infinite or
NaN value, and date/time params as naive UTC text."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# A float whose finiteness a validator of its own checks (with a message naming the key).
_AnyFloat = Annotated[float, Field(allow_inf_nan=True)]


class Section(BaseModel):
    # strict: YAML's types are taken as written (``true`` is no epoch count, ``"0.3"`` no
    # precision); an int is still a float. No infinite or NaN value is a setting.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _number_written_as_text(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML reads ``1e6`` (no dot) as text: say how to write the number instead of
        refusing it as a string."""
        field = cls.model_fields.get(info.field_name or "")
        if not isinstance(value, str) or field is None or field.annotation not in (int, float):
            return value
        try:
            number = float(value)
        except ValueError:
            return value  # not a number at all: the type check names it
        written = str(int(number)) if field.annotation is int and number.is_integer() else repr(number)
        why = (
            "YAML reads an exponent without a dot (1e6) as text"
            if "e" in value.lower()
            else "quoted, it is text"
        )
        raise ValueError(f"{value!r} is not a number ({why}): write it as {written}")


# Words pandas parses relative to the clock: a run would depend on when it ran.
_CLOCK_WORDS = {"now", "today", "yesterday", "tomorrow"}


def _as_timestamp_text(value: Any, key: str) -> Any:
    """A date/time param as ISO-ish text pandas parses to a naive (UTC) timestamp.

    YAML turns an unquoted 2026-05-10 into a date: accepted and written back as text.
    Garbage, empty text, NaT, clock words and time zones are refused here, so the
    error names the key instead of surfacing as a traceback inside a stage.
    """
    if isinstance(value, (dt.date, dt.datetime)):
        value = value.isoformat()
    if not isinstance(value, str):
        return value  # the str annotation refuses it, naming the type
    import pandas as pd

    hint = "give a date or date-time such as '2026-05-10' or '2026-05-10T06:00:00'"
    if value.strip().lower() in _CLOCK_WORDS:
        raise ValueError(f"{key}={value!r} depends on when the run happens; {hint}")
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as err:
        raise ValueError(f"{key}={value!r} is not a date ({err}); {hint}") from None
    if stamp is pd.NaT:
        raise ValueError(f"{key}={value!r} is not a date (empty or NaT); {hint}")
    if stamp.tzinfo is not None:
        raise ValueError(
            f"{key}={value!r} has a time zone; the pipeline's times are naive UTC: {hint} (in UTC)"
        )
    return value
