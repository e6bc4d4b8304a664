"""The LifecycleConfiguration document: parsed and checked as S3 does, and rendered
back as it was given. Sans-IO.

Transitions move data to other storage classes, which Granary does not have: a
rule asking for one is refused (NotImplemented) rather than silently ignored.
"""

from __future__ import annotations

import re
import secrets
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from granary.api.s3.bodies import validate_tags
from granary.api.s3.errors import S3Error
from granary.api.s3.xml import Node, parse_xml
from granary.model.lifecycle import Lifecycle, LifecycleFilter, LifecycleRule

MAX_LIFECYCLE_BYTES = 1 << 20
MAX_RULES = 1000
MAX_LIFECYCLE_ELEMENTS = 4 + MAX_RULES * 40
MAX_ID_CHARS = 255
_NUMBER = re.compile(r"[0-9]{1,9}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T00:00:00(\.0+)?(Z|[+-]00:00)?)?")


def parse_lifecycle(body: bytes) -> Lifecycle:
    root = parse_xml(body, max_bytes=MAX_LIFECYCLE_BYTES, max_elements=MAX_LIFECYCLE_ELEMENTS)
    if root.tag != "LifecycleConfiguration":
        raise S3Error("MalformedXML")
    rules = [_rule(element) for element in root.findall("Rule")]
    if not rules or len(rules) > MAX_RULES:
        raise S3Error("MalformedXML")
    ids = [rule.id for rule in rules]
    if len(set(ids)) != len(ids):
        raise S3Error(
            "InvalidArgument", "Rule ID must be unique. Found same ID for more than one rule"
        )
    return rules


def _text(parent: ET.Element, name: str) -> str | None:
    child = parent.find(name)
    return None if child is None else (child.text or "")


def _days(parent: ET.Element, name: str, action: str, *, minimum: int = 1) -> int | None:
    text = _text(parent, name)
    if text is None:
        return None
    if not _NUMBER.fullmatch(text.strip()) or int(text) < minimum:
        raise S3Error("InvalidArgument", f"'{name}' for {action} action must be a positive integer")
    return int(text)


def _date(text: str) -> int:
    """A lifecycle date: midnight UTC of a day, as ISO 8601."""
    if not _DATE.fullmatch(text.strip()):
        raise S3Error("InvalidArgument", "'Date' must be at midnight GMT in ISO 8601 format")
    day = datetime.strptime(text.strip()[:10], "%Y-%m-%d").replace(tzinfo=UTC)
    return int(day.timestamp() * 1000)


def _rule(element: ET.Element) -> LifecycleRule:
    rule_id = _text(element, "ID") or secrets.token_hex(16)
    if len(rule_id) > MAX_ID_CHARS:
        raise S3Error("InvalidArgument", "ID length should not exceed allowed limit of 255")
    status = _text(element, "Status")
    if status not in ("Enabled", "Disabled"):
        raise S3Error("MalformedXML")
    transitions = [*element.findall("Transition"), *element.findall("NoncurrentVersionTransition")]
    for transition in transitions:  # a malformed one is refused as such first
        date = _text(transition, "Date")
        if date is not None:
            _date(date)
    if transitions:
        raise S3Error(
            "NotImplemented", "Lifecycle transitions to other storage classes are not supported."
        )
    expiration = element.find("Expiration")
    days = date_ms = None
    marker = False
    if expiration is not None:
        days = _days(expiration, "Days", "Expiration")
        date_text = _text(expiration, "Date")
        date_ms = None if date_text is None else _date(date_text)
        marker = (_text(expiration, "ExpiredObjectDeleteMarker") or "").strip() == "true"
        if sum((days is not None, date_ms is not None, marker)) != 1:
            raise S3Error("MalformedXML")
    noncurrent_days = newer = None
    noncurrent = element.find("NoncurrentVersionExpiration")
    if noncurrent is not None:
        noncurrent_days = _days(noncurrent, "NoncurrentDays", "NoncurrentVersionExpiration")
        newer = _days(noncurrent, "NewerNoncurrentVersions", "NoncurrentVersionExpiration")
        if noncurrent_days is None:
            raise S3Error("MalformedXML")
    abort = element.find("AbortIncompleteMultipartUpload")
    abort_days = None
    if abort is not None:
        abort_days = _days(abort, "DaysAfterInitiation", "AbortIncompleteMultipartUpload")
        if abort_days is None:
            raise S3Error("MalformedXML")
    if expiration is None and noncurrent is None and abort is None:
        raise S3Error("InvalidRequest", "At least one action needs to be specified in a rule")
    return LifecycleRule(
        id=rule_id,
        enabled=status == "Enabled",
        filter=_filter(element),
        expiration_days=days,
        expiration_date_ms=date_ms,
        expired_object_delete_marker=marker,
        noncurrent_days=noncurrent_days,
        newer_noncurrent=newer,
        abort_upload_days=abort_days,
    )


