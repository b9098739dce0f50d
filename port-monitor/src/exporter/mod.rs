//! The Prometheus side: render the model as metric families, serve them over HTTP.

mod connections;
pub mod metrics;
pub mod process;
pub mod server;
pub mod web_config;
mod write_deadline;

pub use metrics::ModelCollector;
