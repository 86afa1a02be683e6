//! PROTOCOL.md cannot drift from the code: every hex example in it must be
//! byte for byte the codec's test vector of the same name, every vector must
//! appear, and the bounds table must give the codec's constants.

use std::collections::BTreeMap;

use tryst_core::peer::packet;
use tryst_core::wire::{self, vectors, Message};
use tryst_tests::repo_root;

fn protocol_md() -> String {
    std::fs::read_to_string(repo_root().join("PROTOCOL.md")).expect("PROTOCOL.md is readable")
}

/// Every `<!-- MARKER NAME -->` marker (`vector:` for the control
/// messages, `peer-vector:` for the peer packets) with the bytes of the
/// fenced block after it (hex pairs left of the `|` on each line).
fn hex_examples(doc: &str, marker: &str) -> BTreeMap<String, Vec<u8>> {
    let opening = format!("<!-- {marker}");
    let mut found = BTreeMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix(opening.as_str())
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        assert_eq!(
            lines.next().map(str::trim),
            Some("```text"),
            "{name}: fence"
        );
        let mut bytes = Vec::new();
        for body in lines.by_ref() {
            if body.trim() == "```" {
                break;
            }
            let hex = body.split('|').next().unwrap_or_default();
            for pair in hex.split_whitespace() {
                bytes.push(u8::from_str_radix(pair, 16).expect("hex pair"));
            }
        }
        let previous = found.insert(name.trim().to_string(), bytes);
        assert!(previous.is_none(), "{name} appears twice");
    }
    found
}

#[test]
fn every_hex_example_in_protocol_md_is_its_test_vector() {
    let examples = hex_examples(&protocol_md(), "vector:");
    assert_eq!(examples.len(), vectors::ALL.len(), "one example per vector");
    for (name, bytes) in vectors::ALL {
        let shown = examples
            .get(*name)
            .unwrap_or_else(|| panic!("PROTOCOL.md lacks the {name} example"));
        assert_eq!(shown.as_slice(), *bytes, "{name} differs from the doc");
        assert!(Message::decode(shown).is_ok(), "{name} decodes");
    }
}

#[test]
fn every_peer_packet_example_in_protocol_md_is_its_test_vector() {
    let examples = hex_examples(&protocol_md(), "peer-vector:");
    assert_eq!(
        examples.len(),
        packet::vectors::ALL.len(),
        "one example per peer vector"
    );
    for (name, bytes) in packet::vectors::ALL {
        let shown = examples
            .get(name)
            .unwrap_or_else(|| panic!("PROTOCOL.md lacks the {name} example"));
        assert_eq!(shown.as_slice(), bytes, "{name} differs from the doc");
        assert!(packet::Packet::decode(shown).is_ok(), "{name} decodes");
    }
}

#[test]
fn every_relay_frame_example_in_protocol_md_is_its_test_vector() {
    use tryst_core::relay::framing::{self, RelayFrameBuffer};
    let examples = hex_examples(&protocol_md(), "relay-frame-vector:");
    assert_eq!(examples.len(), framing::vectors::ALL.len());
    for (name, bytes) in framing::vectors::ALL {
        let shown = examples
            .get(name)
            .unwrap_or_else(|| panic!("PROTOCOL.md lacks the {name} example"));
        assert_eq!(shown.as_slice(), bytes, "{name} differs from the doc");
        let mut input = shown.as_slice();
        let mut frames = RelayFrameBuffer::new();
        let packet = frames.push(&mut input).expect("a frame").expect("whole");
        assert!(packet::Packet::decode(packet).is_ok(), "{name} decodes");
    }
    let doc = protocol_md();
    for (name, value) in [
        ("MAX_RELAY_FRAME_LEN", framing::MAX_RELAY_FRAME_LEN),
        (
            "DEFAULT_MAX_TCP_CONNECTIONS",
            tryst_core::relay::tcp::DEFAULT_MAX_TCP_CONNECTIONS,
        ),
        (
            "DEFAULT_MAX_TCP_PER_IP",
            tryst_core::relay::tcp::DEFAULT_MAX_TCP_PER_IP,
        ),
    ] {
        let shown = format!("{value} (`{name}`");
        assert!(doc.contains(&shown), "PROTOCOL.md lacks {shown}");
    }
}

