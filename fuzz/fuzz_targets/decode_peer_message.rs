//! The session servers' messages to each other (cross-server requests,
//! carried by the shared store's notifications): no panic on any bytes,
//! and a decoded message re-encodes to exactly the input (canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tryst_core::session_server::PeerMessage;

fuzz_target!(|input: &[u8]| {
    if let Ok(message) = PeerMessage::decode(input) {
        assert_eq!(message.encode().as_deref(), Some(input));
    }
});
