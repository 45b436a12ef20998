"""The application service registration file the homeserver loads (Matrix AS API, "Registration")."""

from __future__ import annotations

import re
from typing import Any

from .config import Config

PROTOCOLS = ("m.protocol.pstn", "im.vector.protocol.pstn")
SIP_PROTOCOLS = ("im.vector.protocol.sip_native", "im.vector.protocol.sip_virtual")


def build_registration(config: Config) -> dict[str, Any]:
    """Registration for ``config``: exclusive namespace for virtual users and the bot, both PSTN protocols.

    ``rate_limited: false`` because the bridge speaks for many phone parties at once; ``protocols`` makes
    the homeserver route MSC2845 third-party lookups to us.
    """
    domain = re.escape(config["homeserver.domain"])
    prefix = re.escape(config["bridge.user_prefix"])
    bot = re.escape(config["appservice.bot_username"])
    return {
        "id": config["appservice.id"],
        "url": config["appservice.address"],
        "as_token": config["appservice.as_token"],
        "hs_token": config["appservice.hs_token"],
        "sender_localpart": config["appservice.bot_username"],
        "rate_limited": False,
        "namespaces": {
            "users": [
                {"regex": f"@{prefix}.+:{domain}", "exclusive": True},
                {"regex": f"@{bot}:{domain}", "exclusive": True},
            ],
            "aliases": [],
            "rooms": [],
        },
        "protocols": list(
            PROTOCOLS + (SIP_PROTOCOLS if config["bridge.advertise_sip_native_virtual"] else ())
        ),
        "receive_ephemeral": False,
    }
