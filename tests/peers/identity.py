"""A small identity server speaking the Identity Service API v2 lookup flow, for tests.

A stand-in for a real identity server (running matrix-sydent here has not been tried yet): it implements
what the spec says the bridge relies on — account/register with an OpenID token, terms to accept,
hash_details, and hashed lookups, with a pepper that can be rotated (M_INVALID_PEPPER).

    python -m tests.peers.identity --port N --bind +15005550006=@bob:localhost [--pepper P] [--terms]

Prints "ready" when listening on 127.0.0.1, then one JSON line per request it handled.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import sys
from typing import Any

from aiohttp import web


def lookup_hash(address: str, medium: str, pepper: str) -> str:
    digest = hashlib.sha256(f"{address} {medium} {pepper}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def app(bindings: dict[str, str], pepper: str, terms: bool) -> web.Application:
    state: dict[str, Any] = {"pepper": pepper, "tokens": set(), "accepted": set()}

    def log(event: str, **data: Any) -> None:
        print(json.dumps({"event": event, **data}), flush=True)

    def authorised(request: web.Request) -> str | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return token if token in state["tokens"] else None

    async def register(request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict) or not body.get("access_token") or not body.get("matrix_server_name"):
            return web.json_response({"errcode": "M_UNAUTHORIZED", "error": "bad OpenID token"}, status=401)
        token = secrets.token_urlsafe(16)
        state["tokens"].add(token)
        log("register", server=body["matrix_server_name"])
        return web.json_response({"token": token})

    async def get_terms(request: web.Request) -> web.Response:
        policies = {
            "privacy": {"version": "1.0", "en": {"name": "Privacy", "url": "https://is.test/privacy"}}
        }
        return web.json_response({"policies": policies if terms else {}})

    async def post_terms(request: web.Request) -> web.Response:
        token = authorised(request)
        if token is None:
            return web.json_response({"errcode": "M_UNAUTHORIZED"}, status=401)
        state["accepted"].add(token)
        log("terms", accepted=(await request.json()).get("user_accepts"))
        return web.json_response({})

    def usable(request: web.Request) -> web.Response | None:
        token = authorised(request)
        if token is None:
            return web.json_response({"errcode": "M_UNAUTHORIZED"}, status=401)
        if terms and token not in state["accepted"]:
            return web.json_response({"errcode": "M_TERMS_NOT_SIGNED"}, status=403)
        return None

    async def hash_details(request: web.Request) -> web.Response:
        if (refusal := usable(request)) is not None:
            return refusal
        return web.json_response({"algorithms": ["none", "sha256"], "lookup_pepper": state["pepper"]})

    async def lookup(request: web.Request) -> web.Response:
        if (refusal := usable(request)) is not None:
            return refusal
        body = await request.json()
        if body.get("pepper") != state["pepper"]:
            return web.json_response({"errcode": "M_INVALID_PEPPER", "error": "pepper changed"}, status=400)
        table = {lookup_hash(n.lstrip("+"), "msisdn", state["pepper"]): mxid for n, mxid in bindings.items()}
        found = {a: table[a] for a in body.get("addresses", []) if a in table}
        log("lookup", found=len(found))
        return web.json_response({"mappings": found})

    async def rotate(request: web.Request) -> web.Response:
        state["pepper"] = secrets.token_urlsafe(8)
        return web.json_response({})

    application = web.Application()
    application.router.add_post("/_matrix/identity/v2/account/register", register)
    application.router.add_get("/_matrix/identity/v2/terms", get_terms)
    application.router.add_post("/_matrix/identity/v2/terms", post_terms)
    application.router.add_get("/_matrix/identity/v2/hash_details", hash_details)
    application.router.add_post("/_matrix/identity/v2/lookup", lookup)
    application.router.add_post("/_test/rotate_pepper", rotate)
    return application


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bind", action="append", default=[], help="+number=@user:server")
    ap.add_argument("--pepper", default="matrixrocks")
    ap.add_argument("--terms", action="store_true")
    args = ap.parse_args()
    bindings = dict(b.split("=", 1) for b in args.bind)
    print("ready", flush=True)
    web.run_app(app(bindings, args.pepper, args.terms), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    sys.exit(main())
