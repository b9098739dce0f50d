//! Any configuration file text is accepted with in-range values or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use port_monitor::config::ConfigFile;

fuzz_target!(|text: &str| {
    if let Ok(config) = ConfigFile::parse(text, "fuzz.toml") {
        // Everything the daemon derives from an accepted file must work too.
        let _ = config.settings();
        let _ = config.snapshot_interval(None);
        let _ = config.poll_interval(None);
    }
});
