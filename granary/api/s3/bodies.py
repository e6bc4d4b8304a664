"""Parsers for the XML request bodies of CompleteMultipartUpload, DeleteObjects,
CreateBucket, PutBucketTagging, PutBucketVersioning and the object lock calls.

Each returns plain data and raises `S3Error` ("MalformedXML" unless AWS
answers otherwise). Unknown elements are ignored, so newer clients that send
extra fields keep working.
"""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from granary.api.s3.errors import S3Error
from granary.api.s3.numbers import MAX_PART_NUMBER
from granary.api.s3.xml import XmlParser, parse_xml
from granary.model.lock import MODES, DefaultRetention
from granary.util.checksums import ALGORITHMS, checksum_element_name

MAX_DELETE_OBJECTS = 1_000
# 10,000 parts with ETags and checksums, or 1,000 keys of up to 1,024 bytes
# each, do not fit the default 1 MiB cap.
MAX_COMPLETE_MULTIPART_BYTES = 8 << 20
MAX_DELETE_OBJECTS_BYTES = 8 << 20
MAX_CREATE_BUCKET_BYTES = 64 << 10
# Element budgets: the root and its few fields, plus per listed item the item
# and its fields (Part: PartNumber, ETag, up to five checksums; Object: Key,
# VersionId, ETag, LastModifiedTime, Size), with room for a few more that a
# newer client may add. A body over its budget stops parsing there.
MAX_COMPLETE_MULTIPART_ELEMENTS = 4 + MAX_PART_NUMBER * 10
MAX_DELETE_OBJECTS_ELEMENTS = 4 + MAX_DELETE_OBJECTS * 8
MAX_CREATE_BUCKET_ELEMENTS = 16
MAX_TAGS = 50
MAX_TAG_KEY_CHARS = 128
MAX_TAG_VALUE_CHARS = 256
MAX_TAGGING_BYTES = 64 << 10
MAX_TAGGING_ELEMENTS = 3 + MAX_TAGS * 4
MAX_VERSIONING_BYTES = 4 << 10
MAX_VERSIONING_ELEMENTS = 8
VERSIONING_STATES = ("Enabled", "Suspended")

_INTEGER = re.compile(r"[-+]?[0-9]{1,12}")
_CHECKSUM_ELEMENTS = tuple((checksum_element_name(a), a) for a in ALGORITHMS)


@dataclass(frozen=True, slots=True)
class CompletedPart:
    part_number: int
    etag: str
    checksums: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ObjectToDelete:
    key: str
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    quiet: bool
    objects: list[ObjectToDelete]


def _root(body: bytes, name: str, max_bytes: int, max_elements: int) -> ET.Element:
    return _checked_root(parse_xml(body, max_bytes=max_bytes, max_elements=max_elements), name)


def _checked_root(root: ET.Element, name: str) -> ET.Element:
    if root.tag != name:
        raise S3Error("MalformedXML")
    return root


def _required_text(parent: ET.Element, name: str) -> str:
    child = parent.find(name)
    if child is None:
        raise S3Error("MalformedXML")
    return child.text or ""


def _optional_text(parent: ET.Element, name: str) -> str | None:
    child = parent.find(name)
    if child is None or not child.text:
        return None
    return child.text


def _completed_part(part: ET.Element) -> CompletedPart:
    number_text = _required_text(part, "PartNumber").strip()
    if _INTEGER.fullmatch(number_text) is None:
        raise S3Error("MalformedXML")
    number = int(number_text)
    if number < 1:
        raise S3Error("InvalidArgument", "PartNumber must be >= 1")
    if number > MAX_PART_NUMBER:
        # No such part can have been uploaded, which is how AWS reports it.
        raise S3Error("InvalidPart")
    etag = _required_text(part, "ETag").strip().strip('"')
    checksums = {}
    for element_name, algorithm in _CHECKSUM_ELEMENTS:
        value = _optional_text(part, element_name)
        if value is not None:
            checksums[algorithm] = value.strip()
    return CompletedPart(number, etag, checksums)


def parse_complete_multipart(body: bytes) -> list[CompletedPart]:
    """The parts listed in a CompleteMultipartUpload body.

    Raises MalformedXML for a bad or empty list or one of more than 10,000
    parts, InvalidArgument for a part number below 1, InvalidPart above
    10,000 and InvalidPartOrder if a number goes down. A number may repeat:
    a client that re-sent a part lists each answer it got (see
    `choose_parts` in mpu_ops.py).
    """
    root = _root(
        body,
        "CompleteMultipartUpload",
        MAX_COMPLETE_MULTIPART_BYTES,
        MAX_COMPLETE_MULTIPART_ELEMENTS,
    )
    nodes = root.findall("Part")
    if not nodes or len(nodes) > MAX_PART_NUMBER:
        raise S3Error("MalformedXML")
    parts = [_completed_part(node) for node in nodes]
    for previous, current in itertools.pairwise(parts):
        if current.part_number < previous.part_number:
            raise S3Error("InvalidPartOrder")
    return parts


def _parse_quiet(root: ET.Element) -> bool:
    text = _optional_text(root, "Quiet")
    if text is None:
        return False
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise S3Error("MalformedXML")
    return value == "true"


def delete_objects_parser() -> XmlParser:
    """A parser for a DeleteObjects body, fed as it arrives (see `delete_request`)."""
    return XmlParser(max_bytes=MAX_DELETE_OBJECTS_BYTES, max_elements=MAX_DELETE_OBJECTS_ELEMENTS)


def parse_delete_objects(body: bytes) -> DeleteRequest:
    """The keys (and versions) listed in a whole DeleteObjects body."""
    parser = delete_objects_parser()
    parser.feed(body)
    return delete_request(parser.close())


