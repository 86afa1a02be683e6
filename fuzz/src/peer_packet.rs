//! The `peer_packet` harness: the outer packet codec of the peer path and
//! the file-transfer header, on arbitrary bytes.
//! - [`Packet::decode`] never panics; whatever decodes encodes back to the
//!   same bytes, names the channel [`peek_channel`] reports, and is seen as
//!   a peer packet by [`is_peer_packet`];
//! - [`DataHeader::parse`] agrees with [`Packet::decode`] on data packets;
//! - the input framed with a valid header of each peer type (so the bytes
//!   reach the body parsers) obeys the same rules;
//! - [`TransferHeader::decode`] never panics, and whatever decodes encodes
//!   back to the same prefix.

use tryst_core::peer::packet::{
    is_peer_packet, peek_channel, DataHeader, Packet, PacketType, MAX_DATAGRAM_LEN,
};
use tryst_core::peer::transfer::{TransferHeader, MAX_HEADER_LEN};
use tryst_core::wire::{HEADER_LEN, MAGIC, VERSION};

/// Runs every check on one input.
pub fn run(data: &[u8]) {
    check_packet(data);
    if let Some((&selector, body)) = data.split_first() {
        let ty = [
            PacketType::Probe,
            PacketType::HandshakeInit,
            PacketType::HandshakeReply,
            PacketType::Data,
        ][usize::from(selector) % 4];
        let body = &body[..body.len().min(MAX_DATAGRAM_LEN)];
        let mut framed = Vec::with_capacity(HEADER_LEN + body.len());
        framed.extend_from_slice(&MAGIC);
        framed.push(VERSION);
        framed.push(ty.to_wire());
        framed.extend_from_slice(&(body.len() as u16).to_be_bytes());
        framed.extend_from_slice(body);
        check_packet(&framed);
    }
    check_transfer_header(data);
}

fn check_packet(bytes: &[u8]) {
    let decoded = Packet::decode(bytes);
    let data_header = DataHeader::parse(bytes);
    match decoded {
        Ok(packet) => {
            assert!(is_peer_packet(bytes));
            assert!(packet.within_bounds());
            assert_eq!(packet.encoded_len(), bytes.len());
            let mut out = [0u8; MAX_DATAGRAM_LEN];
            let n = packet.encode(&mut out).expect("a decoded packet encodes");
            assert_eq!(&out[..n], bytes, "{packet:?} re-encodes differently");
            assert_eq!(
                peek_channel(bytes),
                Some((packet.packet_type(), packet.channel()))
            );
            match packet {
                Packet::Data {
                    channel,
                    packet_number,
                    sealed,
                } => assert_eq!(
                    data_header,
                    Ok(DataHeader {
                        channel,
                        packet_number,
                        sealed_len: sealed.len(),
                    })
                ),
                _ => assert!(data_header.is_err()),
            }
        }
        Err(e) => {
            assert_eq!(peek_channel(bytes), None);
            assert_eq!(data_header, Err(e));
        }
    }
}

fn check_transfer_header(bytes: &[u8]) {
    if let Ok(Some((header, n))) = TransferHeader::decode(bytes) {
        let mut out = [0u8; MAX_HEADER_LEN];
        assert_eq!(header.encode(&mut out), Ok(n));
        assert_eq!(&out[..n], &bytes[..n]);
        assert!(header.stream_len() >= header.size);
    }
}
