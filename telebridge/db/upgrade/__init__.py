"""Versioned schema upgrades (mautrix ``UpgradeTable``): one module per version, never edited once released."""

from mautrix.util.async_db import UpgradeTable

upgrade_table = UpgradeTable(version_table_name="telebridge_version", database_name="telebridge")

from . import v01_initial  # noqa: E402,F401  (registers itself on import)
