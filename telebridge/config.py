"""The bridge's configuration: example defaults, the operator's file, environment overrides, validation.

Operators know mautrix bridges, so the keys keep those names (``homeserver.address``,
``appservice.port``, ``bridge.permissions`` …). Every problem is reported as one :class:`ConfigError`
naming the key, so start-up can stop with one clear line instead of a traceback.
"""

from __future__ import annotations

import copy
import io
import ipaddress
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

ENV_PREFIX = "TELEBRIDGE_"
GENERATE = "generate"
LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/]+$")
REGION_RE = re.compile(r"^[A-Z]{2}$")
PERMISSION_LEVELS = ("block", "user", "admin")
#: Mappings whose keys are the operator's (user IDs, numbers), not configuration keys.
FREE_FORM = frozenset({"bridge.permissions", "sms.owned_numbers", "credit.modes"})
E164_RE = re.compile(r"^\+[1-9][0-9]{4,14}$")


SMSC_KEYS = frozenset(
    {"name", "host", "port", "system_id", "password", "system_type", "tls", "bind", "window", "tps"}
)


class ConfigError(Exception):
    """A missing or wrong configuration value; the message names the key."""


def example_config_text() -> str:
    return resources.files("telebridge").joinpath("example-config.yaml").read_text(encoding="utf-8")


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=4, sequence=4, offset=2)
    return yaml


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and path not in FREE_FORM:
            yield from _flatten(value, path + ".")
        else:
            yield path, value


