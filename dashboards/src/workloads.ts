// Workloads: the same numbers per pod, through the namespace's pod UID, named by
// kube-state-metrics where it is scraped.
import type { Dashboard } from "@grafana/schema";
import type { VariableModel } from "@grafana/schema";
import { VariableHide, VariableRefresh } from "@grafana/schema";
import { datasource, named, selector, table, timeseries, variables } from "./common";

/** The namespace of each selected pod, one series each, with its UID and `workload`: the UID. */
const uids =
  `label_replace(label_replace(topk by (instance, netns) (1, max by (instance, netns, pod_uid) (port_monitor_netns_workload_info{${selector}, pod_uid=~"$pod"})), ` +
  `"uid", "$1", "pod_uid", "(.+)"), "workload", "$1", "pod_uid", "(.*)")`;

/** The same, with `pod`, `namespace` and `workload` ("namespace/pod") where kube-state-metrics lists the pod. */
const pods =
  `(${uids} * on(uid) group_left(pod, namespace, workload) label_join(max by (uid, pod, namespace) (kube_pod_info), "workload", "/", "namespace", "pod")` +
  ` or on(instance, netns) ${uids})`;

/** Puts the pod of each series' namespace on it (UID, and names where known), keeping the selected pods. */
const byPod = (expression: string): string =>
  `(${expression}) * on(instance, netns) group_left(pod_uid, pod, namespace, workload) ${pods}`;

/** The pods, by UID. */
const pod: VariableModel = {
  name: "pod",
  label: "Pod UID",
  type: "query",
  datasource,
  query: { query: `label_values(port_monitor_netns_workload_info{${selector}}, pod_uid)`, refId: "pod-variable" },
  refresh: VariableRefresh.onTimeRangeChanged,
  includeAll: true,
  multi: true,
  allValue: ".*",
  hide: VariableHide.dontHide,
};

export const workloads: Dashboard = {
  uid: "port-monitor-workloads",
  title: "port-monitor / Workloads",
  description: "Ephemeral port use, exhaustion and anomalies per pod (by pod UID, from cgroup paths; named namespace/pod where kube-state-metrics is scraped).",
  tags: ["port-monitor"],
  schemaVersion: 39,
  editable: true,
  time: { from: "now-6h", to: "now" },
  refresh: "30s",
  templating: { list: [...variables(), pod] },
  panels: [
    timeseries(
      "Worst utilization per pod",
      "The highest utilization ratio in each pod's network namespace.",
      "percentunit",
      [{ expr: byPod(`max by (instance, netns) (port_monitor_ephemeral_utilization_max_ratio{${selector}})`), legend: "{{workload}}" }],
      { x: 0, y: 0, w: 12, h: 8 },
    ),
    timeseries(
      "Exhaustion per pod",
      "Calls failing for lack of ports, per pod.",
      "ops",
      [{ expr: byPod(`sum by (instance, netns) (rate(port_monitor_port_exhaustion_total{${selector}}[5m]))`), legend: "{{workload}}" }],
      { x: 12, y: 0, w: 12, h: 8 },
    ),
    timeseries(
      "TIME_WAIT per pod",
      "TIME_WAIT sockets in each pod's namespace.",
      "short",
      [{ expr: byPod(`sum by (instance, netns) (port_monitor_sockets{${selector}, state="time_wait"})`), legend: "{{workload}}" }],
      { x: 0, y: 8, w: 12, h: 8 },
    ),
    table(
      "Namespaces and their pods",
      "Which network namespace belongs to which pod and container; the pod's name and namespace where kube-state-metrics lists it.",
      [{ expr: named(`port_monitor_netns_workload_info{${selector}, pod_uid=~"$pod"}`), legend: "" }],
      { x: 12, y: 8, w: 12, h: 8 },
    ),
  ],
};
