"""`GATEWAY_*` environment variables that name no setting.

pydantic-settings ignores a prefixed variable that matches no field, so a typo
(`GATEWAY_REFUND_WINDOW_HOUR`, no S) would run with the default in silence. `serve` warns about
each, with the closest setting's name; `check-config` refuses them.

Kubernetes gives every pod variables for each service in its namespace ("service links"): a
service named `gateway` brings `GATEWAY_SERVICE_HOST`, `GATEWAY_SERVICE_PORT`,
`GATEWAY_PORT_8080_TCP...` and `GATEWAY_PORT=tcp://10.0.0.7:8080`. They are recognised and
ignored, `GATEWAY_PORT` included when its value is such an address (it would otherwise be read
as the port to listen on); `enableServiceLinks: false` in the pod spec, or another name for the
service, makes them go away.
"""

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PREFIX = "GATEWAY_"
_SERVICE_LINK_NAME = re.compile(
    r"^GATEWAY_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$"
)
_SERVICE_LINK_ADDRESS = re.compile(r"^(tcp|udp|sctp)://", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class StrayVariable:
    name: str
    closest: str | None  # the setting's variable it was probably meant to be
    service_link: bool  # set by Kubernetes for a service named `gateway`: ignored

    def describe(self) -> str:
        if self.service_link:
            return (
                f"{self.name} looks like a Kubernetes service link (a service named "
                "'gateway'); ignored (enableServiceLinks: false in the pod spec silences it)"
            )
        hint = f"; did you mean {self.closest}?" if self.closest else ""
        return f"{self.name} is not a setting{hint}"


def is_service_link(name: str, value: str) -> bool:
    name = name.upper()
    if name == "GATEWAY_PORT":
        return bool(_SERVICE_LINK_ADDRESS.match(value))
    return bool(_SERVICE_LINK_NAME.match(name))


def stray_variables(environ: Mapping[str, str], fields: Iterable[str]) -> list[StrayVariable]:
    """The prefixed variables that no setting reads, sorted by name."""
    known = {field.lower() for field in fields}
    stray = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(PREFIX):
            continue
        field = upper[len(PREFIX) :].lower()
        link = is_service_link(upper, environ[name])
        if field in known and not link:
            continue
        close = [] if link else difflib.get_close_matches(field, known, n=1, cutoff=0.75)
        stray.append(StrayVariable(name, PREFIX + close[0].upper() if close else None, link))
    return stray
