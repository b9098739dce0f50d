use std::process::ExitCode;

use clap::Parser as _;
use port_monitor::{config::Config, daemon};

fn main() -> ExitCode {
    let config = Config::parse();
    daemon::init_logging(&config);
    match daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
