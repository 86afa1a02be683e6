//! The checks the tryst fuzz targets share, and the mapping from the codec's
//! test vectors to seed inputs (used by the targets and by the
//! `write_seed_corpus` example alike, so the two cannot drift apart).
//!
//! Every check panics on a violated property; libFuzzer reports the panic as
//! a crash and saves the input under `fuzz/artifacts/<target>/`.
//!
//! The operation-sequence harnesses of the state machines, the crypto
//! targets and the whole-system target live in the modules below; each
//! target file under `fuzz_targets/` is one call into them.

pub mod ffi_terminal;
pub mod noise_channel;
pub mod ops;
pub mod peer_packet;
pub mod peer_session;
pub mod peer_transport;
pub mod relay;
pub mod relay_link;
pub mod seeds;
pub mod session_server;
pub mod terminal;
pub mod trigger_server;
pub mod udp_auth;
pub mod whole_system;

use core::net::SocketAddr;

use tryst_core::wire::{
    frame_len, DecodeError, EncodeError, Family, FrameBuffer, Header, Message, MessageType,
    HEADER_LEN, MAGIC, MAX_BODY_LEN, MAX_HANDSHAKE_LEN, MAX_MESSAGE_LEN, MAX_SEALED_LEN,
    MAX_TICKETED_NOISE_LEN, TAG_LEN, VERSION,
};

/// Feeds `input` to every entry point that reads untrusted bytes
/// ([`Header::parse`], [`frame_len`], [`Message::decode`]) and checks that
/// they agree with each other; whatever decodes must be encoded canonically.
pub fn check_untrusted_bytes(input: &[u8]) {
    let header = Header::parse(input);
    let frame = frame_len(input);
    if input.len() >= HEADER_LEN {
        match (&header, &frame) {
            (Ok(header), Ok(Some(len))) => assert_eq!(header.message_len(), *len),
            (Err(parse_error), Err(frame_error)) => assert_eq!(parse_error, frame_error),
            disagreement => panic!("Header::parse and frame_len disagree: {disagreement:?}"),
        }
    } else {
        // Part of a header: either "need more bytes" or foreign traffic.
        assert!(
            matches!(frame, Ok(None) | Err(DecodeError::BadMagic)),
            "frame_len on {} bytes gave {frame:?}",
            input.len()
        );
        assert!(Message::decode(input).is_err());
    }

    if let Ok(message) = Message::decode(input) {
        assert_encodes_to(&message, input);
    }
}

/// Checks that `message` encodes to exactly `wire` through every encoder
/// entry point, and that `wire` frames as one whole message of its type.
pub fn assert_encodes_to(message: &Message<'_>, wire: &[u8]) {
    assert_eq!(
        message.encoded_len(),
        wire.len(),
        "encoded_len of {message:?}"
    );
    let header = Header::parse(wire).expect("a decodable message has a valid header");
    assert_eq!(header.message_type, message.message_type());
    assert_eq!(frame_len(wire), Ok(Some(wire.len())));

    let mut buffer = [0u8; MAX_MESSAGE_LEN];
    let written = message
        .encode(&mut buffer)
        .expect("every message fits in MAX_MESSAGE_LEN bytes");
    assert_eq!(&buffer[..written], wire, "encode of {message:?}");

    let mut grown = Vec::new();
    let written = message
        .encode_to(&mut grown)
        .expect("a Vec grows to fit any message");
    assert_eq!(written, wire.len());
    assert_eq!(grown, wire, "encode_to of {message:?}");

    // One byte short must be a typed error, never a panic or a partial write.
    let short = wire.len() - 1;
    assert_eq!(
        message.encode(&mut buffer[..short]),
        Err(EncodeError::BufferTooSmall {
            needed: wire.len(),
            available: short,
        })
    );
}

/// The message types of one family, in type-byte order.
pub fn types_of(family: Family) -> impl Iterator<Item = MessageType> + Clone {
    MessageType::ALL
        .iter()
        .copied()
        .filter(move |ty| ty.family() == family)
}

