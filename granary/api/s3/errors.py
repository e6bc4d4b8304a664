"""S3 errors: the codes, HTTP statuses and default messages AWS sends.

Every failure that reaches a client goes through `S3Error`; the HTTP layer
renders it as the standard `<Error>` XML document.
"""

from __future__ import annotations

# code -> (HTTP status, default message)
ERROR_TABLE: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": (
        400,
        "Error parsing the X-Amz-Credential parameter.",
    ),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BucketAlreadyExists": (409, "The requested bucket name is not available."),
    "BucketAlreadyOwnedByYou": (
        409,
        "Your previous request to create the named bucket succeeded and you already own it.",
    ),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty."),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": (
        400,
        "Your proposed upload is smaller than the minimum allowed object size.",
    ),
    "IncompleteBody": (
        400,
        "You did not provide the number of bytes specified by the Content-Length HTTP header.",
    ),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (
        403,
        "The AWS access key Id you provided does not exist in our records.",
    ),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "AccessControlListNotSupported": (400, "The bucket does not allow ACLs"),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidLocationConstraint": (400, "The specified location-constraint is not valid."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "InvalidPart": (
        400,
        "One or more of the specified parts could not be found. The part might not have "
        "been uploaded, or the specified entity tag might not have matched the part's "
        "entity tag.",
    ),
    "InvalidPartOrder": (
        400,
        "The list of parts was not in ascending order. Parts must be ordered by part number.",
    ),
    "InvalidPartNumber": (416, "The requested partnumber is not satisfiable"),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidStorageClass": (400, "The storage class you specified is not valid."),
    "KeyTooLongError": (400, "Your key is too long."),
    "InvalidTag": (400, "The tag provided was not a valid tag."),
    "MalformedXML": (
        400,
        "The XML you provided was not well-formed or did not validate against our "
        "published schema.",
    ),
    "MaxMessageLengthExceeded": (400, "Your request was too big."),
    "MetadataTooLarge": (
        400,
        "Your metadata headers exceed the maximum allowed metadata size.",
    ),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingSecurityHeader": (400, "Your request is missing a required header."),
    "NoSuchBucket": (404, "The specified bucket does not exist."),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (
        404,
        "The specified multipart upload does not exist. The upload ID might be invalid, "
        "or the multipart upload might have been aborted or completed.",
    ),
    "NoSuchVersion": (404, "The specified version does not exist."),
    "NoSuchObjectLockConfiguration": (
        404,
        "The specified object does not have a ObjectLock configuration.",
    ),
    "ObjectLockConfigurationNotFoundError": (
        404,
        "Object Lock configuration does not exist for this bucket.",
    ),
    "InvalidRetentionPeriod": (400, "Default retention period must be a positive integer value."),
    "NoSuchLifecycleConfiguration": (404, "The lifecycle configuration does not exist."),
    "InvalidBucketState": (409, "The request is not valid with the current state of the bucket."),
    "NotImplemented": (
        501,
        "A header or query you provided implies functionality that is not implemented.",
    ),
    "ConditionalRequestConflict": (
        409,
        "A conflicting operation occurred. If using PutObject you can retry the request.",
    ),
    "NoSuchTagSet": (404, "The TagSet does not exist."),
    "OperationAborted": (
        409,
        "A conflicting conditional operation is currently in progress against this resource. "
        "Please try again.",
    ),
    "PreconditionFailed": (412, "At least one of the preconditions you specified did not hold."),
    "RequestTimeout": (
        400,
        "Your socket connection to the server was not read from or written to within "
        "the timeout period.",
    ),
    "RequestTimeTooSkewed": (
        403,
        "The difference between the request time and the server's time is too large.",
    ),
    "ServiceUnavailable": (503, "Please reduce your request rate."),
    "SignatureDoesNotMatch": (
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    "XAmzContentSHA256Mismatch": (
        400,
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    ),
    "InvalidChunkSizeError": (
        403,
        "Only the last chunk is allowed to have a size less than 8192 bytes",
    ),
}


class S3Error(Exception):
    """An error answered to the client as S3 error XML.

    `extra` holds additional child elements of `<Error>` (for example
    `BucketName`, `Key`, `ArgumentName`) in the order given.
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: str,
    ) -> None:
        default_status, default_message = ERROR_TABLE.get(code, (400, code))
        self.code = code
        self.status = status if status is not None else default_status
        self.message = message if message is not None else default_message
        self.headers = headers or {}
        self.extra = extra
        super().__init__(f"{code}: {self.message}")
