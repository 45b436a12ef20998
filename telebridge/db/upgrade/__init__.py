"""Versioned schema upgrades (mautrix ``UpgradeTable``): one module per version, never edited once released.

Each version module registers itself on ``upgrade_table`` when imported (at the bottom of this file).
"""

from mautrix.util.async_db import UpgradeTable

upgrade_table = UpgradeTable(version_table_name="telebridge_version", database_name="telebridge")

from . import v01_initial, v02_sms, v03_calls, v04_credit, v05_call_dialog  # noqa: E402, F401
