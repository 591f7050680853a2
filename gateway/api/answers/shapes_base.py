"""What every answer's shape builds on: the Shape base, and USD, time and count fields."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Usd = Annotated[
    str,
    Field(
        pattern=r"^-?[0-9]+\.[0-9]{2,9}$",
        description="US dollars as an exact decimal string",
        examples=["10.00", "0.00001035"],
    ),
]
Time = Annotated[str, Field(json_schema_extra={"format": "date-time"}, description="RFC 3339, UTC")]
Count = Annotated[int, Field(ge=0)]
Price = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$")]
LimitReset = Literal["daily", "weekly", "monthly"] | None


class Shape(BaseModel):
    """An answer's shape: its fields, in order; nothing else."""

    model_config = ConfigDict(frozen=True)

    def answer(self) -> dict[str, Any]:
        """As the JSON answer has it: fields left unset (optional ones) are left out."""
        return self.model_dump(exclude_unset=True)
