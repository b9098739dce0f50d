"""Helm, through the Helm SDK on PyPI (helm-python-sdk: Helm's Go SDK as a C library, no
helm binary), for `cargo xtask test` (xtask/src/helm.rs runs this file with the project's
Python tools, target/tools/venv).

    render CHART RELEASE NAMESPACE [VALUES_FILE]   the manifests, as `helm template` prints them
    lint CHART KUBE_VERSION [VALUES_FILE]          `helm lint --strict`: fails on any warning
    json FILE                                      the YAML documents of FILE as a JSON array

Everything runs offline: no cluster, no repository.
"""

import json
import sys

import helm_python as helm


def values(argv, index):
    """The values file at argv[index], parsed as helm parses -f, or no values."""
    if len(argv) <= index:
        return None
    with open(argv[index], encoding="utf-8") as file:
        return helm.values_from_yaml(file.read())


def render(argv):
    chart_dir, release, namespace = argv[2:5]
    with helm.Chart.load(chart_dir) as chart:
        chart.validate_schema(values(argv, 5))
        manifests = chart.render(
            values(argv, 5), name=release, namespace=namespace, is_install=True
        )
    documents = []
    # In template order, as helm template prints them; NOTES.txt is for people.
    for path in sorted(manifests):
        text = manifests[path].strip()
        if path.endswith("NOTES.txt") or not text:
            continue
        documents.append(f"# Source: {path}\n{text}\n")
    sys.stdout.write("---\n".join(documents))


def lint(argv):
    chart_dir, kube_version = argv[2:4]
    report = helm.lint(chart_dir, values(argv, 4), strict=True, kube_version=kube_version)
    # Severity: 1 info, 2 warning, 3 error. Info (a missing icon) does not fail.
    findings = [m for m in report["messages"] if m["severity"] >= 2]
    for message in report["messages"]:
        print(f"[{message['severity']}] {message['path']}: {message['error']}")
    for error in report["errors"]:
        print(f"error: {error}")
    if findings or report["errors"] or report["total_charts_linted"] != 1:
        sys.exit(f"helm lint {chart_dir}: {len(findings)} findings")
    print(f"helm lint {chart_dir} (Kubernetes {kube_version}): 1 chart linted, no finding")


def to_json(argv):
    """Each YAML document of a file (separated by lines `---`), parsed by Helm's YAML reader."""
    with open(argv[2], encoding="utf-8") as file:
        lines = file.read().splitlines()
    objects = []
    document = []
    for line in lines + ["---"]:
        if line.rstrip() == "---":
            text = "\n".join(document)
            document = []
            parsed = helm.values_from_yaml(text) if text.strip() else {}
            if parsed:
                objects.append(parsed)
        else:
            document.append(line)
    json.dump(objects, sys.stdout)


COMMANDS = {"render": render, "lint": lint, "json": to_json}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](sys.argv)
