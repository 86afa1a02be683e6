//! Stream reassembly: the first bytes choose how a byte stream is cut into
//! chunks, the rest is the stream, fed chunk by chunk to `FrameBuffer`. It
//! must never panic, must hand out the same messages, error and pending byte
//! count as splitting the whole stream with `frame_len`, must stay failed
//! after an error, and every message it hands out is checked like
//! `decode_any` input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| tryst_fuzz::check_stream_reassembly(input));