def delete_request(root: ET.Element) -> DeleteRequest:
    """The keys (and versions) listed in a parsed DeleteObjects body.

    Keys are kept exactly as sent, whitespace included; an empty `<Key/>`
    is returned as "" for the handler to report per key. Between 1 and
    1,000 objects are allowed, as in S3; otherwise MalformedXML.
    """
    root = _checked_root(root, "Delete")
    nodes = root.findall("Object")
    if not nodes or len(nodes) > MAX_DELETE_OBJECTS:
        raise S3Error("MalformedXML")
    objects = [
        ObjectToDelete(_required_text(node, "Key"), _optional_text(node, "VersionId"))
        for node in nodes
    ]
    return DeleteRequest(_parse_quiet(root), objects)


def parse_create_bucket(body: bytes) -> str | None:
    """The LocationConstraint of a CreateBucket body; None if the body or the
    constraint is empty or absent."""
    if not body.strip():
        return None
    root = _root(
        body, "CreateBucketConfiguration", MAX_CREATE_BUCKET_BYTES, MAX_CREATE_BUCKET_ELEMENTS
    )
    constraint = _optional_text(root, "LocationConstraint")
    if constraint is None:
        return None
    return constraint.strip() or None


def parse_tagging(body: bytes, max_tags: int = MAX_TAGS) -> list[tuple[str, str]]:
    """The tag set of a `Tagging` body, checked by `validate_tags`."""
    root = _root(body, "Tagging", MAX_TAGGING_BYTES, MAX_TAGGING_ELEMENTS)
    tag_set = root.find("TagSet")
    if tag_set is None:
        raise S3Error("MalformedXML")
    tags = [
        (_required_text(tag, "Key"), _required_text(tag, "Value")) for tag in tag_set.findall("Tag")
    ]
    validate_tags(tags, max_tags)
    return tags


def validate_tags(tags: list[tuple[str, str]], max_tags: int) -> None:
    """S3's limits on a tag set (InvalidTag): at most `max_tags` tags (50 on a bucket,
    10 on an object), keys of 1-128 characters, values of at most 256, no key twice."""
    if len(tags) > max_tags:
        raise S3Error("InvalidTag", f"Cannot have more than {max_tags} tags.")
    keys = [key for key, _ in tags]
    if len(set(keys)) != len(keys):
        raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key.")
    for key, value in tags:
        if not 1 <= len(key) <= MAX_TAG_KEY_CHARS:
            raise S3Error("InvalidTag", f"The TagKey you have provided is invalid: {key[:140]}")
        if len(value) > MAX_TAG_VALUE_CHARS:
            raise S3Error("InvalidTag", "The TagValue you have provided is invalid.")


def parse_versioning(body: bytes) -> str | None:
    """The Status of a VersioningConfiguration body (None: absent, nothing changes).

    MFA delete cannot be enabled: Granary has no MFA devices (NotImplemented).
    """
    root = _root(body, "VersioningConfiguration", MAX_VERSIONING_BYTES, MAX_VERSIONING_ELEMENTS)
    status = _optional_text(root, "Status")
    if status is not None and status not in VERSIONING_STATES:
        raise S3Error("MalformedXML")
    mfa_delete = _optional_text(root, "MfaDelete")
    if mfa_delete == "Enabled":
        raise S3Error("NotImplemented", "MFA delete is not supported.")
    if mfa_delete not in (None, "Disabled"):
        raise S3Error("MalformedXML")
    return status


MAX_LOCK_BYTES = 4 << 10
MAX_LOCK_ELEMENTS = 16


def parse_lock_configuration(body: bytes) -> DefaultRetention | None:
    """The default retention of an ObjectLockConfiguration body (None: no rule).

    ObjectLockEnabled must say Enabled (a lock is never turned off); a default
    retention has a mode and exactly one of Days and Years, a positive integer.
    """
    root = _root(body, "ObjectLockConfiguration", MAX_LOCK_BYTES, MAX_LOCK_ELEMENTS)
    if _optional_text(root, "ObjectLockEnabled") != "Enabled":
        raise S3Error("MalformedXML")
    rule = root.find("Rule")
    if rule is None:
        return None
    default = rule.find("DefaultRetention")
    if default is None:
        raise S3Error("MalformedXML")
    mode = _optional_text(default, "Mode")
    days, years = _optional_text(default, "Days"), _optional_text(default, "Years")
    if mode not in MODES or (days is None) == (years is None):
        raise S3Error("MalformedXML")
    period = days if days is not None else years
    assert period is not None
    if not _INTEGER.fullmatch(period):
        raise S3Error("MalformedXML")
    if int(period) <= 0:
        raise S3Error("InvalidRetentionPeriod")
    if days is not None:
        return DefaultRetention(mode, days=int(period))
    return DefaultRetention(mode, years=int(period))


def parse_retention(body: bytes) -> tuple[str, str]:
    """(mode, retain-until date as sent) of a Retention body."""
    root = _root(body, "Retention", MAX_LOCK_BYTES, MAX_LOCK_ELEMENTS)
    mode = _optional_text(root, "Mode")
    until = _optional_text(root, "RetainUntilDate")
    if mode not in MODES or until is None:
        raise S3Error("MalformedXML")
    return mode, until


def parse_legal_hold(body: bytes) -> bool:
    """Whether a LegalHold body turns the hold ON (else OFF)."""
    root = _root(body, "LegalHold", MAX_LOCK_BYTES, MAX_LOCK_ELEMENTS)
    status = _optional_text(root, "Status")
    if status not in ("ON", "OFF"):
        raise S3Error("MalformedXML")
    return status == "ON"
