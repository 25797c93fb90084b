//! `Sec-WebSocket-Extensions` parsing and permessage-deflate negotiation
//! (RFC 6455 section 9.1, RFC 7692 section 7.1).
//!
//! The server walks the client's offers in order and accepts the first it
//! can honour; an offer with an unknown, duplicated or malformed parameter
//! is declined (skipped), never a handshake failure. The client checks the
//! server's answer against what it offered and fails the connection on any
//! answer it did not allow.

use super::{DeflateConfig, DeflateMode, DeflateParams, MAX_WINDOW_BITS, MIN_WINDOW_BITS};
use crate::error::HandshakeError;

/// The extension token.
pub(crate) const EXTENSION_NAME: &str = "permessage-deflate";

/// One parsed element of an extension list: a name and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extension {
    pub(crate) name: String,
    pub(crate) params: Vec<(String, Option<String>)>,
}

/// Parses a `Sec-WebSocket-Extensions` value (`1#extension`; extension =
/// token *( ";" token [ "=" ( token / quoted-string ) ] )). `None` if the
/// value is not well formed.
pub(crate) fn parse_extensions(value: &[u8]) -> Option<Vec<Extension>> {
    let value = std::str::from_utf8(value).ok()?;
    let mut out = Vec::new();
    for element in split_outside_quotes(value, ',')? {
        let element = element.trim_matches(is_ows);
        if element.is_empty() {
            // `1#` lists allow empty elements ("a, , b").
            continue;
        }
        let mut items = split_outside_quotes(element, ';')?.into_iter();
        let name = items.next()?.trim_matches(is_ows);
        if !is_token(name) {
            return None;
        }
        let mut params = Vec::new();
        for item in items {
            let item = item.trim_matches(is_ows);
            let (key, val) = match item.split_once('=') {
                None => (item, None),
                Some((k, v)) => (k.trim_matches(is_ows), Some(param_value(v)?)),
            };
            if !is_token(key) {
                return None;
            }
            params.push((key.to_ascii_lowercase(), val));
        }
        out.push(Extension {
            name: name.to_ascii_lowercase(),
            params,
        });
    }
    Some(out)
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A parameter value: a token or a quoted string (unescaped).
fn param_value(v: &str) -> Option<String> {
    let v = v.trim_matches(is_ows);
    if let Some(inner) = v.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return None,
                c => out.push(c),
            }
        }
        // RFC 6455 9.1: a quoted value must still be a token once unquoted.
        is_token(&out).then_some(out)
    } else {
        is_token(v).then(|| v.to_owned())
    }
}

/// Splits on `sep` outside quoted strings; `None` on an unterminated quote.
fn split_outside_quotes(s: &str, sep: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    if quoted || escaped {
        return None;
    }
    parts.push(&s[start..]);
    Some(parts)
}

/// A window-bits value: a decimal integer 8..=15 without leading zeros.
fn parse_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = v.parse().ok()?;
    (8..=MAX_WINDOW_BITS).contains(&bits).then_some(bits)
}

