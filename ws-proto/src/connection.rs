//! [`Connection`]: one WebSocket endpoint, from the first handshake byte to
//! the end of the close handshake.

use std::io::IoSlice;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use crate::config::Config;
use crate::deflate::{Compressor, DeflateOffer, DeflateParams, DeflateState};
use crate::error::{ConfigError, Error, HandshakeError, ProtocolError, SendError};
use crate::event_queue::EventQueue;
use crate::frame::{
    CloseCode, FrameHeader, MAX_CLOSE_REASON, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode,
    PreparedBody, PreparedFrame, apply_mask, close_payload, parse_close_payload, stored_blocks,
    truncate_reason,
};
use crate::handshake::client::parse_response;
use crate::handshake::request::AcceptKey;
use crate::handshake::response::encode_switching;
use crate::handshake::{AcceptOptions, ClientRequest, HttpResponse, Request, find_head_end};
use crate::mask_keys::MaskKeySource;
use crate::message::{Event, Message, Utf8Bytes};
use crate::outbound::Outbound;
use crate::utf8::Utf8Validator;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts the handshake; receives masked frames, sends unmasked ones.
    Server,
    /// Starts the handshake; masks every frame it sends.
    Client,
}

/// The connection's state, as RFC 6455 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The opening handshake is in progress.
    Connecting,
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// Finished: drain `poll_transmit`, then close the transport.
    Closed,
}

/// Internal phases; every transition is in this file.
enum Phase {
    /// Server: reading the request head.
    AwaitRequest,
    /// Server: the request was handed to the application; waiting for
    /// `accept`, `reject` or `respond`.
    AwaitAnswer(Box<PendingRequest>),
    /// Client: request sent, reading the response head.
    AwaitResponse(Box<ClientRequest>),
    Open,
    CloseSent,
    Closed,
}

/// How far `Connection::read_frames` decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// Until a frame produces an event (the normal read path).
    UntilEvent,
    /// Every complete frame in the buffer (at end of stream, where frames
    /// that arrived whole still count).
    All,
}

/// Whether `Connection::fail` answers on the wire before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Tell the peer: a close frame with the matching code once open, an
    /// HTTP error response while awaiting the request.
    Tell,
    /// Close without a word (the peer is gone or timed out, or there is
    /// nothing to answer).
    Silent,
}

struct PendingRequest {
    accept: Result<AcceptKey, HandshakeError>,
    protocols: Vec<String>,
    deflate_offers: Vec<DeflateOffer>,
}

/// The frame whose header has been read and whose payload is arriving.
#[derive(Clone, Copy)]
struct InFrame {
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    len: usize,
    /// Payload bytes already unmasked and validated, at the front of `read`.
    done: usize,
    /// Whether the payload is text to validate as it arrives.
    text: bool,
    /// Whether the payload is compressed data of the message in
    /// `Connection::message`, inflated as it arrives.
    compressed: bool,
}

/// A fragmented or compressed message being reassembled (a compressed
/// one holds the inflated bytes).
struct Assembly {
    opcode: OpCode,
    data: Vec<u8>,
    compressed: bool,
}

