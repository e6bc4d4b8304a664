"""POST Object policies: who signed the form, and whether the form obeys its policy. Sans-IO.

A browser upload carries a base64 JSON policy (an expiration and a list of
conditions on the form's fields) and a signature of that base64 text: SigV4
(`x-amz-credential`, `x-amz-signature`) or, from older clients, SigV2
(`AWSAccessKeyId`, `signature`). Field names are compared case-insensitively,
values exactly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from granary.api.s3.errors import S3Error
from granary.api.s3.numbers import parse_decimal
from granary.api.s3.sigv4 import (
    ALGORITHM,
    AMZ_DATE_FORMAT,
    TERMINATOR,
    derive_signing_key,
    sign,
    signatures_equal,
)

SERVICE = "s3"
# Fields that need no condition: the signature and what it covers, and the
# checksums, which only guard the content the signature lets in. (The file
# part is never among the fields.)
EXEMPT_FIELDS = frozenset({"policy", "x-amz-signature", "signature", "awsaccesskeyid"})
EXEMPT_PREFIXES = ("x-ignore-", "x-amz-checksum-")

_EXPIRATION = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z", re.ASCII
)
_SCOPE_DATE = re.compile(r"\d{8}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Condition:
    """`field` (lower case, without the `$`) equals or starts with `value`."""

    operator: str
    field: str
    value: str
    written: str
    """The condition as AWS quotes it in errors, e.g. `["eq", "$acl", "private"]`."""

    def holds(self, actual: str) -> bool:
        if self.operator == "eq":
            return actual == self.value
        if self.field == "content-type":
            # A list of content types passes when every one of them does.
            return all(part.strip().startswith(self.value) for part in actual.split(","))
        return actual.startswith(self.value)


@dataclass(frozen=True, slots=True)
class PostPolicy:
    expiration: datetime
    conditions: tuple[Condition, ...]
    length_range: tuple[int, int] | None


def _invalid_policy(reason: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {reason}")


def _missing_field(name: str) -> S3Error:
    return S3Error(
        "InvalidArgument",
        f"Bucket POST must contain a field named '{name}'.  "
        "If it is specified, please check the order of the fields.",
        ArgumentName=name,
        ArgumentValue="",
    )


def _policy_failure(reason: str) -> S3Error:
    return S3Error("AccessDenied", f"Invalid according to Policy: {reason}")


# --- signature ----------------------------------------------------------------


def form_signer(
    fields: Mapping[str, str], secret_of: Callable[[str], str | None], region: str
) -> str | None:
    """The access key id whose secret signed the form's policy; None for an unsigned form.

    `fields` maps lower-case field names to values. Raises InvalidArgument for
    a signature with missing or malformed parts, InvalidAccessKeyId for an
    unknown key and SignatureDoesNotMatch for a wrong signature.
    """
    if any(name in fields for name in ("x-amz-signature", "x-amz-credential", "x-amz-algorithm")):
        return _sigv4_signer(fields, secret_of, region)
    if "signature" in fields or "awsaccesskeyid" in fields:
        return _sigv2_signer(fields, secret_of)
    if "policy" in fields:
        raise _missing_field("x-amz-credential")
    return None


def _required(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name)
    if value is None:
        raise _missing_field(name)
    return value


def _secret(secret_of: Callable[[str], str | None], access_key_id: str) -> str:
    secret = secret_of(access_key_id)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key_id)
    return secret


def _sigv4_signer(
    fields: Mapping[str, str], secret_of: Callable[[str], str | None], region: str
) -> str:
    algorithm = _required(fields, "x-amz-algorithm")
    if algorithm != ALGORITHM:
        raise S3Error(
            "InvalidArgument",
            f"Only the {ALGORITHM} algorithm is supported.",
            ArgumentName="x-amz-algorithm",
            ArgumentValue=algorithm,
        )
    credential = _required(fields, "x-amz-credential")
    amz_date = _required(fields, "x-amz-date")
    provided = _required(fields, "x-amz-signature")
    policy = _required(fields, "policy")
    parts = credential.rsplit("/", 4)
    if len(parts) != 5 or not parts[0] or not _SCOPE_DATE.fullmatch(parts[1]):
        raise _bad_credential(credential, "it is malformed")
    access_key_id, date, scope_region, service, terminator = parts
    if terminator != TERMINATOR or service != SERVICE:
        raise _bad_credential(credential, f"the scope must end with {SERVICE}/{TERMINATOR}")
    if scope_region != region:
        raise _bad_credential(
            credential, f"the region '{scope_region}' is wrong; expecting '{region}'"
        )
    try:
        datetime.strptime(amz_date, AMZ_DATE_FORMAT)
    except ValueError:
        raise S3Error(
            "InvalidArgument",
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
            ArgumentName="x-amz-date",
            ArgumentValue=amz_date,
        ) from None
    secret = _secret(secret_of, access_key_id)
    expected = sign(derive_signing_key(secret, date, region, SERVICE), policy)
    if not signatures_equal(expected, provided):
        raise S3Error("SignatureDoesNotMatch")
    return access_key_id


def _bad_credential(credential: str, reason: str) -> S3Error:
    return S3Error(
        "InvalidArgument",
        f"Error parsing the X-Amz-Credential parameter; {reason}.",
        ArgumentName="x-amz-credential",
        ArgumentValue=credential,
    )


def _sigv2_signer(fields: Mapping[str, str], secret_of: Callable[[str], str | None]) -> str:
    access_key_id = _required(fields, "awsaccesskeyid")
    provided = _required(fields, "signature")
    policy = _required(fields, "policy")
    secret = _secret(secret_of, access_key_id)
    digest = hmac.new(secret.encode("utf-8"), policy.encode("utf-8"), hashlib.sha1).digest()
    if not signatures_equal(base64.b64encode(digest).decode("ascii"), provided):
        raise S3Error("SignatureDoesNotMatch")
    return access_key_id


# --- the policy document ------------------------------------------------------


def decode_policy(encoded: str) -> PostPolicy:
    """Parse a base64 policy; InvalidPolicyDocument unless it is well-formed."""
    try:
        document = json.loads(base64.b64decode(encoded.strip(), validate=True))
    except (binascii.Error, ValueError, RecursionError):
        raise _invalid_policy("Invalid JSON.") from None
    if not isinstance(document, dict):
        raise _invalid_policy("Invalid JSON.")
    if "expiration" not in document:
        raise _invalid_policy("Policy missing expiration.")
    if "conditions" not in document:
        raise _invalid_policy("Policy missing conditions.")
    expiration = _parse_expiration(document["expiration"])
    raw_conditions = document["conditions"]
    if not isinstance(raw_conditions, list):
        raise _invalid_policy("Invalid 'conditions' value: it must be a list.")
    conditions = []
    length_range = None
    for raw in raw_conditions:
        if isinstance(raw, list) and raw and str(raw[0]).lower() == "content-length-range":
            length_range = _parse_length_range(raw)
        else:
            conditions.append(_parse_condition(raw))
    return PostPolicy(expiration, tuple(conditions), length_range)


def _parse_expiration(value: object) -> datetime:
    match = _EXPIRATION.fullmatch(value) if isinstance(value, str) else None
    try:
        if match is None:
            raise ValueError
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise _invalid_policy(f"Invalid 'expiration' value: '{value}'") from None


def _parse_condition(raw: object) -> Condition:
    if isinstance(raw, dict):
        if len(raw) != 1:
            raise _invalid_policy(
                "Invalid Simple-Condition: Simple-Conditions must have exactly one "
                "property specified."
            )
        ((name, value),) = raw.items()
        if not isinstance(value, str):
            raise _invalid_policy(f"Invalid Simple-Condition: the value of '{name}' is no string.")
        return Condition("eq", name.lower(), value, json.dumps(["eq", "$" + name, value]))
    if not isinstance(raw, list) or len(raw) != 3 or not all(isinstance(x, str) for x in raw):
        raise _invalid_policy(f"Invalid Condition: {json.dumps(raw)}")
    operator, name, value = raw
    operator = operator.lower()
    if operator not in ("eq", "starts-with"):
        raise _invalid_policy(f"Invalid Condition: unknown operator '{raw[0]}'.")
    if not name.startswith("$"):
        raise _invalid_policy(f"Invalid Condition: the field name '{name}' must begin with '$'.")
    return Condition(operator, name[1:].lower(), value, json.dumps(raw))


def _parse_length_range(raw: list[object]) -> tuple[int, int]:
    if len(raw) != 3:
        raise _invalid_policy("Invalid content-length-range: it must have a minimum and a maximum.")
    low, high = (_length(bound) for bound in raw[1:])
    if low > high:
        raise _invalid_policy("Invalid content-length-range: the minimum exceeds the maximum.")
    return low, high


def _length(bound: object) -> int:
    if isinstance(bound, int) and not isinstance(bound, bool) and bound >= 0:
        return bound
    if isinstance(bound, str) and (length := parse_decimal(bound)) is not None:
        return length
    raise _invalid_policy(f"Invalid content-length-range: invalid bound {json.dumps(bound)}.")


# --- checking a form against its policy ---------------------------------------


def check_form(policy: PostPolicy, fields: Mapping[str, str], bucket: str, now: datetime) -> None:
    """The policy has not expired, every condition holds and every field is covered.

    `fields` maps lower-case names to values, `key` with `${filename}` already
    replaced; conditions on `bucket` are checked against the request's bucket.
    Raises AccessDenied "Invalid according to Policy: ..." otherwise.
    """
    if now >= policy.expiration:
        raise _policy_failure("Policy expired.")
    for condition in policy.conditions:
        actual = bucket if condition.field == "bucket" else fields.get(condition.field, "")
        if not condition.holds(actual):
            raise _policy_failure(f"Policy Condition failed: {condition.written}")
    covered = {condition.field for condition in policy.conditions}
    extra = [
        name
        for name in fields
        if name not in covered
        and name not in EXEMPT_FIELDS
        and not name.startswith(EXEMPT_PREFIXES)
    ]
    if extra:
        raise _policy_failure(f"Extra input fields: {', '.join(extra)}")


def check_length(policy: PostPolicy, size: int) -> None:
    """The uploaded size is within the policy's content-length-range, if it has one."""
    if policy.length_range is None:
        return
    low, high = policy.length_range
    if size < low:
        raise S3Error("EntityTooSmall", ProposedSize=str(size), MinSizeAllowed=str(low))
    if size > high:
        raise S3Error("EntityTooLarge", ProposedSize=str(size), MaxSizeAllowed=str(high))
