"""Creating a bucket one already owns: 200 in us-east-1, 409 elsewhere (as AWS)."""

from __future__ import annotations

import pytest

from granary.api.http.types import Response
from granary.api.s3.bucket_ops import _already_owned
from granary.api.s3.errors import S3Error


def test_us_east_1_answers_created_and_other_regions_refuse():
    created = Response(200, [("location", "/b")])
    assert _already_owned("us-east-1", "b", created) is created
    with pytest.raises(S3Error) as refused:
        _already_owned("garage", "b", created)
    assert (refused.value.status, refused.value.code) == (409, "BucketAlreadyOwnedByYou")
