//! The Helm chart (`deploy/helm/port-monitor`), beside the kustomize base: linted and
//! rendered with the Helm SDK from the Python package index (`helm-python-sdk`: Helm's own Go
//! SDK as a library, no helm binary; driven by `helm.py` beside this file), the renderings
//! validated as the base is (`kubernetes-validate --strict`, checkov), and its default values
//! checked to make the same objects as the base. The chart's alerting rules are a copy of the
//! rules file that `cargo xtask rules` writes, checked identical.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{cmd, setup};

const CHART: &str = "deploy/helm/port-monitor";
/// The alerting rules, and the chart's copy of them (`.Files.Get` reads only the chart's own
/// directory).
const RULES: &str = "deploy/prometheus/port-monitor.rules.yml";
const RULES_COPY: &str = "deploy/helm/port-monitor/files/port-monitor.rules.yml";
/// The release the chart is rendered as: the base's names and namespace.
const RELEASE: &str = "port-monitor";
const NAMESPACE: &str = "port-monitor";
/// The values the chart is checked with: its defaults, and every option set.
const VALUES: [(&str, Option<&str>); 2] = [
    ("default", None),
    (
        "everything",
        Some("deploy/helm/port-monitor/ci/everything-values.yaml"),
    ),
];
/// The Kubernetes versions the chart is linted and validated for, as the base is
/// (`deploy.rs`).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];
/// Where the renderings are written, for the validators and for reading.
const OUT: &str = "target/helm";
/// Labels Helm charts put on their objects that the base has no use for: the release, the
/// chart's and app's versions. The comparison with the base leaves them out.
const HELM_LABELS: [&str; 4] = [
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
];
/// Kinds of the base that the chart leaves out: Helm creates the release's namespace
/// (`--create-namespace`), and a chart that owns its own namespace deletes everything in it
/// on uninstall.
const BASE_ONLY_KINDS: [&str; 1] = ["Namespace"];

/// `cargo xtask rules`: copies the rules file into the chart.
pub fn write_rules() -> Result<()> {
    std::fs::copy(RULES, RULES_COPY)
        .with_context(|| format!("copying {RULES} to {RULES_COPY}"))
        .map(drop)
}

/// Lints and renders the chart with each set of values, validates the renderings, and checks
/// that the defaults make the base's objects.
pub fn check() -> Result<()> {
    check_rules_copy()?;
    std::fs::create_dir_all(OUT)?;
    let mut renderings = Vec::new();
    for (name, values) in VALUES {
        for version in KUBERNETES_VERSIONS {
            let mut args = vec!["lint", CHART];
            let kube_version = format!("v{version}");
            args.push(&kube_version);
            args.extend(values);
            cmd::run(&mut helm_sdk(&args))?;
        }
        let mut args = vec!["render", CHART, RELEASE, NAMESPACE];
        args.extend(values);
        let rendered = output(&mut helm_sdk(&args))?;
        let path = PathBuf::from(OUT).join(format!("{name}.yaml"));
        std::fs::write(&path, rendered)?;
        for version in KUBERNETES_VERSIONS {
            cmd::run(
                cmd::command(&setup::python_tool("kubernetes-validate"))
                    .args(["--strict", "--kubernetes-version", version])
                    .arg(&path),
            )?;
        }
        renderings.push(path);
    }
    let mut checkov = cmd::command(&setup::python_tool("checkov"));
    checkov.args([
        "--quiet",
        "--compact",
        // Offline: no guideline download from the vendor's service.
        "--skip-download",
        "--framework",
        "kubernetes",
    ]);
    for path in &renderings {
        checkov.arg("--file").arg(path);
    }
    cmd::run(&mut checkov)?;
    same_as_base(&renderings[0])
}

fn check_rules_copy() -> Result<()> {
    let rules = std::fs::read_to_string(RULES).context("reading the rules file")?;
    let copy = std::fs::read_to_string(RULES_COPY).unwrap_or_default();
    if copy != rules {
        bail!("{RULES_COPY} is out of date with {RULES}: run `cargo xtask rules` and commit it");
    }
    Ok(())
}

/// The chart rendered with its defaults makes the objects of the kustomize base, field for
/// field, but for Helm's labels and the base's Namespace.
fn same_as_base(chart_rendering: &Path) -> Result<()> {
    let base_rendering = PathBuf::from(OUT).join("kustomize-base.yaml");
    let base = output(cmd::command("kubectl").args(["kustomize", "deploy/kubernetes"]))
        .context("kubectl kustomize deploy/kubernetes failed")?;
    std::fs::write(&base_rendering, base)?;
    let base = objects(&base_rendering)?;
    let chart = objects(chart_rendering)?;
    let differences = differences(&base, &chart);
    if !differences.is_empty() {
        bail!(
            "the chart ({CHART}) with its default values does not make the objects of the kustomize base (deploy/kubernetes):\n  {}",
            differences.join("\n  ")
        );
    }
    println!(
        "{CHART} with its default values makes the {} objects of deploy/kubernetes (less {})",
        chart.len(),
        BASE_ONLY_KINDS.join(", ")
    );
    Ok(())
}

/// (kind, namespace, name) of an object.
type Key = (String, String, String);

