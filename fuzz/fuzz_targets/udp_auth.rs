//! Authenticated UDP: any message verified under any key agrees with the
//! tag `seal` computes (other types never verify, a tag never verifies
//! under two keys); a correctly tagged keepalive, ack, trigger, end trigger
//! or trigger ack with any single byte changed fails to decode or to
//! verify; a `ReplayGuard` accepts exactly the genuine counters newer than
//! the last it accepted, and `check` changes nothing. See
//! `tryst_fuzz::udp_auth` for the harness.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tryst_fuzz::udp_auth::run(data);
});
