//! Each way a byte string can be wrong gets its own typed error. The cases
//! start from the fixed vectors and break one thing at a time.

use tryst_core::wire::{vectors, *};

/// A copy of `vector` with byte `at` set to `value`.
fn with_byte(vector: &[u8], at: usize, value: u8) -> Vec<u8> {
    let mut v = vector.to_vec();
    v[at] = value;
    v
}

/// A message of type `ty` around `body`, with a correct length field.
fn framed(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![b'T', b'Y', VERSION, ty];
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn header_rejects_foreign_traffic_by_its_first_byte() {
    assert_eq!(
        Message::decode(b"GET / HTTP/1.1\r\n"),
        Err(DecodeError::BadMagic)
    );
    assert_eq!(frame_len(b"G"), Err(DecodeError::BadMagic));
    assert_eq!(frame_len(b"T"), Ok(None));
}

#[test]
fn header_rejects_future_versions() {
    let v2 = with_byte(&vectors::POLL, 2, 2);
    assert_eq!(
        Message::decode(&v2),
        Err(DecodeError::UnsupportedVersion(2))
    );
}

#[test]
fn header_rejects_unknown_and_reserved_types() {
    assert_eq!(
        Message::decode(&framed(0x7f, &[])),
        Err(DecodeError::UnknownType(0x7f))
    );
    // 0x80..=0x8F is reserved for the peer data channel.
    assert_eq!(
        Message::decode(&framed(0x80, &[])),
        Err(DecodeError::UnknownType(0x80))
    );
}

#[test]
fn header_rejects_a_declared_length_beyond_the_bound() {
    let mut v = vectors::POLL.to_vec();
    v[4..6].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(Message::decode(&v), Err(DecodeError::BodyTooLong(u16::MAX)));
    assert_eq!(frame_len(&v), Err(DecodeError::BodyTooLong(u16::MAX)));
}

#[test]
fn frame_len_tells_a_stream_reader_how_much_to_wait_for() {
    let v = &vectors::CONNECTION_REQUEST;
    assert_eq!(frame_len(&v[..5]), Ok(None));
    assert_eq!(frame_len(&v[..6]), Ok(Some(v.len())));
    assert_eq!(frame_len(v), Ok(Some(v.len())));
}

#[test]
fn two_messages_back_to_back_are_trailing_bytes_for_decode() {
    let mut v = vectors::POLL.to_vec();
    v.extend_from_slice(&vectors::POLL);
    assert_eq!(Message::decode(&v), Err(DecodeError::TrailingBytes));
}

#[test]
fn a_body_with_bytes_after_its_last_field_is_refused() {
    let mut body = vectors::PERMISSION_LIST_REQUEST[6..].to_vec();
    body.push(0);
    assert_eq!(
        Message::decode(&framed(0x21, &body)),
        Err(DecodeError::TrailingBytes)
    );
}

#[test]
fn names_must_be_utf8_without_control_characters_and_1_to_64_bytes() {
    // PERMISSION_INQUIRY body: query_id (4), name length, name.
    let inquiry = |name: &[u8]| {
        let mut body = vec![0, 0, 0, 1, name.len() as u8];
        body.extend_from_slice(name);
        Message::decode(&framed(0x23, &body)).map(|m| m.message_type())
    };
    assert_eq!(inquiry(b""), Err(DecodeError::BadName(NameError::Empty)));
    assert_eq!(
        inquiry(&[b'a'; 65]),
        Err(DecodeError::BadName(NameError::TooLong))
    );
    assert_eq!(
        inquiry(&[0xff, 0xfe]),
        Err(DecodeError::BadName(NameError::BadUtf8))
    );
    assert_eq!(
        inquiry(b"TERM\n3"),
        Err(DecodeError::BadName(NameError::ControlCharacter))
    );
    // U+0085 (NEL) is a C1 control character.
    assert_eq!(
        inquiry("TERM\u{85}".as_bytes()),
        Err(DecodeError::BadName(NameError::ControlCharacter))
    );
    assert!(inquiry(&[b'a'; 64]).is_ok());
    assert!(inquiry("téléphone-de-Zoë".as_bytes()).is_ok());
}

#[test]
fn addresses_must_be_family_4_or_6() {
    // KEEPALIVE_ACK: counter (8), interval (2), then the address family byte.
    let family_at = 6 + 8 + 2;
    assert_eq!(vectors::KEEPALIVE_ACK[family_at], 4);
    let bad = with_byte(&vectors::KEEPALIVE_ACK, family_at, 5);
    assert_eq!(Message::decode(&bad), Err(DecodeError::BadAddressFamily(5)));
    // Family 0 (absent) is allowed only where an address is optional.
    let mut body = vec![0u8; 8 + 2];
    body.push(0);
    body.extend_from_slice(&[0; TAG_LEN]);
    assert_eq!(
        Message::decode(&framed(0x11, &body)),
        Err(DecodeError::BadAddressFamily(0))
    );
}

#[test]
fn one_byte_enumerations_refuse_values_without_meaning() {
    let cases: [(&[u8], usize, &str); 6] = [
        (&vectors::REGISTER, 6, "mode"),
        (&vectors::PERMISSION_ANSWER, 10, "verdict"),
        (&vectors::ADDRESS_NOTIFICATION, 6 + 4 + 16, "role"),
        (&vectors::END_NOTIFICATION, 6 + 16, "reason"),
        (&vectors::ERROR, 10, "code"),
        (&vectors::TRIGGER_RESULT, 10, "outcome"),
    ];
    for (vector, at, field) in cases {
        let bad = with_byte(vector, at, 0xee);
        assert_eq!(
            Message::decode(&bad),
            Err(DecodeError::BadEnum { field, value: 0xee }),
            "{field}"
        );
    }
}

#[test]
fn s504_permission_list_longer_than_the_bound_is_refused() {
    let mut body = vec![0, 0, 0, 9, (MAX_PERMISSION_ENTRIES + 1) as u8];
    for _ in 0..=MAX_PERMISSION_ENTRIES {
        body.extend_from_slice(&[1, b'x']);
    }
    assert_eq!(
        Message::decode(&framed(0x22, &body)),
        Err(DecodeError::TooManyNames(MAX_PERMISSION_ENTRIES as u8 + 1))
    );
}

#[test]
fn s504_permission_list_that_declares_more_names_than_it_holds_is_truncated() {
    let body = [0, 0, 0, 9, 2, 1, b'x'];
    assert_eq!(
        Message::decode(&framed(0x22, &body)),
        Err(DecodeError::Truncated)
    );
}

#[test]
fn s505_permission_list_search_finds_only_listed_names() {
    let Ok(Message::PermissionList(list)) = Message::decode(&vectors::PERMISSION_LIST) else {
        panic!("the vector is a permission list");
    };
    assert!(list.names.contains("TERM3"));
    assert!(!list.names.contains("TERM4"));
    assert!(!list.names.contains("term3"));
    assert_eq!(list.names.iter().count(), 2);
}

#[test]
fn envelopes_refuse_payloads_outside_their_bounds() {
    assert_eq!(
        Message::decode(&framed(0x60, &[])),
        Err(DecodeError::BadPayloadLength(0))
    );
    // A sealed record shorter than a tag cannot be authentic.
    let short = [0u8; 8 + 8 + TAG_LEN - 1];
    assert_eq!(
        Message::decode(&framed(0x62, &short)),
        Err(DecodeError::BadPayloadLength(TAG_LEN - 1))
    );
}

#[test]
fn secrets_never_reach_debug_output() {
    let Ok(m) = Message::decode(&vectors::ADDRESS_NOTIFICATION) else {
        panic!("the vector decodes");
    };
    let shown = format!("{m:?}");
    assert!(shown.contains("SessionKey(<redacted>)"), "{shown}");
    assert!(!shown.contains("4b4b"), "{shown}");
}

#[test]
fn envelopes_outside_their_bounds_are_not_encoded() {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN * 2];
    let empty = Message::from(HandshakeInit { noise: &[] });
    assert_eq!(
        empty.encode(&mut buf),
        Err(EncodeError::PayloadOutOfBounds(0))
    );
    let huge = vec![0u8; MAX_SEALED_LEN + 1];
    let sealed = Message::from(Sealed {
        channel: 1,
        nonce: 1,
        sealed: &huge,
    });
    assert_eq!(
        sealed.encode(&mut buf),
        Err(EncodeError::PayloadOutOfBounds(MAX_SEALED_LEN + 1))
    );
}

#[test]
fn netcheck_address_probe_with_non_zero_padding_is_refused() {
    // txid, other_port = 0, then 18 bytes of padding with one stray byte.
    let mut body = vec![0u8; 8 + 1 + 18];
    body[8 + 1 + 7] = 7;
    assert_eq!(
        Message::decode(&framed(0x17, &body)),
        Err(DecodeError::NonZeroPadding)
    );
    body[8 + 1 + 7] = 0;
    assert!(Message::decode(&framed(0x17, &body)).is_ok());
}
