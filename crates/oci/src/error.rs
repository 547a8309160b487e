//! The registry's error codes, each declared once with its HTTP status and default message, so the
//! server emits and the client parses the same vocabulary.

use std::fmt;
use std::str::FromStr;

macro_rules! codes {
    ($($variant:ident = $code:literal, $status:literal, $message:literal;)*) => {
        /// An error code of the distribution spec (plus `UNAVAILABLE`, for storage outages).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant,)* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it appears in the JSON error body.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status the registry answers with.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            pub fn message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message,)* }
            }
        }

        impl FromStr for ErrorCode {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                // SIZE_INVALID, UNSUPPORTED and BLOB_UPLOAD_INVALID each name several statuses;
                // parsing yields the first.
                #[allow(unreachable_patterns)]
                match s { $($code => Ok(ErrorCode::$variant),)* _ => Err(()) }
            }
        }
    };
}

codes! {
    BlobUnknown = "BLOB_UNKNOWN", 404, "blob unknown to registry";
    BlobUploadInvalid = "BLOB_UPLOAD_INVALID", 400, "blob upload invalid";
    BlobUploadUnknown = "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry";
    UploadBusy = "BLOB_UPLOAD_INVALID", 409, "blob upload is in use by another request";
    DigestInvalid = "DIGEST_INVALID", 400, "provided digest did not match uploaded content";
    ManifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry";
    ManifestInvalid = "MANIFEST_INVALID", 400, "manifest invalid";
    ManifestUnknown = "MANIFEST_UNKNOWN", 404, "manifest unknown to registry";
    NameInvalid = "NAME_INVALID", 400, "invalid repository name";
    NameUnknown = "NAME_UNKNOWN", 404, "repository name not known to registry";
    SizeInvalid = "SIZE_INVALID", 400, "provided length did not match content length";
    ManifestTooBig = "SIZE_INVALID", 413, "manifest is larger than the registry accepts";
    Unauthorized = "UNAUTHORIZED", 401, "authentication required";
    Denied = "DENIED", 403, "requested access to the resource is denied";
    Unsupported = "UNSUPPORTED", 405, "the operation is unsupported";
    QueryInvalid = "UNSUPPORTED", 400, "invalid query parameters";
    HeadersTooLarge = "UNSUPPORTED", 431, "request header fields too large";
    TooManyRequests = "TOOMANYREQUESTS", 429, "too many requests";
    RangeInvalid = "RANGE_INVALID", 416, "invalid content range";
    PaginationNumberInvalid = "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested";
    TagInvalid = "TAG_INVALID", 400, "manifest tag did not match URI";
    Unavailable = "UNAVAILABLE", 503, "service unavailable";
    // The node proxy's three: Docker 1.3-1.5 (v1 only, the original's nginx rule), and the
    // registry behind it unreachable or slow; a mirror's upstream failing is a bad gateway too.
    ClientTooOld = "UNSUPPORTED", 404, "this Docker client is too old for the v2 registry API";
    BadGateway = "UNAVAILABLE", 502, "the registry behind this proxy is unreachable";
    GatewayTimeout = "UNAVAILABLE", 504, "the registry behind this proxy did not answer in time";
    Unknown = "UNKNOWN", 500, "unknown error";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_4xx() {
        for code in ErrorCode::ALL {
            let server_side = matches!(
                code,
                ErrorCode::Unavailable
                    | ErrorCode::Unknown
                    | ErrorCode::BadGateway
                    | ErrorCode::GatewayTimeout
            );
            assert_eq!(code.status() >= 500, server_side, "{code:?}");
        }
    }

    #[test]
    fn round_trips_through_strings() {
        assert_eq!("BLOB_UNKNOWN".parse(), Ok(ErrorCode::BlobUnknown));
        assert_eq!("NOPE".parse::<ErrorCode>(), Err(()));
    }
}