#[test]
fn every_relay_link_example_in_protocol_md_is_its_test_vector() {
    use tryst_core::relay::link::{vectors, LinkMessage, MAX_LINK_MESSAGE_LEN};
    let examples = hex_examples(&protocol_md(), "relay-link-vector:");
    assert_eq!(examples.len(), vectors::ALL.len());
    for (name, bytes) in vectors::ALL {
        let shown = examples
            .get(name)
            .unwrap_or_else(|| panic!("PROTOCOL.md lacks the {name} example"));
        assert_eq!(shown.as_slice(), bytes, "{name} differs from the doc");
        let message = LinkMessage::decode(shown).expect("decodes");
        let mut out = [0u8; MAX_LINK_MESSAGE_LEN];
        let n = message.encode(&mut out);
        assert_eq!(&out[..n], bytes, "{name} re-encodes");
    }
}

#[test]
fn every_share_message_example_in_protocol_md_is_its_test_vector() {
    use tryst_core::peer::share;
    let examples = hex_examples(&protocol_md(), "share-vector:");
    assert_eq!(
        examples.len(),
        share::vectors::ALL.len(),
        "one example per share vector"
    );
    for (name, bytes) in share::vectors::ALL {
        let shown = examples
            .get(name)
            .unwrap_or_else(|| panic!("PROTOCOL.md lacks the {name} example"));
        assert_eq!(shown.as_slice(), bytes, "{name} differs from the doc");
        assert!(
            matches!(share::ShareMessage::decode(shown), Ok(Some(_))),
            "{name} decodes"
        );
    }
    let doc = protocol_md();
    for (name, value) in [
        ("SHARE_HEADER_LEN", share::SHARE_HEADER_LEN),
        ("MAX_PATH_LEN", share::MAX_PATH_LEN),
        ("MAX_PATH_DEPTH", share::MAX_PATH_DEPTH),
        ("MAX_LISTING_ENTRIES", share::MAX_LISTING_ENTRIES),
        ("MAX_SHARE_BODY_LEN", share::MAX_SHARE_BODY_LEN),
        ("MAX_SHARE_MESSAGE_LEN", share::MAX_SHARE_MESSAGE_LEN),
    ] {
        let prefix = format!("| `{name}` | ");
        let row = doc
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("share bounds table lacks {name}"));
        let shown: String = row[prefix.len()..]
            .split('|')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        assert_eq!(shown, value.to_string(), "{name}");
    }
}

#[test]
fn every_message_type_is_in_the_type_table() {
    let doc = protocol_md();
    for ty in wire::MessageType::ALL {
        let row = format!("| `{:02x}` | {:?} |", ty.to_wire(), ty);
        assert!(doc.contains(&row), "type table lacks {row}");
    }
}

#[test]
fn the_bounds_table_gives_the_codec_constants() {
    let doc = protocol_md();
    let constants = [
        ("MAX_NAME_LEN", wire::MAX_NAME_LEN),
        ("MAX_PERMISSION_ENTRIES", wire::MAX_PERMISSION_ENTRIES),
        ("MAX_PLAIN_BODY_LEN", wire::MAX_PLAIN_BODY_LEN),
        ("MAX_PLAIN_MESSAGE_LEN", wire::MAX_PLAIN_MESSAGE_LEN),
        ("MAX_HANDSHAKE_LEN", wire::MAX_HANDSHAKE_LEN),
        ("MAX_SEALED_LEN", wire::MAX_SEALED_LEN),
        ("MAX_BODY_LEN", wire::MAX_BODY_LEN),
        ("MAX_MESSAGE_LEN", wire::MAX_MESSAGE_LEN),
        // The peer packets' table: each name means one thing in both.
        ("MAX_DATAGRAM_LEN", packet::MAX_DATAGRAM_LEN),
        ("PROBE_LEN", packet::PROBE_LEN),
        (
            "MAX_PEER_HANDSHAKE_PAYLOAD",
            packet::MAX_PEER_HANDSHAKE_PAYLOAD,
        ),
        ("MIN_HANDSHAKE_NOISE_LEN", packet::MIN_HANDSHAKE_NOISE_LEN),
        ("MAX_HANDSHAKE_NOISE_LEN", packet::MAX_HANDSHAKE_NOISE_LEN),
        ("DATA_HEADER_LEN", packet::DATA_HEADER_LEN),
        ("DATA_OVERHEAD", packet::DATA_OVERHEAD),
        ("MAX_DATA_SEALED_LEN", packet::MAX_DATA_SEALED_LEN),
    ];
    for (name, value) in constants {
        let prefix = format!("| `{name}` | ");
        let mut rows = doc.lines().filter(|l| l.starts_with(&prefix));
        let row = rows
            .next()
            .unwrap_or_else(|| panic!("bounds table lacks {name}"));
        assert!(rows.next().is_none(), "{name} has two rows");
        let shown: String = row[prefix.len()..]
            .split('|')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        assert_eq!(shown, value.to_string(), "{name}");
    }
}
