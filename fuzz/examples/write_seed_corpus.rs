//! Writes the committed seed corpora under `fuzz/corpus/<target>/` from the
//! codec's test vectors (`tryst_core::wire::vectors::ALL`), one file per
//! message type and target, named after the vector:
//!
//! - `decode_any`: the encoded message as it is;
//! - each family target: the selector byte for the message's type, then its
//!   body (see `tryst_fuzz::family_seed`);
//! - `roundtrip_structured`: bytes from which `arbitrary` builds a message of
//!   that type (the variant choice, then the vector's body as raw material);
//!   the example checks each seed really yields its type.
//!
//! `stream_reassembly` gets a few streams, cut into chunks of a few patterns:
//! every vector back to back, a message followed by one cut short, and a
//! message followed by foreign bytes.
//!
//! `share_message` gets the share protocol's vectors
//! (`tryst_core::peer::share::vectors::ALL`), each after a mode byte 0.
//!
//! Three more seeds are the longest messages the codec accepts (a permission
//! list of 64 names of 64 bytes, a handshake reply and a sealed record at
//! their payload limits), for `decode_any` and their family targets: a seed
//! that long also lifts libFuzzer's default input length limit (4096 bytes)
//! above `MAX_MESSAGE_LEN`, so the length bounds themselves get probed.
//!
//! The operation-sequence targets (the state machines, `noise_channel`,
//! `udp_auth`) get the seeds of `tryst_fuzz::seeds::all`: short operation
//! lists for the main flows, each checked to read back as written and to
//! reach what it is for when run through its harness.
//!
//! `ffi_terminal` gets `tryst_fuzz::ffi_terminal::seeds`: the vectors on
//! the C API's TCP and UDP inputs, and every call once.
//!
//! Run it again after a vector changes:
//! `cargo run --manifest-path fuzz/Cargo.toml --example write_seed_corpus`
//! (an optional argument names another output directory: CI writes there and
//! compares, to catch a committed corpus that lags the vectors).

use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use tryst_core::wire::{
    vectors, Family, HandshakeReply, Message, MessageType, Name, NameSeq, PermissionList, Sealed,
    HEADER_LEN, MAX_HANDSHAKE_LEN, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_PERMISSION_ENTRIES,
    MAX_SEALED_LEN,
};
use tryst_fuzz::{family_seed, stream_seed};

fn main() {
    let corpus_root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    for (label, wire) in vectors::ALL {
        let message = Message::decode(wire).expect("every vector decodes");
        let file_name = label.to_lowercase();
        let family_target = family_target_name(message.message_type().family());

        write_seed(&corpus_root.join("decode_any"), &file_name, wire);
        write_seed(
            &corpus_root.join(family_target),
            &file_name,
            &family_seed(wire),
        );
        write_seed(
            &corpus_root.join("roundtrip_structured"),
            &file_name,
            &structured_seed(message.message_type(), &wire[HEADER_LEN..]),
        );
    }
    for (label, wire) in tryst_core::peer::packet::vectors::ALL {
        write_seed(
            &corpus_root.join("peer_packet"),
            &label.to_lowercase(),
            wire,
        );
    }
    for (label, wire) in tryst_core::peer::share::vectors::ALL {
        let mut seed = vec![0u8];
        seed.extend_from_slice(wire);
        write_seed(
            &corpus_root.join("share_message"),
            &label.to_lowercase(),
            &seed,
        );
    }
    // A cross-server request between session servers.
    let peer_request = tryst_core::session_server::PeerMessage {
        from: tryst_core::wire::PublicKey([0xaa; 32]),
        to: None,
        body: tryst_core::session_server::PeerBody::Request {
            fwd: 7,
            requester: "phone".into(),
            requester_key: tryst_core::wire::PublicKey([0xbb; 32]),
            requester_addr: "192.0.2.1:4000".parse().expect("addr"),
            target: "home".into(),
            duration_secs: 600,
        },
    };
    write_seed(
        &corpus_root.join("decode_peer_message"),
        "request",
        &peer_request.encode().expect("encodes"),
    );
    // The relay: binds, forwards, time and ends for two sessions.
    write_seed(
        &corpus_root.join("relay"),
        "bind_both_forward_expire",
        &[0, 0, 0, 9, 1, 0, 1, 1, 3, 50, 1, 0, 4, 0, 5, 0, 3, 255],
    );
    // The relay link: each message, and a handshake's first bytes.
    for (name, bytes) in tryst_core::relay::link::vectors::ALL {
        write_seed(&corpus_root.join("relay_link"), &name.to_lowercase(), bytes);
    }
    write_longest_message_seeds(&corpus_root);
    write_stream_seeds(&corpus_root.join("stream_reassembly"));
    for (name, bytes) in tryst_fuzz::ffi_terminal::seeds() {
        write_seed(&corpus_root.join("ffi_terminal"), name, &bytes);
    }
    let operation_seeds = tryst_fuzz::seeds::all();
    for seed in &operation_seeds {
        write_seed(&corpus_root.join(seed.target), seed.name, &seed.bytes);
    }
    println!(
        "wrote seeds for {} vectors, the longest messages and {} operation lists under {}",
        vectors::ALL.len(),
        operation_seeds.len(),
        corpus_root.display()
    );
}

