//! The plot in BENCHMARKS.md: scrape latency against socket count, and the slowdown of each
//! monitor against the workload's connection rate, drawn by gnuplot from the data files the
//! other parts wrote.

use std::{io::Write as _, path::Path, process::Stdio};

use anyhow::{Context as _, Result, bail};

use super::{RESULTS, overhead, scrape};
use crate::cmd;

/// Where the plot goes: committed beside the document that shows it.
const PLOT: &str = "docs/benchmarks.png";

pub fn draw() -> Result<()> {
    let results = Path::new(RESULTS);
    let overhead = results.join(overhead::DATA);
    // One series per monitor: a block of the data file each.
    let series: Vec<String> = overhead::MONITORS
        .iter()
        .enumerate()
        .map(|(index, monitor)| {
            format!(
                "\"{}\" index {index} using 3:4:5:6 with yerrorlines title \"{}\"",
                overhead.display(),
                monitor.name()
            )
        })
        .collect();
    let script = format!(
        r#"
set terminal png size 1400,560 font ",11" noenhanced
set output "{PLOT}"
set multiplot layout 1,2
set grid
set key top left
set logscale xy
set title "Scrape latency (median, min-max)"
set xlabel "TCP sockets in the namespace"
set ylabel "ms"
plot "{scrape}" using 1:2:3:4 with yerrorlines title "port-monitor", \
     "{scrape}" using 1:5:6:7 with yerrorlines title "node_exporter (tcpstat, sockstat)"
unset logscale y
set logscale x
set title "Slowdown of the workload (median, min-max over pairs)"
set xlabel "workload cycles/s without a monitor (fin, rst: TCP; udp: UDP)"
set ylabel "% slower"
plot {series}
unset multiplot
"#,
        scrape = results.join(scrape::DATA).display(),
        series = series.join(", \\\n     "),
    );
    let mut gnuplot = cmd::command("gnuplot")
        .stdin(Stdio::piped())
        .spawn()
        .context("starting gnuplot")?;
    gnuplot
        .stdin
        .take()
        .context("gnuplot stdin")?
        .write_all(script.as_bytes())?;
    if !gnuplot.wait()?.success() {
        bail!("gnuplot failed");
    }
    println!("plot written to {PLOT}");
    Ok(())
}
