"""Third-party network lookups for telephone numbers (MSC2845) and Element's SIP native/virtual mapping.

Pure functions from query parameters to (status, JSON body): the HTTP edge in ``appservice.py`` only
parses the request and serialises the answer, so the rules here are tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .numbers import NotDialable
from .puppet import NotAVirtualUser, VirtualUserNamespace

PSTN_PROTOCOLS = ("m.protocol.pstn", "im.vector.protocol.pstn")
SIP_NATIVE = "im.vector.protocol.sip_native"
SIP_VIRTUAL = "im.vector.protocol.sip_virtual"
PHONE_FIELD = "m.id.phone"

Answer = tuple[int, Any]


def error(status: int, errcode: str, message: str) -> Answer:
    return status, {"errcode": errcode, "error": message}


@dataclass(frozen=True)
class Lookup:
    """What the bridge answers to MSC2845 lookups, for one namespace."""

    namespace: VirtualUserNamespace
    icon: str = ""

    def protocol(self, protocol: str) -> Answer:
        """``GET /thirdparty/protocol/{protocol}``: metadata. Synapse drops metadata without ``instances``."""
        if protocol in (SIP_NATIVE, SIP_VIRTUAL):
            return 200, {
                "user_fields": ["virtual_mxid" if protocol == SIP_NATIVE else "native_mxid"],
                "location_fields": [],
                "icon": self.icon,
                "field_types": {},
                "instances": [],
            }
        if protocol not in PSTN_PROTOCOLS:
            return error(404, "M_NOT_FOUND", f"unknown protocol {protocol}")
        return 200, {
            "user_fields": [PHONE_FIELD],
            "location_fields": [],
            "icon": self.icon,
            "field_types": {
                PHONE_FIELD: {"regexp": r"^\+?[0-9*#\s\-.()]+$", "placeholder": "+44 20 7946 0000"},
            },
            "instances": [
                {
                    "network_id": "pstn",
                    "desc": f"Telephone network via {self.namespace.gateway_host}",
                    "icon": self.icon,
                    "fields": {},
                }
            ],
        }

    def user(self, protocol: str, fields: Mapping[str, Sequence[str]]) -> Answer:
        """``GET /thirdparty/user/{protocol}?field=…``. Each field at most once (MSC2845)."""
        for name, values in fields.items():
            if len(values) != 1:
                return error(400, "M_INVALID_PARAM", f"field {name} must be given exactly once")
        if protocol in PSTN_PROTOCOLS:
            return self._pstn_user(protocol, fields)
        if protocol == SIP_NATIVE:
            return self._sip_mapping(protocol, fields, "virtual_mxid")
        if protocol == SIP_VIRTUAL:
            return self._sip_mapping(protocol, fields, "native_mxid")
        return error(404, "M_NOT_FOUND", f"unknown protocol {protocol}")

    def _pstn_user(self, protocol: str, fields: Mapping[str, Sequence[str]]) -> Answer:
        if PHONE_FIELD not in fields:
            return error(400, "M_MISSING_PARAM", f"{PHONE_FIELD} is required")
        dialled = fields[PHONE_FIELD][0]
        try:
            user_id = self.namespace.user_id(dialled)
        except NotDialable as e:
            return error(400, "M_INVALID_PARAM", str(e))
        # MSC2845: no canonicalisation — the answer echoes the number exactly as dialled.
        return 200, [{"userid": user_id, "protocol": protocol, "fields": {PHONE_FIELD: dialled}}]

    def _sip_mapping(self, protocol: str, fields: Mapping[str, Sequence[str]], field: str) -> Answer:
        """A virtual user is its own native user: Element then keeps calls in the DM that has it."""
        if field not in fields:
            return error(400, "M_MISSING_PARAM", f"{field} is required")
        user_id = fields[field][0]
        try:
            self.namespace.party(user_id)
        except NotAVirtualUser:
            return 200, []
        return 200, [{"userid": user_id, "protocol": protocol, "fields": {"lookup_success": True}}]

    def reverse(self, user_id: str | None) -> Answer:
        """``GET /thirdparty/user?userid=…``: which number a virtual user stands for."""
        if not user_id:
            return error(400, "M_MISSING_PARAM", "userid is required")
        try:
            party = self.namespace.party(user_id)
        except NotAVirtualUser:
            return error(404, "M_NOT_FOUND", "no phone party has that user ID")
        return 200, [
            {"userid": user_id, "protocol": PSTN_PROTOCOLS[0], "fields": {PHONE_FIELD: party.number}}
        ]
