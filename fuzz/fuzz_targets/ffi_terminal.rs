//! The terminal driven through its C API (`tryst-ffi`'s `extern "C"`
//! functions through the rlib): datagrams, TCP bytes, lost streams, clock
//! moves, every app call with any argument, short buffers, close and use
//! after close. No call may panic inside the library, every poll settles,
//! and a closed handle refuses everything. See `tryst_fuzz::ffi_terminal`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tryst_fuzz::ffi_terminal::run(data);
});