def _get(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def env_name(path: str) -> str:
    """``appservice.bot_username`` → ``TELEBRIDGE_APPSERVICE__BOT_USERNAME``."""
    return ENV_PREFIX + "__".join(part.upper() for part in path.split("."))


@dataclass(frozen=True)
class Config:
    """Validated configuration. ``raw`` is the merged tree; typed accessors below are what code uses."""

    raw: dict[str, Any]
    path: Path | None

    # -- loading ----------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
        """Merge example defaults, the file at ``path`` (if given) and environment overrides, then validate."""
        environ = os.environ if environ is None else environ
        defaults = _yaml().load(example_config_text())
        merged: dict[str, Any] = _plain(defaults)
        if path is not None:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ConfigError(f"config file {path} does not exist") from None
            except OSError as e:
                raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from None
            try:
                loaded = _yaml().load(text)
            except YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f" at line {mark.line + 1}" if mark is not None else ""
                raise ConfigError(f"config file {path} is not valid YAML{where}") from None
            if loaded is None:
                loaded = {}
            if not isinstance(loaded, Mapping):
                raise ConfigError(f"config file {path} must be a mapping of sections")
            _merge(merged, _plain(loaded), "")
        known = {p for p, _ in _flatten(merged)}
        for key, value in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            path_parts = key[len(ENV_PREFIX) :].lower().split("__")
            dotted = ".".join(path_parts)
            if dotted not in known:
                raise ConfigError(f"environment variable {key} names no configuration key")
            if isinstance(_get(merged, dotted), str):
                parsed: Any = value  # strings stay strings: "+4420…" is a number to dial, not an integer
            else:
                try:
                    parsed = YAML(typ="safe").load(value) if value != "" else ""
                except YAMLError:
                    parsed = value
            _set(merged, dotted, parsed)
        config = cls(raw=merged, path=path)
        config.validate()
        return config

    # -- validation -------------------------------------------------------------------------------

    def validate(self) -> None:
        self._url("homeserver.address")
        self._str(
            "homeserver.domain",
            pattern=re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9a-fA-F:.]+\](:[0-9]{1,5})?$"),
        )
        self._bool("homeserver.verify_ssl")
        self._url("appservice.address")
        self._str("appservice.hostname")
        self._port("appservice.port")
        self._database("appservice.database")
        self._int("appservice.database_opts.min_size", minimum=0)
        self._int("appservice.database_opts.max_size", minimum=1)
        self._str("appservice.id", pattern=re.compile(r"^[A-Za-z0-9._\-]+$"))
        self._str("appservice.bot_username", pattern=LOCALPART_RE)
        self._str("appservice.bot_displayname", allow_empty=True)
        self._str("appservice.bot_avatar", allow_empty=True)
        self._str("appservice.as_token")
        self._str("appservice.hs_token")
        self._str("bridge.user_prefix", pattern=LOCALPART_RE)
        self._str("bridge.sip_gateway_host", pattern=re.compile(r"^[A-Za-z0-9.\-]+$|^\[[0-9a-fA-F:.]+\]$"))
        self._str("bridge.default_region", pattern=REGION_RE)
        self._int("bridge.max_number_length", minimum=1)
        self._str("bridge.virtual_user_avatar", allow_empty=True)
        self._str("bridge.protocol_icon", allow_empty=True)
        self._bool("bridge.advertise_sip_native_virtual")
        self._str("bridge.undeliverable_notice")
        self._permissions()
        self._sms()
        self._calls()
        self._credit()
        self._int("limits.sms_per_minute", minimum=0)
        self._int("limits.call_attempts_per_minute", minimum=0)
        self._int("limits.spend_per_day", minimum=0)
        for i, server in enumerate(self._list("identity.servers")):
            if not isinstance(server, str) or urlsplit(server).scheme not in ("http", "https"):
                raise ConfigError(f"identity.servers[{i}]: must be an http(s) URL, got {server!r}")
        self._bool("identity.prefer_real_users")
        self._bool("identity.accept_terms")
        self._int("identity.cache_ttl", minimum=0)
        timeout = self._value("identity.timeout")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 30:
            raise ConfigError(
                f"identity.timeout: must be a number of seconds, above 0 and at most 30, got {timeout!r}"
            )
        self._bool("metrics.enabled")
        self._str("metrics.hostname")
        self._port("metrics.port")
        level = self._str("logging.level").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"logging.level: must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        if self["appservice.bot_username"].startswith(self["bridge.user_prefix"]):
            raise ConfigError("appservice.bot_username: must not start with bridge.user_prefix")

    def _value(self, key: str) -> Any:
        try:
            value = _get(self.raw, key)
        except KeyError:
            raise ConfigError(f"{key}: missing") from None
        if value is None:
            raise ConfigError(f"{key}: missing")
        return value

    def _str(self, key: str, *, pattern: re.Pattern[str] | None = None, allow_empty: bool = False) -> str:
        value = self._value(key)
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {type(value).__name__}")
        if not value and not allow_empty:
            raise ConfigError(f"{key}: must not be empty")
        if value and pattern is not None and not pattern.match(value):
            raise ConfigError(f"{key}: {value!r} is not valid here")
        return value

    def _bool(self, key: str) -> bool:
        value = self._value(key)
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value

    def _int(self, key: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._value(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{key}: must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{key}: must be at most {maximum}, got {value}")
        return value

    def _port(self, key: str) -> int:
        return self._int(key, minimum=0, maximum=65535)

    def _url(self, key: str) -> str:
        value = self._str(key)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{key}: must be an http:// or https:// URL, got {value!r}")
        return value

    def _database(self, key: str) -> str:
        value = self._str(key)
        scheme = value.split(":", 1)[0]
        if scheme not in ("sqlite", "sqlite3", "postgres", "postgresql"):
            raise ConfigError(f"{key}: must start with sqlite: or postgres://, got scheme {scheme!r}")
        return value

    def _permissions(self) -> None:
        perms = self._value("bridge.permissions")
        if not isinstance(perms, Mapping):
            raise ConfigError("bridge.permissions: must be a mapping of who → level")
        for who, level in perms.items():
            if not isinstance(who, str) or not who:
                raise ConfigError(f"bridge.permissions: key {who!r} must be '*', a server name or a user ID")
            if who.startswith("@") and ":" not in who:
                raise ConfigError(f"bridge.permissions: {who!r} is not a full user ID (@user:server)")
            if level not in PERMISSION_LEVELS:
                raise ConfigError(
                    f"bridge.permissions.{who}: level must be one of {', '.join(PERMISSION_LEVELS)}, got {level!r}"
                )

    def _list(self, key: str) -> list[Any]:
        value = self._value(key)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: must be a list")
        return value

    def _e164(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not E164_RE.match(value):
            raise ConfigError(f"{key}: {value!r} is not an E.164 number (+ and 5 to 15 digits)")
        return value

    def _sms(self) -> None:
        enabled = self._bool("sms.enabled")
        origination = self._str("sms.origination")
        if origination not in ("short_code", "vmn_pool"):
            raise ConfigError(f"sms.origination: must be short_code or vmn_pool, got {origination!r}")
        short_code = self._str("sms.short_code", allow_empty=True)
        pool = self._list("sms.vmn_pool")
        for i, number in enumerate(pool):
            self._e164(f"sms.vmn_pool[{i}]", number)
        if len(set(pool)) != len(pool):
            raise ConfigError("sms.vmn_pool: lists a number twice")
        owned = self._value("sms.owned_numbers")
        if not isinstance(owned, Mapping):
            raise ConfigError("sms.owned_numbers: must be a mapping of E.164 number → user ID")
        for number, owner in owned.items():
            self._e164(f"sms.owned_numbers.{number}", number)
            if not isinstance(owner, str) or not owner.startswith("@") or ":" not in owner:
                raise ConfigError(f"sms.owned_numbers.{number}: {owner!r} is not a user ID")
        smscs = self._list("sms.smscs")
        names: set[str] = set()
        for i, smsc in enumerate(smscs):
            where = f"sms.smscs[{i}]"
            if not isinstance(smsc, Mapping):
                raise ConfigError(f"{where}: must be a mapping")
            unknown = set(smsc) - SMSC_KEYS
            if unknown:
                raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key")
            for required in ("name", "host", "port", "system_id", "password"):
                if smsc.get(required) in (None, ""):
                    raise ConfigError(f"{where}.{required}: missing")
            port = smsc["port"]
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ConfigError(f"{where}.port: must be a port number, got {port!r}")
            if smsc.get("bind", "transceiver") not in ("transceiver", "pair"):
                raise ConfigError(f"{where}.bind: must be transceiver or pair")
            for numeric in ("window", "tps"):
                value = smsc.get(numeric, 1)
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ConfigError(f"{where}.{numeric}: must be a non-negative number, got {value!r}")
            if smsc["name"] in names:
                raise ConfigError(f"{where}.name: {smsc['name']!r} is used twice")
            names.add(str(smsc["name"]))
        routes = self._list("sms.routes")
        for i, route in enumerate(routes):
            where = f"sms.routes[{i}]"
            if not isinstance(route, Mapping):
                raise ConfigError(f"{where}: must be a mapping")
            prefix = route.get("prefix", "")
            if not isinstance(prefix, str) or (not prefix.isdigit() and prefix != ""):
                raise ConfigError(f"{where}.prefix: must be digits (or empty), got {prefix!r}")
            targets = route.get("smscs")
            if not isinstance(targets, list) or not targets:
                raise ConfigError(f"{where}.smscs: must list at least one SMSC")
            for j, target in enumerate(targets):
                name = target.get("name") if isinstance(target, Mapping) else target
                if name not in names:
                    raise ConfigError(f"{where}.smscs[{j}]: no SMSC named {name!r} in sms.smscs")
            if route.get("concatenation", "udh8") not in ("udh8", "udh16", "sar", "payload"):
                raise ConfigError(f"{where}.concatenation: must be udh8, udh16, sar or payload")
            max_segments = route.get("max_segments", 10)
            if (
                isinstance(max_segments, bool)
                or not isinstance(max_segments, int)
                or not 1 <= max_segments <= 255
            ):
                raise ConfigError(f"{where}.max_segments: must be 1 to 255, got {max_segments!r}")
        self._int("sms.reassembly_timeout", minimum=1)
        self._bool("sms.delivery_receipts")
        self._str("sms.group_prefix", allow_empty=True)
        self._str("sms.help_reply")
        seen: dict[str, str] = {}
        for kind in ("stop", "start", "help"):
            key = f"sms.keywords.{kind}"
            if not self._list(key):
                raise ConfigError(f"{key}: needs at least one word")
            for i, word in enumerate(self._list(key)):
                if not isinstance(word, str) or not word.strip() or " " in word.strip():
                    raise ConfigError(f"{key}[{i}]: must be one word, got {word!r}")
                other = seen.setdefault(word.strip().upper(), kind)
                if other != kind:
                    raise ConfigError(f"{key}[{i}]: {word!r} is already a {other} keyword")
        if enabled:
            if not smscs:
                raise ConfigError("sms.smscs: SMS is enabled but no SMSC is configured")
            if not routes:
                raise ConfigError("sms.routes: SMS is enabled but no route is configured")
            if origination == "short_code" and not short_code:
                raise ConfigError("sms.short_code: needed when sms.origination is short_code")
            if origination == "vmn_pool" and not pool:
                raise ConfigError("sms.vmn_pool: needed when sms.origination is vmn_pool")

    def _calls(self) -> None:
        enabled = self._bool("calls.enabled")
        self._str("calls.sip_bind_address")
        self._port("calls.sip_port")
        self._str("calls.sip_public_address", allow_empty=True)
        trunk = self._str("calls.trunk")
        host, _, port = trunk.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"calls.trunk: must be host:port, got {trunk!r}")
        self._str("calls.trunk_username", allow_empty=True)
        self._str("calls.trunk_password", allow_empty=True)
        for i, peer in enumerate(self._list("calls.trunk_allowed_peers")):
            try:
                ipaddress.ip_network(str(peer), strict=False)
            except ValueError:
                raise ConfigError(
                    f"calls.trunk_allowed_peers[{i}]: {peer!r} is not an address or network"
                ) from None
        caller_id = self._str("calls.caller_id", allow_empty=True)
        if caller_id:
            self._e164("calls.caller_id", caller_id)
        self._str("calls.rtp_bind_address")
        self._str("calls.rtp_public_address", allow_empty=True)
        low, high = self._port("calls.rtp_port_min"), self._port("calls.rtp_port_max")
        if (low or high) and not (0 < low < high):
            raise ConfigError("calls.rtp_port_max: must be above calls.rtp_port_min (or both 0)")
        self._bool("calls.rtp_strict_source")
        low, high = self._port("calls.webrtc_port_min"), self._port("calls.webrtc_port_max")
        if (low or high) and not (1024 <= low <= high):
            raise ConfigError("calls.webrtc_port_max: must be at least calls.webrtc_port_min (or both 0)")
        addresses = self._list("calls.webrtc_addresses")
        if not addresses:
            raise ConfigError("calls.webrtc_addresses: needs at least one address")
        for i, server in enumerate(self._list("calls.ice_servers")):
            if not isinstance(server, Mapping) or "urls" not in server:
                raise ConfigError(f"calls.ice_servers[{i}]: must be a mapping with urls")
        if self._bool("calls.ice_relay_only") and not any(
            str(url).startswith(("turn:", "turns:"))
            for server in self._list("calls.ice_servers")
            for url in (server["urls"] if isinstance(server["urls"], list) else [server["urls"]])
        ):
            raise ConfigError("calls.ice_relay_only: needs a TURN server (turn: URL) in calls.ice_servers")
        workers = self._value("calls.media_workers")
        if isinstance(workers, str) and workers.isdigit():  # from the environment a number arrives as text
            _set(self.raw, "calls.media_workers", int(workers))
        elif workers != "auto":
            self._int("calls.media_workers", minimum=0)
        self._int("calls.media_realtime_priority", minimum=0, maximum=99)
        self._int("calls.media_spare_calls", minimum=0, maximum=100)
        self._int("calls.ring_timeout", minimum=5, maximum=600)
        self._int("calls.max_calls", minimum=1)
        self._int("calls.max_calls_per_user", minimum=1)
        if enabled and not caller_id and not self["sms.owned_numbers"]:
            raise ConfigError("calls.caller_id: needed when calls are enabled and no user owns a number")

    def _credit(self) -> None:
        self._bool("credit.enabled")
        self._str("credit.currency", pattern=re.compile(r"^[A-Z]{3}$"))
        modes = ("prepaid", "postpaid", "unlimited")
        if self._str("credit.default_mode") not in modes:
            raise ConfigError(f"credit.default_mode: must be one of {', '.join(modes)}")
        self._int("credit.postpaid_limit", minimum=0)
        per_user = self._value("credit.modes")
        if not isinstance(per_user, Mapping) or any(m not in modes for m in per_user.values()):
            raise ConfigError(f"credit.modes: must map user IDs or server names to one of {', '.join(modes)}")
        for i, rate in enumerate(self._list("credit.rates")):
            where = f"credit.rates[{i}]"
            if not isinstance(rate, Mapping):
                raise ConfigError(f"{where}: must be a mapping")
            prefix = rate.get("prefix", "")
            if not isinstance(prefix, str) or (prefix and not prefix.isdigit()):
                raise ConfigError(f"{where}.prefix: must be digits (or empty), got {prefix!r}")
            for key in ("sms", "call_minute", "connection_fee"):
                value = rate.get(key, 0)
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigError(f"{where}.{key}: must be a whole number of minor units, got {value!r}")
            increments = rate.get("increments", [60, 60])
            if (
                not isinstance(increments, list)
                or len(increments) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in increments)
            ):
                raise ConfigError(f"{where}.increments: must be [first, next] seconds, got {increments!r}")
        inbound = self._value("credit.inbound")
        if not isinstance(inbound, Mapping):
            raise ConfigError("credit.inbound: must be a mapping with sms, call_minute and increments")
        for key in ("sms", "call_minute"):
            value = inbound.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(
                    f"credit.inbound.{key}: must be a whole number of minor units, got {value!r}"
                )
        increments = inbound.get("increments", [60, 60])
        if (
            not isinstance(increments, list)
            or len(increments) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in increments)
        ):
            raise ConfigError(f"credit.inbound.increments: must be [first, next] seconds, got {increments!r}")
        for i, prefix in enumerate(self._list("credit.allow_prefixes")):
            if not isinstance(prefix, str) or not prefix.isdigit():
                raise ConfigError(f"credit.allow_prefixes[{i}]: must be digits, got {prefix!r}")
        for i, prefix in enumerate(self._list("credit.deny_prefixes")):
            if not isinstance(prefix, str) or not prefix.isdigit():
                raise ConfigError(f"credit.deny_prefixes[{i}]: must be digits, got {prefix!r}")
        self._int("credit.warn_before_end", minimum=0)
        self._bool("credit.warn_tone")
        self._str("credit.provisioning_secret", allow_empty=True)

    # -- access -----------------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return _get(self.raw, key)

    @property
    def tokens_generated(self) -> bool:
        return GENERATE not in (self["appservice.as_token"], self["appservice.hs_token"])

    def with_generated_tokens(self) -> Config:
        raw = copy.deepcopy(self.raw)
        for key in ("as_token", "hs_token"):
            if raw["appservice"][key] == GENERATE:
                raw["appservice"][key] = secrets.token_urlsafe(48)
        return Config(raw=raw, path=self.path)


def _plain(node: Any) -> Any:
    """ruamel's commented maps → plain dicts/lists (our code only needs values)."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def _merge(base: dict[str, Any], override: Mapping[str, Any], prefix: str) -> None:
    for key, value in override.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{path}: unknown key")
        if isinstance(base[key], dict) and path not in FREE_FORM:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{path}: must be a mapping")
            _merge(base[key], value, path + ".")
        else:
            base[key] = value


def write_config_values(path: Path, values: Mapping[str, Any]) -> None:
    """Set ``values`` (dotted keys) in the YAML file at ``path``, keeping its comments and layout.

    Creates the file from the example if it does not exist yet (the quick start's first run).
    """
    yaml = _yaml()
    text = path.read_text(encoding="utf-8") if path.exists() else example_config_text()
    tree = yaml.load(text) or {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        node[leaf] = value
    out = io.StringIO()
    yaml.dump(tree, out)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(out.getvalue(), encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