/// Streams of several messages for `stream_reassembly`.
fn write_stream_seeds(dir: &Path) {
    let every_vector: Vec<u8> = vectors::ALL
        .iter()
        .flat_map(|(_, wire)| wire.iter().copied())
        .collect();
    let cut_short = [&vectors::REGISTER[..], &vectors::CONNECTION_REQUEST[..10]].concat();
    let foreign_after_poll = [&vectors::POLL[..], b"GET / HTTP/1.1\r\n"].concat();
    let streams: [(&str, &[usize], &[u8]); 5] = [
        ("every_vector_at_once", &[], &every_vector),
        ("every_vector_byte_by_byte", &[1], &every_vector),
        (
            "every_vector_mixed_chunks",
            &[2, 5, 7, 64, 256],
            &every_vector,
        ),
        ("message_cut_short", &[3], &cut_short),
        ("foreign_bytes_after_poll", &[], &foreign_after_poll),
    ];
    for (file_name, chunk_sizes, stream) in streams {
        write_seed(dir, file_name, &stream_seed(chunk_sizes, stream));
    }
}

/// Seeds at the codec's length limits, for `decode_any` and the family targets.
fn write_longest_message_seeds(corpus_root: &Path) {
    let name_strings: Vec<String> = (0..MAX_PERMISSION_ENTRIES)
        .map(|i| format!("{i:02}-{}", "n".repeat(MAX_NAME_LEN - 3)))
        .collect();
    let names: Vec<Name<'_>> = name_strings
        .iter()
        .map(|s| Name::new(s).expect("a valid name"))
        .collect();
    let noise = [0xe7; MAX_HANDSHAKE_LEN];
    let longest: [(&str, Message<'_>); 3] = [
        (
            "longest_permission_list",
            Message::PermissionList(PermissionList {
                query_id: 9,
                names: NameSeq::from_slice(&names).expect("at most 64 names"),
            }),
        ),
        (
            "longest_handshake_reply",
            Message::HandshakeReply(HandshakeReply {
                channel: 0x0102_0304_0506_0708,
                noise: &noise,
            }),
        ),
        (
            "longest_sealed",
            Message::Sealed(Sealed {
                channel: 0x0102_0304_0506_0708,
                nonce: 1,
                sealed: &noise[..MAX_SEALED_LEN],
            }),
        ),
    ];
    for (file_name, message) in longest {
        let mut buffer = [0u8; MAX_MESSAGE_LEN];
        let written = message.encode(&mut buffer).expect("fits");
        let wire = &buffer[..written];
        assert_eq!(Message::decode(wire).as_ref(), Ok(&message), "{file_name}");
        let family_target = family_target_name(message.message_type().family());
        write_seed(&corpus_root.join("decode_any"), file_name, wire);
        write_seed(
            &corpus_root.join(family_target),
            file_name,
            &family_seed(wire),
        );
    }
}

/// The fuzz target that covers one family's body parsers.
fn family_target_name(family: Family) -> &'static str {
    match family {
        Family::Registration => "decode_registration",
        Family::Udp => "decode_udp",
        Family::Setup => "decode_setup",
        Family::Interserver => "decode_interserver",
        Family::SessionLife => "decode_session",
        Family::Envelope => "decode_envelope",
    }
}

/// Input from which `Message::arbitrary_take_rest` builds a `message_type`
/// message: a derived enum picks its variant from a little-endian `u32` as
/// `(u32 * variants) >> 32`, so the seed starts with the smallest such `u32`.
fn structured_seed(message_type: MessageType, body: &[u8]) -> Vec<u8> {
    let variants = MessageType::ALL.len() as u64;
    let index = MessageType::ALL
        .iter()
        .position(|ty| *ty == message_type)
        .expect("every type is in ALL") as u64;
    let choice = u32::try_from((index << 32).div_ceil(variants))
        .expect("index < variants keeps the choice below 2^32");
    let mut seed = choice.to_le_bytes().to_vec();
    seed.extend_from_slice(body);

    let built =
        Message::arbitrary_take_rest(Unstructured::new(&seed)).expect("a seed builds some message");
    assert_eq!(
        built.message_type(),
        message_type,
        "the seed for {message_type:?} builds {built:?}; has `arbitrary`'s enum encoding changed?"
    );
    seed
}

fn write_seed(dir: &Path, file_name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create the corpus directory");
    fs::write(dir.join(file_name), bytes).expect("write a seed");
}
