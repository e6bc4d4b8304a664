"""What object lock forbids (granary/model/lock.py): deletions and retention changes."""

from __future__ import annotations

import pytest

from granary.model.lock import (
    COMPLIANCE,
    GOVERNANCE,
    NO_RETENTION,
    DefaultRetention,
    LockConfig,
    LockRefused,
    Retention,
    check_deletion,
    check_retention_change,
    parse_retain_until,
)

NOW = 1_000_000


def test_a_running_retention_or_a_legal_hold_forbids_deletion():
    check_deletion(NO_RETENTION, False, False, NOW)
    check_deletion(Retention(COMPLIANCE, NOW), False, False, NOW)  # ran out just now
    with pytest.raises(LockRefused):
        check_deletion(Retention(COMPLIANCE, NOW + 1), False, True, NOW)
    with pytest.raises(LockRefused):
        check_deletion(Retention(GOVERNANCE, NOW + 1), False, False, NOW)
    check_deletion(Retention(GOVERNANCE, NOW + 1), False, True, NOW)
    with pytest.raises(LockRefused):
        check_deletion(NO_RETENTION, True, True, NOW)


def test_compliance_only_extends_and_governance_changes_otherwise_with_the_bypass():
    compliance = Retention(COMPLIANCE, NOW + 10)
    check_retention_change(compliance, Retention(COMPLIANCE, NOW + 20), False, NOW)
    for new in (Retention(COMPLIANCE, NOW + 5), Retention(GOVERNANCE, NOW + 50), NO_RETENTION):
        with pytest.raises(LockRefused):
            check_retention_change(compliance, new, True, NOW)
    governance = Retention(GOVERNANCE, NOW + 10)
    check_retention_change(governance, Retention(GOVERNANCE, NOW + 20), False, NOW)
    for new in (Retention(GOVERNANCE, NOW + 5), Retention(COMPLIANCE, NOW + 10), NO_RETENTION):
        with pytest.raises(LockRefused):
            check_retention_change(governance, new, False, NOW)
        check_retention_change(governance, new, True, NOW)
    check_retention_change(Retention(COMPLIANCE, NOW - 1), NO_RETENTION, False, NOW)  # over


def test_default_retention_counts_days_or_years():
    day = 86_400_000
    assert LockConfig(DefaultRetention(GOVERNANCE, days=2)).retention_for_new(0).until_ms == 2 * day
    years = LockConfig(DefaultRetention(COMPLIANCE, years=1)).retention_for_new(5)
    assert (years.mode, years.until_ms) == (COMPLIANCE, 5 + 365 * day)
    assert LockConfig().retention_for_new(0) == NO_RETENTION


def test_retain_until_dates_parse_as_s3_sends_them():
    assert parse_retain_until("1970-01-01T00:00:01Z") == 1000
    assert parse_retain_until("1970-01-01T00:00:01.5+00:00") == 1500
    assert parse_retain_until("1970-01-01T01:00:00+01:00") == 0
    with pytest.raises(ValueError):
        parse_retain_until("tomorrow")