/// One permessage-deflate offer (or answer) with its four parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeflateOffer {
    /// `server_no_context_takeover`.
    pub server_no_context_takeover: bool,
    /// `client_no_context_takeover`.
    pub client_no_context_takeover: bool,
    /// `server_max_window_bits=N` (8 to 15).
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits`: `Some(None)` without a value, `Some(Some(N))`
    /// with one.
    pub client_max_window_bits: Option<Option<u8>>,
}

impl DeflateOffer {
    /// Reads the parameters of one `permessage-deflate` element. `None` if
    /// a parameter is unknown, duplicated, or has an invalid value (RFC 7692
    /// section 7: such an offer is declined, such an answer fails).
    pub(crate) fn from_params(params: &[(String, Option<String>)]) -> Option<Self> {
        let mut offer = Self::default();
        let mut seen = [false; 4];
        for (key, value) in params {
            let slot = match key.as_str() {
                "server_no_context_takeover" => 0,
                "client_no_context_takeover" => 1,
                "server_max_window_bits" => 2,
                "client_max_window_bits" => 3,
                _ => return None,
            };
            if std::mem::replace(&mut seen[slot], true) {
                return None;
            }
            match (slot, value) {
                (0, None) => offer.server_no_context_takeover = true,
                (1, None) => offer.client_no_context_takeover = true,
                (2, Some(v)) => offer.server_max_window_bits = Some(parse_bits(v)?),
                (3, None) => offer.client_max_window_bits = Some(None),
                (3, Some(v)) => offer.client_max_window_bits = Some(Some(parse_bits(v)?)),
                _ => return None,
            }
        }
        Some(offer)
    }

    /// Every well-formed `permessage-deflate` offer in the header values, in
    /// order; malformed ones are left out (declined).
    pub fn parse_offers<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<Self> {
        values
            .into_iter()
            .filter_map(parse_extensions)
            .flatten()
            .filter(|e| e.name == EXTENSION_NAME)
            .filter_map(|e| Self::from_params(&e.params))
            .collect()
    }

    /// The header element for this offer or answer.
    pub fn to_header(&self) -> String {
        let mut s = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            s.push_str(&format!("; server_max_window_bits={bits}"));
        }
        match self.client_max_window_bits {
            Some(Some(bits)) => s.push_str(&format!("; client_max_window_bits={bits}")),
            Some(None) => s.push_str("; client_max_window_bits"),
            None => {}
        }
        s
    }
}

/// zlib cannot deflate with a 256-byte window, so 8 is served as 9.
fn usable_bits(bits: u8) -> u8 {
    bits.max(MIN_WINDOW_BITS)
}

impl DeflateConfig {
    /// Server: picks the first offer it can accept. Returns the negotiated
    /// parameters and the answer for `Sec-WebSocket-Extensions`.
    ///
    /// In [`DeflateMode::Shared`] the answer always carries
    /// `server_no_context_takeover` and `client_no_context_takeover` (RFC
    /// 7692 lets a server add both), so neither side keeps a context
    /// between messages. In [`DeflateMode::Dedicated`] both directions keep
    /// their context unless the client asked otherwise, and windows are
    /// capped at the configured bits where the offer lets the server say so.
    pub fn accept_offers(&self, offers: &[DeflateOffer]) -> Option<(DeflateParams, String)> {
        // Every well-formed offer is acceptable: each parameter is one the
        // server can honour (a requested server window of 8 is served as 9).
        let offer = offers.first()?;
        let mut answer = DeflateOffer {
            server_no_context_takeover: offer.server_no_context_takeover,
            client_no_context_takeover: offer.client_no_context_takeover,
            server_max_window_bits: offer.server_max_window_bits.map(usable_bits),
            client_max_window_bits: None,
        };
        match self.mode {
            DeflateMode::Shared => {
                answer.server_no_context_takeover = true;
                answer.client_no_context_takeover = true;
            }
            DeflateMode::Dedicated { window_bits } => {
                answer.server_max_window_bits = offer
                    .server_max_window_bits
                    .map(|b| usable_bits(b.min(window_bits)));
                if let Some(limit) = offer.client_max_window_bits {
                    let bits = limit.map_or(window_bits, |l| l.min(window_bits));
                    answer.client_max_window_bits = Some(Some(usable_bits(bits)));
                }
            }
        }
        let params = DeflateParams::from_answer(&answer);
        Some((params, answer.to_header()))
    }

    /// Client: the offers to send, most wanted first.
    ///
    /// [`DeflateMode::Shared`] asks for no context takeover in both
    /// directions, then falls back to an offer without
    /// `server_no_context_takeover` (then the inflater has to persist).
    /// [`DeflateMode::Dedicated`] asks the server to cap its window.
    pub fn client_offers(&self) -> Vec<DeflateOffer> {
        match self.mode {
            DeflateMode::Shared => vec![
                DeflateOffer {
                    server_no_context_takeover: true,
                    client_no_context_takeover: true,
                    server_max_window_bits: None,
                    client_max_window_bits: Some(None),
                },
                DeflateOffer {
                    server_no_context_takeover: false,
                    client_no_context_takeover: true,
                    server_max_window_bits: None,
                    client_max_window_bits: Some(None),
                },
            ],
            DeflateMode::Dedicated { window_bits } => vec![DeflateOffer {
                server_no_context_takeover: false,
                client_no_context_takeover: false,
                server_max_window_bits: Some(window_bits),
                client_max_window_bits: Some(None),
            }],
        }
    }

    /// The `Sec-WebSocket-Extensions` value a client sends.
    pub fn client_offer_header(&self) -> String {
        self.client_offers()
            .iter()
            .map(DeflateOffer::to_header)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Client: checks the server's `Sec-WebSocket-Extensions` answer (all
    /// header values). No value means no extension; anything the client
    /// did not offer fails the handshake.
    pub fn check_answer<'a>(
        &self,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Option<DeflateParams>, HandshakeError> {
        let mut found = None;
        for value in values {
            let extensions = parse_extensions(value).ok_or(HandshakeError::InvalidExtension(
                "malformed Sec-WebSocket-Extensions",
            ))?;
            for ext in extensions {
                if ext.name != EXTENSION_NAME {
                    return Err(HandshakeError::UnofferedExtension);
                }
                if found.is_some() {
                    return Err(HandshakeError::InvalidExtension(
                        "permessage-deflate answered twice",
                    ));
                }
                let answer = DeflateOffer::from_params(&ext.params).ok_or(
                    HandshakeError::InvalidExtension("invalid permessage-deflate parameter"),
                )?;
                if matches!(answer.client_max_window_bits, Some(None)) {
                    return Err(HandshakeError::InvalidExtension(
                        "client_max_window_bits without a value",
                    ));
                }
                if !self.client_offers().iter().any(|o| allows(o, &answer)) {
                    return Err(HandshakeError::InvalidExtension(
                        "permessage-deflate answer does not match the offer",
                    ));
                }
                found = Some(DeflateParams::from_answer(&answer));
            }
        }
        Ok(found)
    }
}

/// Whether `answer` accepts `offer` (RFC 7692 sections 7.1.1 and 7.1.2).
fn allows(offer: &DeflateOffer, answer: &DeflateOffer) -> bool {
    // A requested server_no_context_takeover must be in the answer.
    if offer.server_no_context_takeover && !answer.server_no_context_takeover {
        return false;
    }
    // A requested server window must be answered with one at most as big.
    if let Some(limit) = offer.server_max_window_bits {
        match answer.server_max_window_bits {
            Some(bits) if bits <= limit => {}
            _ => return false,
        }
    }
    // client_max_window_bits only if offered, and within the offered value.
    match (offer.client_max_window_bits, answer.client_max_window_bits) {
        (None, Some(_)) => false,
        (Some(Some(limit)), Some(Some(bits))) => bits <= limit,
        _ => true,
    }
}

impl DeflateParams {
    /// The parameters an answer puts in force (absent windows are 15).
    pub(crate) fn from_answer(answer: &DeflateOffer) -> Self {
        Self {
            server_no_context_takeover: answer.server_no_context_takeover,
            client_no_context_takeover: answer.client_no_context_takeover,
            server_max_window_bits: answer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
            client_max_window_bits: answer
                .client_max_window_bits
                .flatten()
                .unwrap_or(MAX_WINDOW_BITS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(value: &str) -> Vec<DeflateOffer> {
        DeflateOffer::parse_offers([value.as_bytes()])
    }

    #[test]
    fn parses_alternatives_and_every_parameter() {
        let got = offers(
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10, \
             permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             client_max_window_bits=\"12\", x-webkit-deflate-frame, permessage-deflate",
        );
        assert_eq!(
            got,
            [
                DeflateOffer {
                    client_max_window_bits: Some(None),
                    server_max_window_bits: Some(10),
                    ..Default::default()
                },
                DeflateOffer {
                    server_no_context_takeover: true,
                    client_no_context_takeover: true,
                    client_max_window_bits: Some(Some(12)),
                    ..Default::default()
                },
                DeflateOffer::default(),
            ]
        );
    }

    #[test]
    fn malformed_or_duplicated_offers_are_declined() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; unknown_parameter",
            "permessage-deflate; client_max_window_bits=\"1 0\"",
        ] {
            assert_eq!(offers(bad), [], "{bad}");
        }
        // A malformed alternative is skipped; the next one is still seen.
        assert_eq!(
            offers("permessage-deflate; foo, permessage-deflate").len(),
            1
        );
        // An unparseable header declines everything in it.
        assert_eq!(offers("permessage-deflate; a=\"unterminated"), []);
    }

    #[test]
    fn shared_server_mode_turns_off_takeover_both_ways() {
        let config = DeflateConfig::default();
        let (params, header) = config
            .accept_offers(&offers("permessage-deflate; client_max_window_bits"))
            .unwrap();
        assert_eq!(
            header,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(params.server_no_context_takeover && params.client_no_context_takeover);
        assert_eq!(
            (params.server_max_window_bits, params.client_max_window_bits),
            (15, 15)
        );
    }

    #[test]
    fn a_requested_window_of_8_is_served_as_9() {
        let config = DeflateConfig::default();
        let (params, header) = config
            .accept_offers(&offers("permessage-deflate; server_max_window_bits=8"))
            .unwrap();
        assert!(header.contains("server_max_window_bits=9"), "{header}");
        assert_eq!(params.server_max_window_bits, 9);
    }

    #[test]
    fn dedicated_mode_caps_windows_it_may_name() {
        let config = DeflateConfig::dedicated(10);
        let (params, header) = config
            .accept_offers(&offers(
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits",
            ))
            .unwrap();
        assert_eq!(
            header,
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10"
        );
        assert!(!params.server_no_context_takeover && !params.client_no_context_takeover);
        // Without client_max_window_bits in the offer, the server may not name it.
        let (params, header) = config.accept_offers(&offers("permessage-deflate")).unwrap();
        assert_eq!(header, "permessage-deflate");
        assert_eq!(params.client_max_window_bits, 15);
    }

    #[test]
    fn client_accepts_what_it_allowed_and_fails_the_rest() {
        let shared = DeflateConfig::default();
        let check = |c: &DeflateConfig, v: &str| c.check_answer([v.as_bytes()]);
        assert_eq!(check(&shared, ""), Ok(None));
        let ok = check(
            &shared,
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
        )
        .unwrap()
        .unwrap();
        assert_eq!(ok.client_max_window_bits, 10);
        // The fallback offer: the server keeps its context.
        assert!(check(&shared, "permessage-deflate").unwrap().is_some());
        for bad in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; mystery",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate, permessage-deflate",
            "x-webkit-deflate-frame",
            "permessage-deflate; a=\"",
        ] {
            assert!(check(&shared, bad).is_err(), "{bad}");
        }
        let dedicated = DeflateConfig::dedicated(11);
        assert!(check(&dedicated, "permessage-deflate; server_max_window_bits=11").is_ok());
        assert!(check(&dedicated, "permessage-deflate; server_max_window_bits=12").is_err());
        // It asked for a server window, so an answer without one is refused.
        assert!(check(&dedicated, "permessage-deflate").is_err());
    }
}
