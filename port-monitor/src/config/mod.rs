//! Configuration: the command-line flags (`flags`) and the optional TOML file (`file`). A flag
//! given wins over the file; each default is written once: the intervals' here, the
//! thresholds and sizes in `model::Settings::default`, which the file's defaults are.

mod client;
mod file;
mod flags;

use std::time::Duration;

pub use client::{DaemonAccess, Output, StatusArgs, TopArgs};
pub use file::{ConfigFile, FileError};
pub use flags::{Command, Flags, LogFormat, LogLevel, parse_interval};

/// How often every namespace's socket tables are read, when neither flag nor file says.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(5);

/// How often the kernel programs' counters are read, when neither flag nor file says.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest interval accepted: below it the daemon would mostly measure itself.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