/// Interprets `input` as a selector byte and a body: frames the body with a
/// valid header of the family type the selector picks, so the fuzzer's bytes
/// reach that family's body parsers, then runs [`check_untrusted_bytes`].
pub fn check_family_body(family: Family, input: &[u8]) {
    let Some((&selector, body)) = input.split_first() else {
        return;
    };
    let types = types_of(family);
    let count = types.clone().count();
    let message_type = types
        .clone()
        .nth(usize::from(selector) % count)
        .expect("the index is below the count");
    // A longer body could not have a valid header; cut it to the limit.
    let body = &body[..body.len().min(MAX_BODY_LEN)];

    let mut framed = [0u8; MAX_MESSAGE_LEN];
    let header = header_bytes(message_type, body.len());
    framed[..HEADER_LEN].copy_from_slice(&header);
    framed[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
    check_untrusted_bytes(&framed[..HEADER_LEN + body.len()]);
}

/// The seed input of a family target for one encoded message: the selector
/// byte [`check_family_body`] maps back to the message's type, then the body.
pub fn family_seed(wire: &[u8]) -> Vec<u8> {
    let message_type = Header::parse(wire)
        .expect("a seed is a valid message")
        .message_type;
    let selector = types_of(message_type.family())
        .position(|ty| ty == message_type)
        .expect("a type is in its own family");
    let mut seed = vec![u8::try_from(selector).expect("families are small")];
    seed.extend_from_slice(&wire[HEADER_LEN..]);
    seed
}

/// A valid header for `message_type` with a body of `body_len` bytes
/// (at most [`MAX_BODY_LEN`]).
fn header_bytes(message_type: MessageType, body_len: usize) -> [u8; HEADER_LEN] {
    let body_len = u16::try_from(body_len).expect("bodies are at most MAX_BODY_LEN");
    let [len_high, len_low] = body_len.to_be_bytes();
    [
        MAGIC[0],
        MAGIC[1],
        VERSION,
        message_type.to_wire(),
        len_high,
        len_low,
    ]
}

/// True when `message` respects the bounds its encoder expects of the caller.
/// Only the opaque envelope payloads can break them: a fuzzer-made slice may
/// be empty or longer than the decoder accepts.
pub fn within_codec_bounds(message: &Message<'_>) -> bool {
    match message {
        Message::HandshakeInit(init) => (1..=MAX_HANDSHAKE_LEN).contains(&init.noise.len()),
        Message::HandshakeReply(reply) => (1..=MAX_HANDSHAKE_LEN).contains(&reply.noise.len()),
        Message::Sealed(sealed) => (TAG_LEN..=MAX_SEALED_LEN).contains(&sealed.sealed.len()),
        Message::TicketedHandshakeInit(init) => {
            (1..=MAX_TICKETED_NOISE_LEN).contains(&init.noise.len())
        }
        _ => true,
    }
}

/// `message` as it reads back from the wire: IPv6 flow info and scope ID are
/// not carried, so they come back as zero. Every other field survives.
pub fn as_carried_by_wire<'a>(message: &Message<'a>) -> Message<'a> {
    let mut carried = message.clone();
    match &mut carried {
        Message::KeepaliveAck(ack) => drop_ipv6_flow_and_scope(&mut ack.observed),
        Message::AddressNotification(notification) => {
            drop_ipv6_flow_and_scope(&mut notification.peer_addr);
            if let Some(relay) = notification.relay.as_mut() {
                drop_ipv6_flow_and_scope(&mut relay.addr);
            }
        }
        Message::NatProbeAnswer(answer) => drop_ipv6_flow_and_scope(&mut answer.observed),
        Message::AddressEcho(echo) => drop_ipv6_flow_and_scope(&mut echo.observed),
        Message::TriggerAssignment(assignment) => drop_ipv6_flow_and_scope(&mut assignment.trigger),
        Message::AddressReply(reply) => {
            reply
                .first
                .iter_mut()
                .chain(reply.second.iter_mut())
                .for_each(drop_ipv6_flow_and_scope);
        }
        Message::Register(register) => register.local.iter_mut().for_each(drop_ipv6_flow_and_scope),
        Message::EnrolRegister(enrol) => enrol
            .register
            .local
            .iter_mut()
            .for_each(drop_ipv6_flow_and_scope),
        Message::KeyInstall(install) => install.local.iter_mut().for_each(drop_ipv6_flow_and_scope),
        _ => {}
    }
    carried
}

fn drop_ipv6_flow_and_scope(addr: &mut SocketAddr) {
    if let SocketAddr::V6(v6) = addr {
        v6.set_flowinfo(0);
        v6.set_scope_id(0);
    }
}

/// Encodes a structured `message`, decodes the bytes and checks the result:
/// it re-encodes to the same bytes and equals the message as the wire carries
/// it ([`as_carried_by_wire`]). The caller filters with [`within_codec_bounds`].
pub fn check_structured_roundtrip(message: &Message<'_>) {
    let mut buffer = [0u8; MAX_MESSAGE_LEN];
    let written = message
        .encode(&mut buffer)
        .expect("a message within the codec bounds fits in MAX_MESSAGE_LEN bytes");
    let wire = &buffer[..written];
    let decoded = Message::decode(wire).unwrap_or_else(|error| {
        panic!("{message:?} encodes to bytes that fail to decode: {error}")
    });
    assert_encodes_to(&decoded, wire);
    assert_eq!(decoded, as_carried_by_wire(message));
}

