use std::process::ExitCode;

use clap::Parser as _;
use port_monitor::{config::Flags, daemon};

fn main() -> ExitCode {
    let flags = Flags::parse();
    daemon::init_logging(&flags);
    match daemon::run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Many error types already end their message with
/// their source's, so a cause is written only when it adds something.
fn describe(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.ends_with(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}
