//! Putting the pieces together: load the programs, start the snapshot thread and the kernel
//! reader, serve HTTP until SIGTERM or SIGINT, then detach everything.

use std::sync::{Arc, RwLock, mpsc};

use anyhow::{Context as _, Result};
use prometheus::Registry;
use tokio::sync::watch;

use crate::{
    config::{Command, ConfigFile, Flags, LogFormat},
    exporter::{
        ModelCollector,
        metrics::{Detail, Static},
        server::{self, Endpoint},
        web_config::WebConfig,
    },
    health::Health,
    kernel::{self, Kernel},
    model::Model,
    snapshot,
};

/// Sets up logging to stderr in the configured format.
pub fn init_logging(flags: &Flags) {
    use std::io::IsTerminal as _;
    // The terminal is top's screen: a warning would tear it. Only the error it ends with is
    // written, once the screen is put back.
    let level = if matches!(flags.command, Some(Command::Top(_))) {
        tracing::Level::ERROR
    } else {
        flags.log_level.as_tracing()
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match flags.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs the command the configuration names.
///
/// # Errors
/// When start-up fails; the error says what is missing and what to do.
pub fn run(flags: Flags) -> Result<()> {
    match flags.command {
        Some(Command::Check) => runtime()?.block_on(check(&flags)),
        Some(Command::Status(ref args)) => crate::cli::status(&flags, args),
        Some(Command::Top(ref args)) => crate::cli::top(&flags, args),
        None => serve(flags),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The revision this binary was built from, set by build.rs.
const REVISION: &str = env!("PORT_MONITOR_REVISION");

/// Start-up happens on the main thread alone: the capabilities that only attaching needs are
/// dropped before any other thread exists, because `capset` changes the calling thread only
/// and threads started later inherit the smaller set.
fn serve(flags: Flags) -> Result<()> {
    // Refuse a bad configuration before touching the network or the kernel.
    let file = ConfigFile::load(flags.config_file.as_deref())
        .context("invalid configuration file (--config.file)")?;
    let web = WebConfig::load(flags.web_config_file.as_deref())
        .context("invalid web configuration file (--web.config.file)")?;
    // Bind first: a port already taken is the most common start-up mistake, and finding it
    // before loading anything into the kernel keeps the failure cheap and clear.
    let listener = server::bind(flags.listen_address).with_context(|| {
        format!(
            "cannot listen on {} (--web.listen-address)",
            flags.listen_address
        )
    })?;
    let (mut kernel, events) = Kernel::load(flags.collectors(), flags.cgroup_root.as_deref())
        .context("cannot start the kernel programs")?;
    kernel.seed_bound_sockets(&flags.procfs);
    kernel::requirements::drop_attach_capabilities(!flags.no_conntrack)
        .context("dropping the capabilities only attaching needed")?;
    for hook in kernel.hooks() {
        tracing::info!(program = hook.program, hook = %hook.attach_point, facts = hook.facts, "attached");
    }
    runtime()?.block_on(serve_attached(flags, &file, web, listener, kernel, events))
}

/// Serves until SIGTERM or SIGINT, with the programs attached and the capabilities dropped.
async fn serve_attached(
    flags: Flags,
    file: &ConfigFile,
    web: WebConfig,
    listener: std::net::TcpListener,
    kernel: Kernel,
    events: aya::maps::RingBuf<aya::maps::MapData>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .context("handing the listening socket to the async runtime")?;
    let settings = file.settings();
    let snapshot_interval = file.snapshot_interval(flags.snapshot_interval);
    let poll_interval = file.poll_interval(flags.poll_interval);

    let model = Arc::new(RwLock::new(Model::new(settings)));
    let registry = registry(&model, &kernel, flags.metrics_detail)?;
    let health = Arc::new(Health::new(snapshot_interval, poll_interval));
    let endpoint = Arc::new(Endpoint {
        registry,
        telemetry_path: flags.telemetry_path.clone(),
        health: Arc::clone(&health),
        web,
    });

    let (stop_snapshots, snapshots_stopped) = mpsc::channel();
    let snapshot_health = Arc::clone(&health);
    let snapshots = snapshot::spawn(
        snapshot::Sources {
            proc: flags.procfs.clone(),
            bound_sockets: kernel.bound_sockets(),
            conntrack: !flags.no_conntrack,
            tcp_lister: kernel.tcp_lister(),
        },
        snapshot_interval,
        Arc::clone(&model),
        kernel.transitions(),
        snapshots_stopped,
        move |duration| snapshot_health.snapshot_taken(duration),
    )
    .context("starting the snapshot thread")?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // On a thread of its own, as the snapshot thread is: it waits for the model's lock, which
    // a snapshot holds while it applies, and a runtime worker waiting there would be one
    // fewer for the scrapes and the health probes (a hung snapshot thread must not also
    // silence /-/healthy).
    let reader_model = Arc::clone(&model);
    let reader = std::thread::Builder::new()
        .name("kernel-reader".into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(kernel::reader::run(
                    kernel,
                    events,
                    reader_model,
                    poll_interval,
                    shutdown_rx,
                    move || health.counters_polled(),
                ))
        })
        .context("starting the kernel reader thread")?;

    tracing::info!(address = %listener.local_addr()?, path = %flags.telemetry_path, "serving metrics");
    server::serve(listener, endpoint, shutdown_signal()).await;

    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = stop_snapshots.send(());
    let kernel = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the kernel reader panicked"))?
        .context("the kernel reader failed")?;
    drop(kernel);
    tracing::info!("kernel programs detached");
    if snapshots.join().is_err() {
        tracing::warn!("the snapshot thread panicked");
    }
    Ok(())
}

fn registry(model: &Arc<RwLock<Model>>, kernel: &Kernel, detail: Detail) -> Result<Registry> {
    let registry = Registry::new();
    let fixed = Static {
        hooks: kernel.hooks().to_vec(),
        unavailable: kernel
            .unavailable()
            .iter()
            .map(|unavailable| unavailable.reason)
            .collect(),
        version: env!("CARGO_PKG_VERSION"),
        revision: REVISION,
        detail,
    };
    registry.register(Box::new(ModelCollector::new(Arc::clone(model), fixed)?))?;
    registry.register(Box::new(
        crate::exporter::process::ProcessCollector::for_self()?,
    ))?;
    Ok(registry)
}

/// Completes on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only SIGINT stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `port-monitor check`: load, attach, report, take one snapshot, detach.
async fn check(flags: &Flags) -> Result<()> {
    let (mut kernel, _events) = Kernel::load(flags.collectors(), flags.cgroup_root.as_deref())
        .context("cannot start the kernel programs")?;
    kernel.seed_bound_sockets(&flags.procfs);
    println!("kernel programs attached:");
    for hook in kernel.hooks() {
        println!(
            "  {:<18} {:<48} {}",
            hook.program, hook.attach_point, hook.facts
        );
    }
    for unavailable in kernel.unavailable() {
        println!("UNAVAILABLE {}: {}", unavailable.reason, unavailable.cause);
    }
    let sources = snapshot::Sources {
        proc: flags.procfs.clone(),
        bound_sockets: kernel.bound_sockets(),
        conntrack: !flags.no_conntrack,
        tcp_lister: kernel.tcp_lister(),
    };
    let node = tokio::task::spawn_blocking(move || snapshot::snapshot_node(&sources)).await?;
    println!(
        "snapshot: {} network namespaces read in {:.1} ms, {} unreadable",
        node.namespaces.len(),
        node.duration.as_secs_f64() * 1000.0,
        node.failed.len()
    );
    kernel
        .read_counters()
        .context("reading the kernel programs' counters")?;
    let kernel_unavailable: Vec<&str> = kernel
        .unavailable()
        .iter()
        .map(|unavailable| unavailable.reason)
        .collect();
    drop(kernel);
    println!("all programs detached: OK");
    if !kernel_unavailable.is_empty() {
        anyhow::bail!("running degraded: {}", kernel_unavailable.join(", "))
    }
    if node.failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} namespaces could not be read (see the log above)",
            node.failed.len()
        )
    }
}
