// Building blocks shared by the dashboards: template variables, panels, queries. Typed
// against @grafana/schema, so `npm run check` (tsc) proves every dashboard is a valid
// Grafana dashboard model.
import type { DataSourceRef, Panel, RowPanel, VariableModel } from "@grafana/schema";
import { VariableHide, VariableRefresh } from "@grafana/schema";

export const datasource: DataSourceRef = { type: "prometheus", uid: "${datasource}" };

/** Filters every query by: the selected job, node (instance) and namespace. */
export const selector = 'job=~"$job", instance=~"$node"';

/**
 * The pod of each network namespace, where it is known: port-monitor's pod UID
 * (port_monitor_netns_workload_info, from cgroup paths) joined with kube-state-metrics'
 * kube_pod_info (its `uid`). One series per (instance, netns), with `pod`, `namespace` and
 * `workload` ("namespace/pod", for legends). The containers of a pod share its namespace:
 * `max by` folds them, and `topk by (instance, netns) (1, ...)` keeps one pod per namespace
 * whatever happens, so that a join on it never matches two.
 */
export const podOfNetns =
  `topk by (instance, netns) (1, label_join(` +
  `label_replace(max by (instance, netns, pod_uid) (port_monitor_netns_workload_info{${selector}}), "uid", "$1", "pod_uid", "(.+)")` +
  ` * on(uid) group_left(pod, namespace) max by (uid, pod, namespace) (kube_pod_info), "workload", "/", "namespace", "pod"))`;

/**
 * `expression`, whose series have `instance` and `netns`, with `pod`, `namespace` and
 * `workload` of the namespace's pod where known (docs/kubernetes.md, "Pod names"). Series of
 * other namespaces (the host's, a pod kube-state-metrics does not list, or no
 * kube-state-metrics at all) are kept, without those labels: a series scraped through the
 * PodMonitor carries the exporter's own `pod` and `namespace`, which are removed rather than
 * shown as the workload's.
 */
export function named(expression: string): string {
  const unnamed = `label_replace(label_replace(${expression}, "pod", "", "pod", ".*"), "namespace", "", "namespace", ".*")`;
  return `(${expression}) * on(instance, netns) group_left(pod, namespace, workload) ${podOfNetns} or on(instance, netns) ${unnamed}`;
}

/** datasource, job, node, and netns: the variables every dashboard has. */
export function variables(): VariableModel[] {
  const query = (name: string, label: string, expression: string): VariableModel => ({
    name,
    label,
    type: "query",
    datasource,
    query: { query: expression, refId: `${name}-variable` },
    refresh: VariableRefresh.onTimeRangeChanged,
    includeAll: true,
    multi: true,
    allValue: ".*",
    hide: VariableHide.dontHide,
  });
  return [
    { name: "datasource", label: "Data source", type: "datasource", query: "prometheus", hide: VariableHide.dontHide },
    query("job", "Job", "label_values(port_monitor_build_info, job)"),
    query("node", "Node", 'label_values(port_monitor_build_info{job=~"$job"}, instance)'),
    query("netns", "Network namespace", `label_values(port_monitor_namespace_info{${selector}}, netns)`),
  ];
}

/** A query of a panel. */
export interface Query {
  expr: string;
  legend: string;
}

let nextId = 1;

/** A time series panel at (x, y), w x h grid units. */
export function timeseries(
  title: string,
  description: string,
  unit: string,
  queries: Query[],
  grid: { x: number; y: number; w: number; h: number },
): Panel {
  return {
    id: nextId++,
    type: "timeseries",
    title,
    description,
    datasource,
    gridPos: grid,
    fieldConfig: { defaults: { unit }, overrides: [] },
    options: { legend: { displayMode: "table", placement: "bottom", calcs: ["lastNotNull", "max"] } },
    targets: queries.map((query, index) => ({
      refId: String.fromCharCode(65 + index),
      datasource,
      expr: query.expr,
      legendFormat: query.legend,
    })),
  };
}

/** A table of the latest values. */
export function table(title: string, description: string, queries: Query[], grid: { x: number; y: number; w: number; h: number }): Panel {
  const panel = timeseries(title, description, "short", queries, grid);
  return {
    ...panel,
    type: "table",
    options: { showHeader: true },
    targets: panel.targets?.map((target) => ({ ...target, format: "table", instant: true })),
  };
}

/** A row header across the dashboard at height y: the panels below it, down to the next row, are its own. */
export function row(title: string, y: number): RowPanel {
  return { id: nextId++, type: "row", title, collapsed: false, panels: [], gridPos: { x: 0, y, w: 24, h: 1 } };
}
