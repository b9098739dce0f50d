//! Any `--web.config.file` text is accepted or refused with a reason, never a panic, and an
//! accepted file has a client CA exactly when client certificates are verified: a CA that
//! nothing enforces, or verification against no named CA, never gets through.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use port_monitor::exporter::web_config::WebConfigFile;

fuzz_target!(|text: &str| {
    match WebConfigFile::parse(text, Path::new("fuzz.yml")) {
        Ok(file) => assert_eq!(
            file.client_auth().verifies(),
            file.client_ca_file().is_some(),
            "{file:?}"
        ),
        // Every refusal renders as a message.
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
