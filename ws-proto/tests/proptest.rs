//! Property tests, built on the crate's public strategies
//! (`ws_proto::strategies`, feature `proptest`): round trips in both roles
//! under any fragmentation and any chunking of the byte stream; valid frame
//! streams give exactly their events; arbitrary bytes and arbitrary frames
//! never panic and never buffer past the configured limits.
// Tests own the clock: a real `Instant` is only the base of virtual time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Instant;

use proptest::prelude::*;
use support::*;
use ws_proto::strategies::{
    Chunking, arbitrary_frames, chunking, encode_frames, fragment_size, frame_stream, outgoing,
};
use ws_proto::{AcceptOptions, CloseCode, Config, Connection, Event, Role};

/// Feeds `wire` to `to` in the given chunking.
fn feed_chunked(to: &mut Connection, wire: &[u8], chunks: &Chunking, now: Instant) {
    for piece in chunks.split(wire) {
        to.handle_data(now, piece);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn messages_round_trip_in_both_roles(
        ops in proptest::collection::vec(outgoing(), 0..12),
        fragment in fragment_size(),
        chunks in chunking(5000),
        client_sends in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut config = Config::default();
        config.fragment_size = fragment;
        config.auto_pong = false;
        let (mut c, mut s) = open_pair(config.clone(), config, now);
        let (from, to) = if client_sends { (&mut c, &mut s) } else { (&mut s, &mut c) };
        for op in &ops {
            op.send(from).unwrap();
        }
        from.close(now, CloseCode::NORMAL, "done").unwrap();
        feed_chunked(to, &transmit(from), &chunks, now);
        let mut expected: Vec<Event> = ops.iter().map(|op| op.event()).collect();
        expected.push(Event::Closed { code: CloseCode::NORMAL, reason: "done".into(), clean: true });
        prop_assert_eq!(drain(to), expected);
        // The echoed close completes the handshake on the sender too.
        feed_chunked(from, &transmit(to), &chunks, now);
        let last = drain(from);
        prop_assert!(matches!(last.as_slice(), [Event::Closed { clean: true, .. }]), "{:?}", last);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        chunks in chunking(600),
        as_server in any::<bool>(),
        after_handshake in any::<bool>(),
    ) {
        let now = Instant::now();
        let config = small_limits();
        let mut conn = match (as_server, after_handshake) {
            (true, true) => open_server(config, now),
            (true, false) => Connection::server(config, now).unwrap(),
            (false, true) => open_pair(config, Config::default(), now).0,
            (false, false) => client(config, now),
        };
        feed_checked(&mut conn, &data, &chunks, now)?;
    }

    /// A valid frame stream (fragments, pings and pongs between them,
    /// masked as its sender must) gives exactly its events, in either
    /// role and under any chunking.
    #[test]
    fn frame_streams_give_their_events(
        stream in frame_stream(Role::Client),
        reply in frame_stream(Role::Server),
        chunks in chunking(2000),
        auto_pong in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut config = Config::default();
        config.auto_pong = auto_pong;
        let (mut c, mut s) = open_pair(config.clone(), config, now);
        feed_chunked(&mut s, &stream.encode(), &chunks, now);
        prop_assert_eq!(drain(&mut s), stream.events);
        feed_chunked(&mut c, &reply.encode(), &chunks, now);
        prop_assert_eq!(drain(&mut c), reply.events);
        prop_assert!(!s.is_closed() && !c.is_closed());
    }

    /// Streams of frames with violations anywhere never panic, stay within
    /// the limits, and end closed.
    #[test]
    fn arbitrary_frames_never_panic_and_stay_bounded(
        frames in arbitrary_frames(12),
        chunks in chunking(600),
        as_server in any::<bool>(),
    ) {
        let now = Instant::now();
        let config = small_limits();
        let mut conn = if as_server {
            open_server(config, now)
        } else {
            open_pair(config, Config::default(), now).0
        };
        feed_checked(&mut conn, &encode_frames(&frames), &chunks, now)?;
    }
}

/// Small limits so that arbitrary input reaches them; either masking
/// accepted so that more input gets past the header checks.
fn small_limits() -> Config {
    let mut config = Config::default();
    config.max_frame_size = 512;
    config.max_message_size = 1024;
    config.max_handshake_size = 1024;
    config.strict_masking = false;
    config
}

/// Feeds `data` in `chunks`, accepting any request and discarding output,
/// and checks after every read that the buffered input stays bounded; then
/// ends the stream and checks the connection closed.
fn feed_checked(
    conn: &mut Connection,
    data: &[u8],
    chunks: &Chunking,
    now: Instant,
) -> Result<(), TestCaseError> {
    let config = conn.config().clone();
    // One unfinished frame (header + payload) or handshake head, plus one
    // unfinished message, plus one read.
    let max_read = chunks.sizes().iter().max().copied().unwrap_or(1);
    let bound = config.max_frame_size.max(config.max_handshake_size)
        + 14
        + config.max_message_size
        + max_read;
    for piece in chunks.split(data) {
        conn.handle_data(now, piece);
        while let Some(e) = conn.poll_event() {
            if matches!(e, Event::Request(_)) {
                let _ = conn.accept(AcceptOptions::default());
            }
        }
        let _ = transmit(conn);
        prop_assert!(
            conn.buffered_inbound() <= bound,
            "{} > {}",
            conn.buffered_inbound(),
            bound
        );
    }
    conn.handle_eof(now);
    while conn.poll_event().is_some() {}
    prop_assert!(conn.is_closed());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The incremental validator agrees with `std::str::from_utf8` for any
    /// bytes split anywhere, and fails in the piece holding the first bad
    /// byte (fail fast), never later.
    #[test]
    fn incremental_utf8_matches_std_and_fails_fast(
        text in ".{0,40}",
        noise in proptest::collection::vec(any::<u8>(), 0..6),
        at in any::<proptest::sample::Index>(),
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..5),
    ) {
        let mut bytes = text.into_bytes();
        let pos = at.index(bytes.len() + 1);
        bytes.splice(pos..pos, noise);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let expected = std::str::from_utf8(&bytes);
        let ends: Vec<usize> = points.into_iter().chain(std::iter::once(bytes.len())).collect();
        let mut v = ws_proto::utf8::Utf8Validator::new();
        let mut prev = 0;
        let mut failed_at = None;
        for &end in &ends {
            if v.feed(&bytes[prev..end]).is_err() {
                failed_at = Some(end);
                break;
            }
            prev = end;
        }
        match expected {
            Ok(_) => prop_assert!(failed_at.is_none() && v.is_complete()),
            Err(e) => match e.error_len() {
                // Invalid bytes: caught in the piece that holds them.
                Some(len) => {
                    let first_bad = e.valid_up_to();
                    // The invalid sequence is `len` bytes at `first_bad`; the
                    // byte after it (if any) is what reveals a cut-short
                    // sequence. The first piece that holds that byte must fail.
                    let reveal = (first_bad + len + 1).min(bytes.len());
                    let by = ends.iter().copied().find(|&end| end >= reveal);
                    prop_assert!(
                        failed_at.is_some_and(|end| end > first_bad && Some(end) <= by),
                        "failed at {:?}, must fail after {} and by {:?}", failed_at, first_bad, by
                    );
                }
                // Cut short at the end: only the end-of-message check fails.
                None => prop_assert!(failed_at.is_none() && !v.is_complete()),
            },
        }
    }
}