def _filter(rule: ET.Element) -> LifecycleFilter:
    """The rule's Filter, or its Prefix (the older form); never both."""
    prefix = _text(rule, "Prefix")
    element = rule.find("Filter")
    if element is None:
        return LifecycleFilter(prefix=prefix or "", form="prefix")
    if prefix is not None:
        raise S3Error("MalformedXML")
    conditions = list(element)
    if len(conditions) > 1:
        raise S3Error("MalformedXML")
    form = "filter"
    if conditions and conditions[0].tag == "And":
        element, form = conditions[0], "and"
    tags = [(_text(tag, "Key") or "", _text(tag, "Value") or "") for tag in element.findall("Tag")]
    validate_tags(tags, max_tags=50)
    return LifecycleFilter(
        prefix=_text(element, "Prefix") or "",
        tags=tags,
        size_greater_than=_size(element, "ObjectSizeGreaterThan"),
        size_less_than=_size(element, "ObjectSizeLessThan"),
        form=form,
    )


def _size(element: ET.Element, name: str) -> int | None:
    text = _text(element, name)
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,19}", text.strip()):
        raise S3Error("InvalidArgument", f"'{name}' must be a non-negative integer")
    return int(text)


def render_rules(rules: Lifecycle) -> list[Node]:
    return [("Rule", _render_rule(rule)) for rule in rules]


def _render_rule(rule: LifecycleRule) -> list:
    children: list = [("ID", rule.id), *_render_filter(rule.filter)]
    children.append(("Status", "Enabled" if rule.enabled else "Disabled"))
    expiration: list = []
    if rule.expiration_days is not None:
        expiration.append(("Days", rule.expiration_days))
    if rule.expiration_date_ms is not None:
        moment = datetime.fromtimestamp(rule.expiration_date_ms / 1000, UTC)
        expiration.append(("Date", moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")))
    if rule.expired_object_delete_marker:
        expiration.append(("ExpiredObjectDeleteMarker", True))
    if expiration:
        children.append(("Expiration", expiration))
    if rule.noncurrent_days is not None:
        noncurrent: list = [("NoncurrentDays", rule.noncurrent_days)]
        if rule.newer_noncurrent is not None:
            noncurrent.append(("NewerNoncurrentVersions", rule.newer_noncurrent))
        children.append(("NoncurrentVersionExpiration", noncurrent))
    if rule.abort_upload_days is not None:
        children.append(
            ("AbortIncompleteMultipartUpload", [("DaysAfterInitiation", rule.abort_upload_days)])
        )
    return children


def _render_filter(found: LifecycleFilter) -> list:
    if found.form == "prefix":
        return [("Prefix", found.prefix)]
    conditions: list = []
    if found.prefix:
        conditions.append(("Prefix", found.prefix))
    conditions += [("Tag", [("Key", key), ("Value", value)]) for key, value in found.tags]
    if found.size_greater_than is not None:
        conditions.append(("ObjectSizeGreaterThan", found.size_greater_than))
    if found.size_less_than is not None:
        conditions.append(("ObjectSizeLessThan", found.size_less_than))
    if found.form == "and":
        return [("Filter", [("And", conditions)])]
    return [("Filter", conditions)]
