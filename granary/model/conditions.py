"""S3's conditional writes (If-None-Match, If-Match) as a check on an object's
current version, made inside the round that commits the write
(`Objects.write_version`, `Table.conditional_update`)."""

from __future__ import annotations

from dataclasses import dataclass

from granary.model.object import ObjectVersion

IF_NONE_MATCH = "If-None-Match"
IF_MATCH = "If-Match"
NO_SUCH_KEY = "NoSuchKey"


class ConditionFailed(Exception):
    """The condition does not hold: `condition` is IF_NONE_MATCH, IF_MATCH or
    NO_SUCH_KEY (If-Match on an object that does not exist)."""

    def __init__(self, condition: str) -> None:
        super().__init__(condition)
        self.condition = condition


@dataclass(frozen=True)
class WriteCondition:
    """The ETags of If-None-Match and If-Match (None: header absent; "*": any)."""

    if_none_match: frozenset[str] | None = None
    if_match: frozenset[str] | None = None

    def failure(self, current: ObjectVersion | None) -> ConditionFailed | None:
        """Why a write may not replace `current` (the object's current version), or None."""
        refused = self.if_none_match
        if refused is not None and current is not None and refused & {"*", current.data_meta.etag}:
            return ConditionFailed(IF_NONE_MATCH)
        if self.if_match is not None:
            if current is None:
                return ConditionFailed(NO_SUCH_KEY)
            if "*" not in self.if_match and current.data_meta.etag not in self.if_match:
                return ConditionFailed(IF_MATCH)
        return None
