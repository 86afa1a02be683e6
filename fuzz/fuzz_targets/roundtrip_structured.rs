//! Structure-aware: the fuzzer builds a `Message` through `arbitrary`, which
//! is encoded and decoded again. The bytes must decode, the decoded message
//! must re-encode to the same bytes (encode(decode(encode(m))) == encode(m)),
//! and it must equal `m` except for the IPv6 flow info and scope ID the wire
//! does not carry. Messages whose envelope payload breaks the encoder's
//! documented bounds are rejected as inputs, not checked.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use tryst_core::wire::Message;

fuzz_target!(|message: Message<'_>| -> Corpus {
    if !tryst_fuzz::within_codec_bounds(&message) {
        return Corpus::Reject;
    }
    tryst_fuzz::check_structured_roundtrip(&message);
    Corpus::Keep
});
