//! Any text in `ip_local_port_range` or `ip_local_reserved_ports` parses or is refused, and a
//! parsed pair gives a capacity that fits the range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use port_monitor::model::{
    TimeWaitReuse,
    ports::{PortConfig, parse_port_range, parse_reserved_ports},
};

fuzz_target!(|input: (&str, &str)| {
    let (range, reserved) = input;
    let (Ok(ephemeral), Ok(reserved)) = (parse_port_range(range), parse_reserved_ports(reserved))
    else {
        return;
    };
    let size = u32::from(*ephemeral.end()) - u32::from(*ephemeral.start()) + 1;
    let config = PortConfig {
        ephemeral,
        reserved,
        time_wait_reuse: TimeWaitReuse::default(),
    };
    assert!(config.capacity() <= size);
    // Whatever the server range, its overlap is within the range and the capacity.
    assert!(config.overlap(&(30000..=32767)) <= config.capacity());
});
