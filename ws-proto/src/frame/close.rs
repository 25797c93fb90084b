//! Close codes and close-frame payloads (RFC 6455 sections 5.5.1 and 7.4).

use bytes::{BufMut, Bytes};

use crate::error::ProtocolError;

/// A WebSocket close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: closed without a close frame (never sent on the wire).
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: payload data inconsistent with the message type (bad UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: policy violation.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: message too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later (temporary overload).
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: bad gateway.
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: TLS handshake failure (never sent on the wire).
    pub const TLS_HANDSHAKE: Self = Self(1015);

    /// Whether this code may appear in a close frame on the wire: the
    /// registered codes 1000-1003 and 1007-1014, and the application ranges
    /// 3000-4999. 1004-1006, 1015, everything below 1000, 1016-2999 and
    /// 5000 and above are a protocol error when received.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

/// The longest close reason that fits in a control frame (125 - 2 bytes).
pub const MAX_CLOSE_REASON: usize = 123;

/// Parses a received close payload into its code and reason. An empty
/// payload means "no status" (1005).
pub(crate) fn parse_close_payload(payload: &[u8]) -> Result<(CloseCode, String), ProtocolError> {
    match payload {
        [] => Ok((CloseCode::NO_STATUS, String::new())),
        [_] => Err(ProtocolError::CloseFrameTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok((code, reason.to_owned()))
        }
    }
}

/// Builds a close payload. `None` gives an empty payload (no status).
pub(crate) fn close_payload(code: Option<CloseCode>, reason: &str) -> Bytes {
    let Some(code) = code else {
        return Bytes::new();
    };
    let mut out = Vec::with_capacity(2 + reason.len());
    out.put_u16(code.0);
    out.extend_from_slice(truncate_reason(reason).as_bytes());
    Bytes::from(out)
}

/// Cuts a reason to [`MAX_CLOSE_REASON`] bytes on a character boundary.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_matches_rfc_and_iana_registry() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(CloseCode(ok).is_valid_on_wire(), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(bad).is_valid_on_wire(), "{bad}");
        }
    }

    #[test]
    fn parses_payloads() {
        assert_eq!(
            parse_close_payload(&[]).unwrap(),
            (CloseCode::NO_STATUS, String::new())
        );
        assert_eq!(
            parse_close_payload(&[3, 232]).unwrap(),
            (CloseCode::NORMAL, String::new())
        );
        assert_eq!(parse_close_payload(&[3, 232, b'o', b'k']).unwrap().1, "ok");
        assert_eq!(
            parse_close_payload(&[3]),
            Err(ProtocolError::CloseFrameTooShort)
        );
        assert_eq!(
            parse_close_payload(&[3, 237]),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            parse_close_payload(&[3, 232, 0xff]),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn reasons_are_truncated_on_char_boundaries() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON);
        assert_eq!(cut.len(), 122);
        assert_eq!(close_payload(Some(CloseCode::NORMAL), &long).len(), 124);
    }
}
