//! port-monitor: an eBPF ephemeral port monitor and Prometheus exporter.
//!
//! ```text
//! kernel programs ─► maps (counters) ─────┐
//!        └─────────► ring buffer (failures)┼─► model ─► exporter ─► /metrics
//! namespaces: socket tables + sysctls ─────┘
//! ```
//! `kernel` loads and reads the programs, `netns` and `snapshot` read every namespace's
//! socket tables, `model` holds the state as plain data (gauges, headroom per destination,
//! anomalies), `exporter` renders and serves it. `config` is the flags and the
//! configuration file. `cli` is what is run by hand on a node: `status` and `top`.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod exporter;
pub mod health;
pub mod kernel;
pub mod model;
pub mod netns;
pub mod snapshot;
pub mod workloads;
