//! Privileged end-to-end tests: the real daemon binary, real eBPF programs on this kernel,
//! real sockets in network namespaces each test creates and removes, values read through
//! the real HTTP endpoint.
//!
//! They need root and share kernel state, so they run one at a time:
//! `cargo test -p port-monitor --test privileged -- --test-threads=1` (what `cargo xtask test`
//! runs). Without root they skip loudly; with `CI=true` they fail instead.
#![expect(
    clippy::float_cmp,
    reason = "metric values here are counts of sockets, ports and calls, compared exactly"
)]

mod anomalies;
mod bind_errors;
mod check;
mod churn;
mod config_file;
mod degraded;
mod exhaustion;
mod exposition;
mod ground_truth;
mod headroom;
mod health;
mod http_abuse;
mod lifecycle;
mod namespaces;
mod nat;
mod prometheus;
mod restart;
mod snapshot_sources;
mod status;
mod support;
mod tcp_gauges;
mod tls_auth;
mod tuning;
mod udp;
mod workloads;