/// A WebSocket connection as a pure state machine: bytes and time in,
/// events and bytes out. It never touches a socket or a clock.
///
/// Methods come in four groups (after quinn-proto):
///
/// - **Getters** (`&self`): [`state`](Self::state), [`role`](Self::role),
///   [`is_closed`](Self::is_closed), [`buffered_inbound`](Self::buffered_inbound),
///   [`buffered_outbound`](Self::buffered_outbound), [`wants_read`](Self::wants_read).
/// - **Inputs**: [`handle_data`](Self::handle_data) (or
///   [`read_buf`](Self::read_buf) + [`handle_read`](Self::handle_read) to
///   read straight into the connection's buffer),
///   [`handle_eof`](Self::handle_eof), [`handle_timeout`](Self::handle_timeout).
/// - **Commands**: [`accept`](Self::accept), [`reject`](Self::reject),
///   [`respond`](Self::respond), [`send`](Self::send),
///   [`send_prepared`](Self::send_prepared), [`ping`](Self::ping),
///   [`pong`](Self::pong), [`close`](Self::close). Each returns
///   `Err(SendError)` when it does not fit the state, and changes nothing then.
/// - **Outputs**: [`poll_transmit`](Self::poll_transmit) (or
///   [`poll_transmit_chunk`](Self::poll_transmit_chunk), or
///   [`transmit_slices`](Self::transmit_slices) +
///   [`consume_transmit`](Self::consume_transmit)),
///   [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
///
/// # Contract
///
/// After every input or command, the caller SHOULD drain `poll_event`
/// (received frames are decoded there, one event at a time, and decoding
/// may queue an automatic pong or a close frame), then MUST write out what
/// `poll_transmit` yields (in order), and MUST re-read `poll_timeout` and
/// arm its timer for that instant. A caller that stops draining events
/// also stops decoding: input then waits in the receive buffer
/// (`wants_read` turns false), which is the backpressure point. `now` MUST
/// never go backwards; extra `handle_timeout` calls are harmless. Any
/// chunking of the same input bytes yields the same events.
///
/// A peer's protocol violation is never an `Err`: the connection queues a
/// close frame with the right code (1002, 1007, 1009), reports
/// [`Event::Error`] then [`Event::Closed`], and ignores further input.
pub struct Connection {
    role: Role,
    config: Config,
    phase: Phase,
    /// Received bytes not yet consumed.
    read: BytesMut,
    /// How far the handshake head has been scanned for its end.
    scanned: usize,
    frame: Option<InFrame>,
    /// Boxed: fragmented messages are the exception.
    message: Option<Box<Assembly>>,
    utf8: Utf8Validator,
    out: Outbound,
    events: EventQueue,
    deadline: Option<Instant>,
    mask_keys: Option<Box<dyn MaskKeySource>>,
    /// permessage-deflate, once negotiated. Boxed: one pointer when off.
    deflate: Option<Box<DeflateState>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state())
            .field("buffered_inbound", &self.buffered_inbound())
            .field("buffered_outbound", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A server connection waiting for the client's request. The handshake
    /// deadline counts from `now`.
    pub fn server(config: Config, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let deadline = config.handshake_timeout.map(|t| now + t);
        Ok(Self::new(
            Role::Server,
            config,
            Phase::AwaitRequest,
            deadline,
            None,
        ))
    }

    /// A client connection; its request is queued for `poll_transmit` at
    /// once. Masking keys come from `mask_keys`, which the caller seeds.
    pub fn client(
        config: Config,
        request: ClientRequest,
        mask_keys: Box<dyn MaskKeySource>,
        now: Instant,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        let deadline = config.handshake_timeout.map(|t| now + t);
        let mut conn = Self::new(
            Role::Client,
            config,
            Phase::Closed,
            deadline,
            Some(mask_keys),
        );
        let tail_before = conn.out.tail().len();
        let deflate = conn.config.deflate;
        request.encode(conn.out.tail(), deflate.as_ref())?;
        let written = conn.out.tail().len() - tail_before;
        conn.out.commit(written);
        conn.phase = Phase::AwaitResponse(Box::new(request));
        Ok(conn)
    }

    fn new(
        role: Role,
        config: Config,
        phase: Phase,
        deadline: Option<Instant>,
        mask_keys: Option<Box<dyn MaskKeySource>>,
    ) -> Self {
        Self {
            role,
            config,
            phase,
            read: BytesMut::new(),
            scanned: 0,
            frame: None,
            message: None,
            utf8: Utf8Validator::new(),
            out: Outbound::default(),
            events: EventQueue::default(),
            deadline,
            mask_keys,
            deflate: None,
        }
    }

    // ----- (A) getters -----

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::AwaitRequest | Phase::AwaitAnswer(_) | Phase::AwaitResponse(_) => {
                State::Connecting
            }
            Phase::Open => State::Open,
            Phase::CloseSent => State::Closing,
            Phase::Closed => State::Closed,
        }
    }

    /// Whether the connection is finished (events and transmit may still
    /// hold the last items).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The permessage-deflate parameters in force, if it was negotiated.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref().map(|d| &d.params)
    }

    /// Whether a compression context is allocated right now (a compressor
    /// kept for context takeover, or an inflater kept for it or for a
    /// compressed message being received). Always false for an idle
    /// connection in [`crate::DeflateMode::Shared`].
    pub fn holds_deflate_context(&self) -> bool {
        self.deflate
            .as_ref()
            .is_some_and(|d| d.deflater.is_some() || d.inflater.is_some())
    }

    /// Received bytes held: the unfinished frame plus an unfinished
    /// fragmented message. Bounded by the configured limits.
    pub fn buffered_inbound(&self) -> usize {
        self.read.len() + self.message.as_ref().map_or(0, |m| m.data.len())
    }

    /// Bytes queued for the transport.
    pub fn buffered_outbound(&self) -> usize {
        self.out.len()
    }

    /// Whether the connection can use more input now. False while events
    /// are waiting to be polled, while a server waits for the application
    /// to answer the request, and once closed.
    pub fn wants_read(&self) -> bool {
        self.events.is_empty()
            && matches!(
                self.phase,
                Phase::AwaitRequest | Phase::AwaitResponse(_) | Phase::Open | Phase::CloseSent
            )
    }

    /// How many bytes a read should make room for: the rest of the frame
    /// being received, between 4 KiB and 1 MiB.
    pub fn read_hint(&self) -> usize {
        let remaining = self
            .frame
            .map_or(0, |f| f.len.saturating_sub(self.read.len()));
        (remaining + MAX_HEADER_LEN).clamp(4096, 1 << 20)
    }

    /// Frees buffer capacity that holds no data (receive buffer, outbound
    /// buffer, event queue), so an idle connection costs only its state.
    /// Call when the transport has nothing to read; the next input
    /// allocates again.
    pub fn release_idle_buffers(&mut self) {
        // An empty buffer may still pin the allocation its last frame was
        // split from (its own capacity is then 0): drop it regardless.
        if self.read.is_empty() {
            self.read = BytesMut::new();
        }
        self.events.release_if_empty();
        self.out.release_if_empty();
    }

    // ----- (B) inputs -----

    /// Feeds bytes read from the transport.
    pub fn handle_data(&mut self, now: Instant, data: &[u8]) {
        if !self.wants_input() {
            return;
        }
        self.read.extend_from_slice(data);
        self.handle_read(now);
    }

    /// The receive buffer, for reading from the transport without a copy.
    /// Append bytes to it (e.g. with `read_buf`), then call
    /// [`Connection::handle_read`]. Do not remove bytes from it.
    pub fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.read
    }

    /// Processes bytes appended to [`Connection::read_buf`].
    pub fn handle_read(&mut self, now: Instant) {
        self.handle_timeout(now);
        match &self.phase {
            Phase::AwaitRequest => self.read_request(),
            Phase::AwaitResponse(_) => self.read_response(),
            Phase::Open | Phase::CloseSent => self.read_frames(Decode::UntilEvent),
            Phase::AwaitAnswer(_) => {}
            Phase::Closed => self.read.clear(),
        }
    }

    /// The transport reached end of stream.
    pub fn handle_eof(&mut self, _now: Instant) {
        match self.phase {
            Phase::Closed => {}
            Phase::AwaitRequest | Phase::AwaitAnswer(_) | Phase::AwaitResponse(_) => {
                self.fail(HandshakeError::Eof.into(), Answer::Silent);
            }
            Phase::Open | Phase::CloseSent => {
                // Frames that arrived complete before the end still count.
                self.read_frames(Decode::All);
                if !self.is_closed() {
                    self.finish(CloseCode::ABNORMAL, String::new(), false);
                }
            }
        }
    }

    /// Time passed; acts on an expired handshake or close deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_none_or(|d| now < d) {
            return;
        }
        self.deadline = None;
        match self.phase {
            Phase::AwaitRequest | Phase::AwaitAnswer(_) | Phase::AwaitResponse(_) => {
                self.fail(HandshakeError::Timeout.into(), Answer::Silent);
            }
            Phase::CloseSent => self.fail(Error::CloseTimeout, Answer::Silent),
            Phase::Open | Phase::Closed => {}
        }
    }

    // ----- (C) commands -----

    /// Server: accepts the pending upgrade request and writes the 101
    /// response. Bytes that followed the request are processed now, so
    /// events may be ready afterwards.
    pub fn accept(&mut self, options: AcceptOptions) -> Result<(), SendError> {
        let Phase::AwaitAnswer(pending) = &self.phase else {
            return Err(SendError::NoPendingRequest);
        };
        let accept = pending
            .accept
            .as_ref()
            .map_err(|e| SendError::NotUpgradable(e.clone()))?;
        if let Some(p) = &options.protocol
            && !pending.protocols.contains(p)
        {
            return Err(SendError::UnofferedProtocol(p.clone()));
        }
        let negotiated = match self.config.deflate {
            Some(config) if !options.decline_deflate => config
                .accept_offers(&pending.deflate_offers)
                .map(|(params, answer)| (DeflateState::new(params, config, true), answer)),
            _ => None,
        };
        let answer = negotiated.as_ref().map(|(_, a)| a.as_str());
        // Encoded straight into the outbound queue.
        self.out.reserve_tail(256);
        let before = self.out.tail().len();
        encode_switching(self.out.tail(), accept.as_str(), &options, answer)?;
        let written = self.out.tail().len() - before;
        self.out.commit(written);
        self.deflate = negotiated.map(|(state, _)| Box::new(state));
        self.phase = Phase::Open;
        self.deadline = None;
        self.read_frames(Decode::UntilEvent);
        Ok(())
    }

    /// Server: refuses the pending request with an HTTP status and a
    /// plain-text reason; the connection is then closed.
    pub fn reject(&mut self, status: u16, reason: &str) -> Result<(), SendError> {
        self.respond(HttpResponse::text(status, format!("{reason}\n")))
    }

    /// Server: answers the pending request with any HTTP response (a
    /// rejection, or plain HTTP such as a health check on the same port);
    /// the connection is then closed. No event follows: drain
    /// `poll_transmit`, then close the transport.
    pub fn respond(&mut self, response: HttpResponse) -> Result<(), SendError> {
        if !matches!(self.phase, Phase::AwaitAnswer(_)) {
            return Err(SendError::NoPendingRequest);
        }
        let mut buf = Vec::with_capacity(128 + response.body.len());
        response.encode(&mut buf)?;
        self.out.push_shared(&Bytes::from(buf));
        self.enter_closed();
        Ok(())
    }

    /// Sends a message (fragmented if `fragment_size` is set).
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        self.check_open()?;
        // Moved, not cloned: cloning a `Bytes` that owns its buffer
        // uniquely allocates a shared header for it.
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::Text, t.into_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        self.encode_message(opcode, std::slice::from_ref(&payload));
        Ok(())
    }

    /// Sends one text message whose payload is the concatenation of
    /// `parts`, without joining them first: on a server, large parts are
    /// queued by reference. Each part must be valid UTF-8 on its own.
    pub fn send_text_parts(&mut self, parts: &[Utf8Bytes]) -> Result<(), SendError> {
        self.check_open()?;
        let parts: Vec<Bytes> = parts.iter().map(|p| p.as_bytes().clone()).collect();
        self.encode_message(OpCode::Text, &parts);
        Ok(())
    }

    /// Sends one text message whose payload is the concatenation of
    /// `parts`, queued without copying large parts. The caller promises
    /// the concatenation is UTF-8 (for instance JSON it serialised); it is
    /// not re-checked, and a wrong promise makes the peer close with 1007.
    pub fn send_text_bytes(&mut self, parts: &[Bytes]) -> Result<(), SendError> {
        self.check_open()?;
        self.encode_message(OpCode::Text, parts);
        Ok(())
    }

    /// Server: queues a frame encoded once for many connections; the
    /// payload is shared, not copied. A frame with a compressed form
    /// ([`PreparedFrame::with_deflate`]) goes out compressed, still shared,
    /// to a connection that negotiated no server context takeover and a
    /// window at least as large as the compressor's; other connections get
    /// the plain form.
    pub fn send_prepared(&mut self, frame: &PreparedFrame) -> Result<(), SendError> {
        if self.role == Role::Client {
            return Err(SendError::PreparedFrameOnClient);
        }
        self.check_open()?;
        let len = frame.payload().len();
        let (header, payload) = match frame.deflated() {
            Some((bits, header, payload))
                if self
                    .deflate
                    .as_ref()
                    .is_some_and(|d| d.accepts_shared(bits, len)) =>
            {
                (header, payload)
            }
            _ => (frame.header(), frame.payload()),
        };
        self.out.push_shared(header);
        self.out.push_shared(payload);
        Ok(())
    }

    /// Sends one text message: `head` (per connection, may be empty)
    /// followed by the shared `body`. The caller promises the two together
    /// are UTF-8. With permessage-deflate and no context takeover for our
    /// direction, a body with a compressed form goes out as the head in a
    /// stored block plus those shared compressed bytes ([`PreparedBody`]);
    /// otherwise as [`Connection::send_text_bytes`] would send it.
    pub fn send_text_with_body(
        &mut self,
        head: &Bytes,
        body: &PreparedBody,
    ) -> Result<(), SendError> {
        self.check_open()?;
        let len = head.len() + body.plain().len();
        if let Some((bits, compressed)) = body.deflated()
            && self
                .deflate
                .as_ref()
                .is_some_and(|d| d.accepts_shared(bits, len))
        {
            let mut stored = BytesMut::with_capacity(head.len() + 5);
            stored_blocks(head, &mut stored);
            self.encode_payload(OpCode::Text, true, &[stored.freeze(), compressed.clone()]);
            return Ok(());
        }
        self.encode_message(OpCode::Text, &[head.clone(), body.plain().clone()]);
        Ok(())
    }

    /// Sends a message, compressing it (when permessage-deflate without
    /// context takeover for our direction was negotiated and the message
    /// reaches the threshold) with the caller's shared `compressor`
    /// instead of a context of the connection's own. Otherwise the same as
    /// [`Connection::send`].
    pub fn send_with(
        &mut self,
        message: Message,
        compressor: &mut Compressor,
    ) -> Result<(), SendError> {
        self.check_open()?;
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::Text, t.into_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        let shared = self
            .deflate
            .as_ref()
            .is_some_and(|d| d.accepts_shared(compressor.window_bits(), payload.len()));
        if shared {
            let compressed = compressor.compress(&payload);
            self.encode_payload(opcode, true, &[compressed]);
        } else {
            self.encode_message(opcode, &[payload]);
        }
        Ok(())
    }

    /// Sends a ping (payload at most 125 bytes).
    pub fn ping(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// Sends an unsolicited pong (payload at most 125 bytes).
    pub fn pong(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload)
    }

    fn send_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), SendError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlTooLong(payload.len()));
        }
        self.check_open()?;
        self.encode_frame(opcode, true, &[payload]);
        Ok(())
    }

    /// Starts the close handshake: sends a close frame and waits up to
    /// `close_timeout` for the peer's. `reason` is cut to 123 bytes.
    pub fn close(&mut self, now: Instant, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if !code.is_valid_on_wire() {
            return Err(SendError::InvalidCloseCode(code.0));
        }
        self.check_open()?;
        self.encode_frame(OpCode::Close, true, &[close_payload(Some(code), reason)]);
        self.phase = Phase::CloseSent;
        self.deadline = Some(now + self.config.close_timeout);
        Ok(())
    }

    fn check_open(&self) -> Result<(), SendError> {
        match self.phase {
            Phase::Open => Ok(()),
            Phase::AwaitRequest | Phase::AwaitAnswer(_) | Phase::AwaitResponse(_) => {
                Err(SendError::NotOpen)
            }
            Phase::CloseSent | Phase::Closed => Err(SendError::Closed),
        }
    }

    // ----- (D) outputs -----

    /// Appends every queued outbound byte to `buf`; returns how many, or
    /// `None` if nothing was queued. Call after every input and command.
    #[must_use = "the bytes must be written to the transport"]
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        if self.out.is_empty() {
            return None;
        }
        Some(self.out.drain_into(buf))
    }

    /// Takes the next queued chunk of outbound bytes without copying
    /// shared payloads.
    #[must_use = "the bytes must be written to the transport"]
    pub fn poll_transmit_chunk(&mut self) -> Option<Bytes> {
        self.out.pop_chunk()
    }

    /// Fills `dst` with slices of the queued outbound bytes for a vectored
    /// write; returns the number of slices. Then call
    /// [`Connection::consume_transmit`] with the bytes written.
    pub fn transmit_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.out.slices(dst)
    }

    /// Drops `n` written bytes from the front of the outbound queue.
    pub fn consume_transmit(&mut self, n: usize) {
        self.out.consume(n);
    }

    /// The next event, if any. Call after every input and command.
    ///
    /// Received frames are decoded here, one event at a time, so an
    /// answer the application queues for one message (an echo, say) goes
    /// out before anything a later frame causes. Decoding may queue
    /// outbound bytes (an automatic pong, a close frame): drain
    /// `poll_transmit` after draining events.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.events.is_empty() {
            self.read_frames(Decode::UntilEvent);
        }
        self.events.pop()
    }

    /// The instant at which [`Connection::handle_timeout`] must be called:
    /// the handshake or close deadline, if one is running.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    // ----- internals: reading -----

    fn wants_input(&self) -> bool {
        !matches!(self.phase, Phase::Closed)
    }

    fn read_request(&mut self) {
        let limit = self.config.max_handshake_size;
        let Some(end) = find_head_end(&self.read, self.scanned) else {
            self.scanned = self.read.len();
            if self.read.len() > limit {
                self.fail(HandshakeError::HeadTooLarge { limit }.into(), Answer::Tell);
            }
            return;
        };
        if end > limit {
            self.fail(HandshakeError::HeadTooLarge { limit }.into(), Answer::Tell);
            return;
        }
        match Request::parse(&self.read[..end], self.config.max_headers, limit) {
            Ok(Some((request, len))) => {
                self.read.advance(len);
                self.phase = Phase::AwaitAnswer(Box::new(PendingRequest {
                    accept: request.accept_value().map_err(Clone::clone),
                    protocols: request.protocols().map(str::to_owned).collect(),
                    deflate_offers: match self.config.deflate {
                        Some(_) => request.deflate_offers(),
                        None => Vec::new(),
                    },
                }));
                self.events.push(Event::Request(Box::new(request)));
            }
            // The head ends at `end`, so httparse cannot want more.
            Ok(None) => self.fail(
                HandshakeError::MalformedHttp("incomplete head".into()).into(),
                Answer::Tell,
            ),
            Err(e) => self.fail(e.into(), Answer::Tell),
        }
    }

    fn read_response(&mut self) {
        let Phase::AwaitResponse(request) = &self.phase else {
            return;
        };
        let limit = self.config.max_handshake_size;
        let Some(end) = find_head_end(&self.read, self.scanned) else {
            self.scanned = self.read.len();
            if self.read.len() > limit {
                self.fail(
                    HandshakeError::HeadTooLarge { limit }.into(),
                    Answer::Silent,
                );
            }
            return;
        };
        let parsed = if end > limit {
            Err(HandshakeError::HeadTooLarge { limit })
        } else {
            parse_response(
                &self.read[..end],
                request,
                self.config.deflate.as_ref(),
                self.config.max_headers,
                limit,
            )
        };
        match parsed {
            Ok(Some((response, len))) => {
                self.read.advance(len);
                if let (Some(params), Some(config)) = (response.deflate, self.config.deflate) {
                    self.deflate = Some(Box::new(DeflateState::new(params, config, false)));
                }
                self.phase = Phase::Open;
                self.deadline = None;
                self.events.push(Event::Accepted(Box::new(response)));
                self.read_frames(Decode::UntilEvent);
            }
            Ok(None) => self.fail(
                HandshakeError::MalformedHttp("incomplete head".into()).into(),
                Answer::Silent,
            ),
            Err(e) => self.fail(e.into(), Answer::Silent),
        }
    }

    /// Decodes frames as far as `how` says. Decoding lazily, one event at
    /// a time, keeps the application's replies to earlier messages ahead
    /// of the close frame that a later violation in the same read
    /// triggers.
    fn read_frames(&mut self, how: Decode) {
        while matches!(self.phase, Phase::Open | Phase::CloseSent)
            && (how == Decode::All || self.events.is_empty())
        {
            let mut frame = match self.frame {
                Some(f) => f,
                None => match FrameHeader::decode(&self.read) {
                    Ok(None) => return,
                    Ok(Some((header, header_len))) => match self.check_header(&header) {
                        Ok(f) => {
                            self.read.advance(header_len);
                            f
                        }
                        Err(e) => return self.fail(e.into(), Answer::Tell),
                    },
                    Err(e) => return self.fail(e.into(), Answer::Tell),
                },
            };
            // Unmask and validate whatever part of the payload is here, so
            // invalid text fails as soon as the bad byte arrives.
            let end = frame.len.min(self.read.len());
            if frame.done < end {
                let chunk = &mut self.read[frame.done..end];
                if let Some(key) = frame.mask {
                    apply_mask(chunk, key, frame.done);
                }
                let checked = if frame.compressed {
                    inflate_chunk(
                        self.deflate.as_deref_mut(),
                        self.message.as_deref_mut(),
                        &mut self.utf8,
                        chunk,
                        self.config.max_message_size,
                        false,
                    )
                } else if frame.text && self.utf8.feed(chunk).is_err() {
                    Err(ProtocolError::InvalidUtf8)
                } else {
                    Ok(())
                };
                frame.done = end;
                if let Err(e) = checked {
                    return self.fail(e.into(), Answer::Tell);
                }
            }
            if frame.done < frame.len {
                self.frame = Some(frame);
                return;
            }
            self.frame = None;
            if frame.compressed {
                self.read.advance(frame.len);
                if frame.fin
                    && let Err(e) = self.finish_compressed()
                {
                    return self.fail(e.into(), Answer::Tell);
                }
                continue;
            }
            // A frame that ends the buffer (the usual case at depth 1)
            // takes the buffer whole: splitting it would allocate a shared
            // header for the two halves.
            let payload = if frame.len == self.read.len() {
                std::mem::take(&mut self.read).freeze()
            } else {
                self.read.split_to(frame.len).freeze()
            };
            if let Err(e) = self.dispatch(frame, payload) {
                return self.fail(e.into(), Answer::Tell);
            }
        }
    }

    /// Checks a header against the protocol, the role and the limits.
    fn check_header(&mut self, h: &FrameHeader) -> Result<InFrame, ProtocolError> {
        // RSV1 is permessage-deflate's "compressed" bit; RSV2 and RSV3
        // belong to no extension we negotiate.
        let rsv1 = h.rsv & 0b100 != 0;
        if h.rsv & 0b011 != 0 || (rsv1 && self.deflate.is_none()) {
            return Err(ProtocolError::ReservedBits);
        }
        let opcode = OpCode::from_wire(h.opcode).ok_or(ProtocolError::ReservedOpcode(h.opcode))?;
        if rsv1 && !matches!(opcode, OpCode::Text | OpCode::Binary) {
            return Err(ProtocolError::MisplacedCompressionBit);
        }
        if opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if h.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlTooLong(h.payload_len));
            }
        }
        if self.config.strict_masking {
            match (self.role, h.mask) {
                (Role::Server, None) => return Err(ProtocolError::UnmaskedFrame),
                (Role::Client, Some(_)) => return Err(ProtocolError::MaskedFrame),
                _ => {}
            }
        }
        let frame_limit = self.config.max_frame_size;
        if h.payload_len > frame_limit as u64 {
            return Err(ProtocolError::FrameTooLarge {
                size: h.payload_len,
                limit: frame_limit,
            });
        }
        let message_limit = self.config.max_message_size;
        let mut compressed = false;
        let text = match opcode {
            OpCode::Continuation => {
                let m = self
                    .message
                    .as_ref()
                    .ok_or(ProtocolError::UnexpectedContinuation)?;
                // A compressed message is limited by its inflated size,
                // checked as it inflates.
                compressed = m.compressed;
                let size = m.data.len() as u64 + h.payload_len;
                if !compressed && size > message_limit as u64 {
                    return Err(ProtocolError::MessageTooLarge {
                        size,
                        limit: message_limit,
                    });
                }
                m.opcode == OpCode::Text && !compressed
            }
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                if !rsv1 && h.payload_len > message_limit as u64 {
                    return Err(ProtocolError::MessageTooLarge {
                        size: h.payload_len,
                        limit: message_limit,
                    });
                }
                self.utf8.reset();
                if rsv1 {
                    compressed = true;
                    self.message = Some(Box::new(Assembly {
                        opcode,
                        data: Vec::new(),
                        compressed,
                    }));
                }
                opcode == OpCode::Text && !compressed
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => false,
        };
        Ok(InFrame {
            opcode,
            fin: h.fin,
            mask: h.mask,
            // Bounded by max_frame_size above, so it fits in usize.
            len: h.payload_len as usize,
            done: 0,
            text,
            compressed,
        })
    }

    /// The last frame of a compressed message arrived: inflate the tail
    /// and deliver.
    fn finish_compressed(&mut self) -> Result<(), ProtocolError> {
        inflate_chunk(
            self.deflate.as_deref_mut(),
            self.message.as_deref_mut(),
            &mut self.utf8,
            &[],
            self.config.max_message_size,
            true,
        )?;
        let Some(m) = self.message.take() else {
            return Err(ProtocolError::UnexpectedContinuation);
        };
        self.deliver(m.opcode, Bytes::from(m.data))
    }

    /// Acts on a complete frame.
    fn dispatch(&mut self, frame: InFrame, payload: Bytes) -> Result<(), ProtocolError> {
        match frame.opcode {
            OpCode::Text | OpCode::Binary if frame.fin => self.deliver(frame.opcode, payload)?,
            OpCode::Text | OpCode::Binary => {
                let mut data = Vec::with_capacity(payload.len().max(1024));
                data.extend_from_slice(&payload);
                self.message = Some(Box::new(Assembly {
                    opcode: frame.opcode,
                    data,
                    compressed: false,
                }));
            }
            OpCode::Continuation => {
                let Some(m) = self.message.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                m.data.extend_from_slice(&payload);
                if frame.fin {
                    let opcode = m.opcode;
                    let data = Bytes::from(std::mem::take(&mut m.data));
                    self.message = None;
                    self.deliver(opcode, data)?;
                }
            }
            OpCode::Ping => {
                if self.config.auto_pong && matches!(self.phase, Phase::Open) {
                    self.encode_frame(OpCode::Pong, true, std::slice::from_ref(&payload));
                }
                self.events.push(Event::Ping(payload));
            }
            OpCode::Pong => self.events.push(Event::Pong(payload)),
            OpCode::Close => {
                let (code, reason) = parse_close_payload(&payload)?;
                if matches!(self.phase, Phase::Open) {
                    // Echo the status code (RFC 6455 section 5.5.1).
                    let echo = (code != CloseCode::NO_STATUS).then_some(code);
                    self.encode_frame(OpCode::Close, true, &[close_payload(echo, "")]);
                }
                self.finish(code, reason, true);
            }
        }
        Ok(())
    }

    fn deliver(&mut self, opcode: OpCode, data: Bytes) -> Result<(), ProtocolError> {
        let message = if opcode == OpCode::Text {
            if !self.utf8.is_complete() {
                return Err(ProtocolError::InvalidUtf8);
            }
            Message::Text(Utf8Bytes::from_validated(data))
        } else {
            Message::Binary(data)
        };
        self.events.push(Event::Message(message));
        Ok(())
    }

    // ----- internals: writing -----

    /// Encodes a data message, compressed when permessage-deflate is on
    /// and the message reaches the threshold.
    fn encode_message(&mut self, opcode: OpCode, parts: &[Bytes]) {
        let total: usize = parts.iter().map(Bytes::len).sum();
        if let Some(deflate) = self.deflate.as_deref_mut()
            && deflate.compresses(total)
        {
            let slices: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
            if let Some(payload) = deflate.compress(&slices) {
                return self.encode_payload(opcode, true, &[payload]);
            }
        }
        self.encode_payload(opcode, false, parts);
    }

    /// Frames a payload (fragmented if `fragment_size` says so); RSV1 marks
    /// the first frame of a compressed message only.
    fn encode_payload(&mut self, opcode: OpCode, compressed: bool, parts: &[Bytes]) {
        let total: usize = parts.iter().map(Bytes::len).sum();
        let mut rsv = if compressed { RSV1 } else { 0 };
        match self.config.fragment_size {
            Some(size) if total > size => {
                let joined = join(parts, total);
                let mut offset = 0;
                let mut op = opcode;
                while offset < total {
                    let end = (offset + size).min(total);
                    self.encode_frame_rsv(op, end == total, rsv, &[joined.slice(offset..end)]);
                    op = OpCode::Continuation;
                    rsv = 0;
                    offset = end;
                }
            }
            _ => self.encode_frame_rsv(opcode, true, rsv, parts),
        }
    }

    /// Encodes one uncompressed frame (control frames are never compressed).
    fn encode_frame(&mut self, opcode: OpCode, fin: bool, parts: &[Bytes]) {
        self.encode_frame_rsv(opcode, fin, 0, parts);
    }

    /// Encodes one frame whose payload is the concatenation of `parts`.
    fn encode_frame_rsv(&mut self, opcode: OpCode, fin: bool, rsv: u8, parts: &[Bytes]) {
        let len: usize = parts.iter().map(Bytes::len).sum();
        let mask = self.mask_keys.as_mut().map(|keys| keys.next_key());
        let header = FrameHeader {
            fin,
            rsv,
            opcode: opcode.to_wire(),
            mask,
            payload_len: len as u64,
        };
        // One reservation for the header and whatever is copied after it
        // (the payload when masked, else the parts below the share
        // threshold), instead of growing the buffer byte by byte.
        let copied = match mask {
            Some(_) => len,
            None => parts.iter().map(|p| self.out.copied_len(p)).sum(),
        };
        self.out.reserve_tail(MAX_HEADER_LEN + copied);
        let tail = self.out.tail();
        let start = tail.len();
        header.encode(tail);
        match mask {
            None => {
                let n = tail.len() - start;
                self.out.commit(n);
                for part in parts {
                    self.out.push_shared(part);
                }
            }
            Some(key) => {
                let body = tail.len();
                for part in parts {
                    tail.extend_from_slice(part);
                }
                apply_mask(&mut tail[body..], key, 0);
                let n = tail.len() - start;
                self.out.commit(n);
            }
        }
    }

    // ----- internals: transitions -----

    /// Fails the connection: a protocol error sends a close frame with its
    /// code, and a handshake error on a server the matching HTTP
    /// rejection, when `answer` is [`Answer::Tell`] and the state allows.
    fn fail(&mut self, error: Error, answer: Answer) {
        let tell = answer == Answer::Tell;
        let (code, reason) = match &error {
            Error::Protocol(e) => (e.close_code(), truncate_reason(&e.to_string()).to_owned()),
            Error::Handshake(_) | Error::CloseTimeout => (CloseCode::ABNORMAL, String::new()),
        };
        match (&self.phase, &error) {
            (Phase::Open, Error::Protocol(_)) if tell => {
                let reason = &reason[..reason.len().min(MAX_CLOSE_REASON)];
                self.encode_frame(OpCode::Close, true, &[close_payload(Some(code), reason)]);
            }
            (Phase::AwaitRequest, Error::Handshake(e)) if tell => {
                let mut buf = Vec::new();
                if HttpResponse::for_error(e).encode(&mut buf).is_ok() {
                    self.out.push_shared(&Bytes::from(buf));
                }
            }
            _ => {}
        }
        self.events.push(Event::Error(error));
        self.finish(code, reason, false);
    }

    fn finish(&mut self, code: CloseCode, reason: String, clean: bool) {
        self.enter_closed();
        self.events.push(Event::Closed {
            code,
            reason,
            clean,
        });
    }

    fn enter_closed(&mut self) {
        self.phase = Phase::Closed;
        self.deadline = None;
        self.frame = None;
        self.message = None;
        self.read = BytesMut::new();
        if let Some(deflate) = self.deflate.as_deref_mut() {
            deflate.deflater = None;
            deflate.inflater = None;
        }
    }
}

