//! The Grafana dashboards: written in TypeScript against `@grafana/schema` (dashboards/src),
//! type-checked with tsc, built to the JSON files Grafana imports (dashboards/*.json).

use anyhow::{Result, bail};

use crate::cmd;

const DIR: &str = "dashboards";

/// Installs the pinned npm packages when missing.
fn install() -> Result<()> {
    if std::path::Path::new(DIR)
        .join("node_modules/@grafana/schema")
        .is_dir()
    {
        return Ok(());
    }
    cmd::run(
        cmd::command("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(DIR),
    )
}

/// `cargo xtask dashboards`: type-checks and rebuilds the JSON.
pub fn build() -> Result<()> {
    install()?;
    cmd::run(
        cmd::command("npm")
            .args(["run", "--silent", "build"])
            .current_dir(DIR),
    )
}

/// Type-checks the dashboards and fails if the committed JSON is not what they build to.
pub fn check() -> Result<()> {
    build()?;
    let unchanged =
        cmd::succeeds(cmd::command("git").args(["diff", "--quiet", "--", "dashboards/*.json"]));
    if !unchanged {
        bail!(
            "dashboards/*.json is out of date with dashboards/src: run `cargo xtask dashboards` and commit it"
        );
    }
    Ok(())
}
