//! Any bytes from the ring buffer decode to a record or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|record: &[u8]| {
    let _ = port_monitor::kernel::decode::decode(record);
});
