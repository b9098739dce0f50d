// Node overview: how full every namespace's ephemeral range is, TIME_WAIT, failures and
// anomalies as they happen, and the exporter's own health; then the NATs and conntrack
// tables of the node's namespaces.
import type { Dashboard } from "@grafana/schema";
import { named, row, selector, table, timeseries, variables } from "./common";

const ns = `${selector}, netns=~"$netns"`;

export const node: Dashboard = {
  uid: "port-monitor-node",
  title: "port-monitor / Node overview",
  description: "Ephemeral port use per network namespace, TIME_WAIT, exhaustion and anomalies; NAT ports and conntrack tables.",
  tags: ["port-monitor"],
  schemaVersion: 39,
  editable: true,
  time: { from: "now-6h", to: "now" },
  refresh: "30s",
  templating: { list: variables() },
  panels: [
    timeseries(
      "Worst utilization per namespace",
      "The highest share of ephemeral ports in use toward one destination (TCP) or on one local address (UDP). 1 means the next connect fails. Each namespace is named by its pod (namespace/pod) where kube-state-metrics is scraped.",
      "percentunit",
      [{ expr: named(`max by (instance, netns, protocol) (port_monitor_ephemeral_utilization_max_ratio{${ns}})`), legend: "{{instance}} {{netns}} {{workload}} {{protocol}}" }],
      { x: 0, y: 0, w: 12, h: 8 },
    ),
    timeseries(
      "Ports in use by range",
      "Distinct local ports held, by IANA range and the namespace's own ephemeral range.",
      "short",
      [{ expr: `sum by (range, protocol) (port_monitor_ports_in_use{${ns}})`, legend: "{{protocol}} {{range}}" }],
      { x: 12, y: 0, w: 12, h: 8 },
    ),
    timeseries(
      "TIME_WAIT sockets",
      "Sockets in TIME_WAIT per namespace: each holds its port for 60 s.",
      "short",
      [{ expr: named(`sum by (instance, netns) (port_monitor_sockets{${ns}, state="time_wait"})`), legend: "{{instance}} {{netns}} {{workload}}" }],
      { x: 0, y: 8, w: 12, h: 8 },
    ),
    timeseries(
      "Exhaustion and anomalies per second",
      "Calls failing for lack of ports, and every anomaly kind, as they happen.",
      "ops",
      [
        { expr: `sum by (operation, protocol) (rate(port_monitor_port_exhaustion_total{${ns}}[5m]))`, legend: "exhaustion {{protocol}} {{operation}}" },
        { expr: `sum by (kind) (rate(port_monitor_anomalies_total{${ns}}[5m]))`, legend: "anomaly {{kind}}" },
      ],
      { x: 12, y: 8, w: 12, h: 8 },
    ),
    timeseries(
      "Failed connect() and bind()",
      "By errno: EADDRNOTAVAIL and EADDRINUSE are port problems, ECONNREFUSED means nothing listens.",
      "ops",
      [
        { expr: `sum by (errno) (rate(port_monitor_connect_errors_total{${ns}}[5m]))`, legend: "connect {{errno}}" },
        { expr: `sum by (errno) (rate(port_monitor_bind_errors_total{${ns}}[5m]))`, legend: "bind {{errno}}" },
      ],
      { x: 0, y: 16, w: 12, h: 8 },
    ),
    timeseries(
      "Exporter health",
      "Records lost, namespaces not read, snapshot time: all should stay near zero.",
      "short",
      [
        { expr: `sum by (instance) (rate(port_monitor_events_lost_total{${selector}}[5m]))`, legend: "records lost/s {{instance}}" },
        { expr: `sum by (instance) (rate(port_monitor_snapshot_failures_total{${selector}}[5m]))`, legend: "unreadable namespaces/s {{instance}}" },
        { expr: `max by (instance) (port_monitor_snapshot_duration_seconds{${selector}})`, legend: "snapshot seconds {{instance}}" },
      ],
      { x: 12, y: 16, w: 12, h: 8 },
    ),
    table(
      "Latest anomalies",
      "The most recent anomaly of each kind, with the process and cgroup when the kernel saw them.",
      [{ expr: named(`port_monitor_anomaly_last_info{${selector}}`), legend: "{{kind}}" }],
      { x: 0, y: 24, w: 24, h: 8 },
    ),
    row("NAT and conntrack", 32),
    timeseries(
      "Worst NAT utilization per namespace",
      "The highest share of its source-NAT port range a namespace's NAT (SNAT, MASQUERADE) uses toward one destination. At 1 the NAT drops new connections to it: their clients time out.",
      "percentunit",
      [{ expr: named(`max by (instance, netns, protocol) (port_monitor_nat_utilization_max_ratio{${ns}})`), legend: "{{instance}} {{netns}} {{workload}} {{protocol}}" }],
      { x: 0, y: 33, w: 8, h: 8 },
    ),
    timeseries(
      "Conntrack entries and limit",
      "Connections in each namespace's conntrack table (conntrack -C), and the limit (nf_conntrack_max): when full, the first packet of every new connection is dropped.",
      "short",
      [
        { expr: named(`sum by (instance, netns) (port_monitor_conntrack_entries{${ns}})`), legend: "{{instance}} {{netns}} {{workload}}" },
        { expr: `max by (instance) (port_monitor_conntrack_entries_limit{${ns}})`, legend: "limit {{instance}}" },
      ],
      { x: 8, y: 33, w: 8, h: 8 },
    ),
    timeseries(
      "Conntrack failures per second",
      "Packets of new connections the conntrack table refused (conntrack -S): insert_failed and drop rise when a NAT has no port left, early_drop when the table is full.",
      "ops",
      [
        {
          expr: named(`sum by (instance, netns, event) (rate(port_monitor_conntrack_events_total{${ns}, event=~"insert_failed|drop|early_drop"}[5m]))`),
          legend: "{{instance}} {{netns}} {{workload}} {{event}}",
        },
      ],
      { x: 16, y: 33, w: 8, h: 8 },
    ),
  ],
};