/// Most chunk sizes a stream input names (see [`check_stream_reassembly`]).
pub const MAX_CHUNK_SIZES: usize = 7;

/// Interprets `input` as a stream cut into chunks: the first byte `k` (mod 8)
/// counts the chunk-size bytes that follow (each size is the byte plus one,
/// used in turn; none means the whole stream at once), the rest is the
/// stream. Feeds the chunks to a [`FrameBuffer`] and checks it against a
/// reference that splits the whole stream with [`frame_len`]: the same
/// messages in the same order, the same error at the same point, and the
/// same count of bytes left pending. Every message it hands out is then
/// checked like any untrusted input.
pub fn check_stream_reassembly(input: &[u8]) {
    let Some((&size_count, rest)) = input.split_first() else {
        return;
    };
    let size_count = usize::from(size_count) % (MAX_CHUNK_SIZES + 1);
    let Some((sizes, stream)) = rest.split_at_checked(size_count) else {
        return;
    };

    let expected = split_with_frame_len(stream);

    let mut buffer = FrameBuffer::new();
    let mut frames: Vec<&[u8]> = Vec::new();
    let mut error = None;
    let mut chunk_sizes = sizes.iter().map(|&size| usize::from(size) + 1).cycle();
    let mut unread = stream;
    'feeding: while !unread.is_empty() {
        let size = chunk_sizes.next().unwrap_or(unread.len()).min(unread.len());
        let (mut chunk, later) = unread.split_at(size);
        unread = later;
        while !chunk.is_empty() {
            let before = chunk.len();
            match buffer.push(&mut chunk) {
                Ok(Some(frame)) => {
                    // The frame borrows the buffer; find the same bytes in the stream.
                    let start = frames.iter().map(|f| f.len()).sum::<usize>();
                    let in_stream = &stream[start..start + frame.len()];
                    assert_eq!(frame, in_stream, "a frame differs from the stream bytes");
                    frames.push(in_stream);
                }
                Ok(None) => assert!(chunk.is_empty(), "push stopped early without a frame"),
                Err(e) => {
                    error = Some(e);
                    break 'feeding;
                }
            }
            assert!(chunk.len() < before, "push took no byte");
        }
    }

    assert_eq!(frames, expected.frames, "frames differ from the reference");
    assert_eq!(error, expected.error, "errors differ from the reference");
    if error.is_some() {
        // A failed buffer stays failed, whatever comes next.
        let mut more: &[u8] = &[MAGIC[0], MAGIC[1], VERSION, 0x03, 0, 0];
        assert_eq!(buffer.push(&mut more).err(), error);
    } else {
        assert_eq!(buffer.pending(), expected.pending, "pending bytes differ");
    }
    for frame in frames {
        check_untrusted_bytes(frame);
    }
}

/// What a stream holds, split message by message with [`frame_len`].
struct ReferenceSplit<'a> {
    frames: Vec<&'a [u8]>,
    error: Option<DecodeError>,
    pending: usize,
}

fn split_with_frame_len(stream: &[u8]) -> ReferenceSplit<'_> {
    let mut split = ReferenceSplit {
        frames: Vec::new(),
        error: None,
        pending: 0,
    };
    let mut rest = stream;
    while !rest.is_empty() {
        match frame_len(rest) {
            Ok(Some(len)) if len <= rest.len() => {
                split.frames.push(&rest[..len]);
                rest = &rest[len..];
            }
            Ok(_) => {
                split.pending = rest.len();
                break;
            }
            Err(e) => {
                split.error = Some(e);
                break;
            }
        }
    }
    split
}

/// The seed input of `stream_reassembly` for `stream` cut into chunks of
/// `chunk_sizes` (each 1..=256 bytes, at most [`MAX_CHUNK_SIZES`] of them).
pub fn stream_seed(chunk_sizes: &[usize], stream: &[u8]) -> Vec<u8> {
    assert!(chunk_sizes.len() <= MAX_CHUNK_SIZES);
    let mut seed = vec![u8::try_from(chunk_sizes.len()).expect("at most 7 sizes")];
    seed.extend(
        chunk_sizes
            .iter()
            .map(|&size| u8::try_from(size - 1).expect("chunk sizes are 1..=256")),
    );
    seed.extend_from_slice(stream);
    seed
}