/// RSV1 in `FrameHeader::rsv` (bits RSV1..RSV3 as the low three bits).
const RSV1: u8 = 0b100;

/// Inflates a piece of a compressed message onto its assembly (with the
/// sync-flush tail when `last`), validating text on the inflated bytes.
/// Takes the connection's fields apart so the input can be borrowed from
/// the receive buffer.
fn inflate_chunk(
    deflate: Option<&mut DeflateState>,
    message: Option<&mut Assembly>,
    utf8: &mut Utf8Validator,
    input: &[u8],
    limit: usize,
    last: bool,
) -> Result<(), ProtocolError> {
    let (Some(deflate), Some(message)) = (deflate, message) else {
        return Err(ProtocolError::ReservedBits);
    };
    let utf8 = (message.opcode == OpCode::Text).then_some(utf8);
    let inflater = deflate.inflater();
    if last {
        inflater.finish_message(&mut message.data, limit, utf8)?;
        deflate.end_message();
        Ok(())
    } else {
        inflater.inflate(input, &mut message.data, limit, utf8)
    }
}

fn join(parts: &[Bytes], total: usize) -> Bytes {
    match parts {
        [one] => one.clone(),
        _ => {
            let mut buf = BytesMut::with_capacity(total);
            for p in parts {
                buf.extend_from_slice(p);
            }
            buf.freeze()
        }
    }
}

/// Why [`Connection::client`] could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The request cannot be encoded (a header would break HTTP framing).
    #[error(transparent)]
    Request(#[from] SendError),
}