/// The objects of a YAML stream, by key, Helm's labels left out.
fn objects(path: &Path) -> Result<BTreeMap<Key, Value>> {
    let path = path.to_string_lossy();
    let json = output(&mut helm_sdk(&["json", &path]))?;
    let Value::Array(list) = serde_json::from_str(&json).context("the objects' JSON")? else {
        bail!("{path}: not a list of objects");
    };
    let mut objects = BTreeMap::new();
    for mut object in list {
        without_helm_labels(&mut object);
        let field = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let key = (
            field("/kind"),
            field("/metadata/namespace"),
            field("/metadata/name"),
        );
        if objects.insert(key.clone(), object).is_some() {
            bail!("{path}: {key:?} twice");
        }
    }
    Ok(objects)
}

/// Removes Helm's labels wherever labels are (metadata, selectors, pod templates).
fn without_helm_labels(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for label in HELM_LABELS {
                map.remove(label);
            }
            map.values_mut().for_each(without_helm_labels);
        }
        Value::Array(list) => list.iter_mut().for_each(without_helm_labels),
        _ => {}
    }
}

/// What differs between the base's objects and the chart's, one line each.
fn differences(base: &BTreeMap<Key, Value>, chart: &BTreeMap<Key, Value>) -> Vec<String> {
    let mut differences = Vec::new();
    for (key, object) in base {
        if BASE_ONLY_KINDS.contains(&key.0.as_str()) {
            continue;
        }
        match chart.get(key) {
            None => differences.push(format!("{key:?}: in the base, not in the chart")),
            Some(other) => {
                if let Some(difference) = first_difference(object, other, "") {
                    differences.push(format!("{key:?}: {difference}"));
                }
            }
        }
    }
    for key in chart.keys().filter(|key| !base.contains_key(*key)) {
        differences.push(format!("{key:?}: in the chart, not in the base"));
    }
    differences
}

/// Where two JSON values first differ, as a JSON pointer with both sides.
fn first_difference(base: &Value, chart: &Value, path: &str) -> Option<String> {
    match (base, chart) {
        (Value::Object(left), Value::Object(right)) => {
            let mut keys: Vec<&String> = left.keys().chain(right.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|key| {
                let path = format!("{path}/{key}");
                match (left.get(key), right.get(key)) {
                    (Some(left), Some(right)) => first_difference(left, right, &path),
                    (left, right) => Some(format!(
                        "{path}: base {}, chart {}",
                        shown(left),
                        shown(right)
                    )),
                }
            })
        }
        (Value::Array(left), Value::Array(right)) if left.len() == right.len() => left
            .iter()
            .zip(right)
            .enumerate()
            .find_map(|(index, (left, right))| {
                first_difference(left, right, &format!("{path}/{index}"))
            }),
        _ if base == chart => None,
        _ => Some(format!(
            "{path}: base {}, chart {}",
            shown(Some(base)),
            shown(Some(chart))
        )),
    }
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "(none)".to_owned(), Value::to_string)
}

/// `helm.py` with the project's Python, which has the Helm SDK.
fn helm_sdk(args: &[&str]) -> std::process::Command {
    let mut command = cmd::command(&setup::python_tool("python"));
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/src/helm.py"))
        .args(args);
    command
}

/// Runs `command`, its errors shown, and returns its standard output.
fn output(command: &mut std::process::Command) -> Result<String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {:?} failed with {}",
            command.get_args().collect::<Vec<_>>(),
            output.status
        );
    }
    String::from_utf8(output.stdout).context("output not UTF-8")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(kind: &str) -> Key {
        (kind.to_owned(), "ns".to_owned(), "x".to_owned())
    }

    #[test]
    fn helm_labels_are_left_out_everywhere_and_nothing_else() {
        let mut object = json!({
            "metadata": {"labels": {"app.kubernetes.io/name": "x", "helm.sh/chart": "x-1"}},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/instance": "r", "app.kubernetes.io/name": "x"}},
                     "template": {"metadata": {"labels": {"app.kubernetes.io/managed-by": "Helm", "tier": "node"}}}},
        });
        without_helm_labels(&mut object);
        assert_eq!(
            object,
            json!({
                "metadata": {"labels": {"app.kubernetes.io/name": "x"}},
                "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "x"}},
                         "template": {"metadata": {"labels": {"tier": "node"}}}},
            })
        );
    }

    #[test]
    fn the_first_difference_is_named_by_its_path() {
        let base = json!({"spec": {"args": ["--a", "--b"], "port": 9977}});
        assert_eq!(first_difference(&base, &base.clone(), ""), None);
        let chart = json!({"spec": {"args": ["--a", "--c"], "port": 9977}});
        assert_eq!(
            first_difference(&base, &chart, "").as_deref(),
            Some("/spec/args/1: base \"--b\", chart \"--c\"")
        );
        let chart = json!({"spec": {"args": ["--a", "--b"], "port": 9977, "extra": true}});
        assert_eq!(
            first_difference(&base, &chart, "").as_deref(),
            Some("/spec/extra: base (none), chart true")
        );
        let chart = json!({"spec": {"args": ["--a"], "port": 9977}});
        assert!(first_difference(&base, &chart, "").is_some());
    }

    #[test]
    fn missing_and_extra_objects_differ_but_the_base_namespace_does_not() {
        let base = BTreeMap::from([
            (key("Namespace"), json!({})),
            (key("Service"), json!({"a": 1})),
            (key("DaemonSet"), json!({})),
        ]);
        let chart = BTreeMap::from([
            (key("Service"), json!({"a": 1})),
            (key("ConfigMap"), json!({})),
        ]);
        assert_eq!(
            differences(&base, &chart),
            [
                "(\"DaemonSet\", \"ns\", \"x\"): in the base, not in the chart",
                "(\"ConfigMap\", \"ns\", \"x\"): in the chart, not in the base",
            ]
        );
    }
}
