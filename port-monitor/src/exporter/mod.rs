//! The Prometheus side: render the model as metric families, serve them over HTTP.

pub mod metrics;
pub mod server;
pub mod web_config;

pub use metrics::ModelCollector;
