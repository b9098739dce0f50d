// Destinations: which destination of which namespace is running out of ports: ephemeral
// ports, source-NAT ports, and connects stalled or timing out toward a destination.
import type { Dashboard } from "@grafana/schema";
import { named, row, selector, table, timeseries, variables } from "./common";

const ns = `${selector}, netns=~"$netns"`;

export const destinations: Dashboard = {
  uid: "port-monitor-destinations",
  title: "port-monitor / Destinations",
  description: "The busiest TCP destinations of each namespace and how much headroom they have left; source-NAT ports per destination; connects stalled or timing out per destination.",
  tags: ["port-monitor"],
  schemaVersion: 39,
  editable: true,
  time: { from: "now-6h", to: "now" },
  refresh: "30s",
  templating: { list: variables() },
  panels: [
    timeseries(
      "Top destinations by utilization",
      "Share of the ephemeral range a new connect() to the destination can no longer use.",
      "percentunit",
      [{ expr: named(`topk(10, port_monitor_destination_utilization_ratio{${ns}})`), legend: "{{netns}} {{workload}} {{src_addr}} → {{dst_addr}}:{{dst_port}}" }],
      { x: 0, y: 0, w: 24, h: 9 },
    ),
    timeseries(
      "Ports in use per destination",
      "Ephemeral ports held toward each of the busiest destinations, TIME_WAIT included.",
      "short",
      [{ expr: named(`topk(10, port_monitor_destination_ports_in_use{${ns}})`), legend: "{{netns}} {{workload}} {{dst_addr}}:{{dst_port}}" }],
      { x: 0, y: 9, w: 12, h: 8 },
    ),
    timeseries(
      "Headroom left",
      "Ports still free toward the busiest destination of each namespace.",
      "short",
      [
        {
          expr: named(
            `(1 - max by (instance, netns) (port_monitor_ephemeral_utilization_max_ratio{${ns}, protocol="tcp"})) * on(instance, netns) group_left max by (instance, netns) (port_monitor_ephemeral_ports_capacity{${ns}})`,
          ),
          legend: "{{instance}} {{netns}} {{workload}}",
        },
      ],
      { x: 12, y: 9, w: 12, h: 8 },
    ),
    table(
      "Destinations now",
      "The busiest destinations of every namespace, latest values.",
      [{ expr: named(`port_monitor_destination_utilization_ratio{${ns}}`), legend: "" }],
      { x: 0, y: 17, w: 24, h: 8 },
    ),
    row("NAT destinations", 25),
    timeseries(
      "Top NAT destinations by utilization",
      "Share of the NAT's port range (SNAT, MASQUERADE) in use from a NAT address toward a destination. At 1 the NAT drops new connections to it (their SYNs): the clients' connect() times out.",
      "percentunit",
      [{ expr: named(`topk(10, port_monitor_nat_utilization_ratio{${ns}})`), legend: "{{netns}} {{workload}} {{protocol}} {{nat_addr}} → {{dst_addr}}:{{dst_port}}" }],
      { x: 0, y: 26, w: 24, h: 9 },
    ),
    timeseries(
      "NAT ports in use per destination",
      "Source-NAT ports held from each NAT address toward each of the busiest destinations.",
      "short",
      [{ expr: named(`topk(10, port_monitor_nat_ports_in_use{${ns}})`), legend: "{{netns}} {{workload}} {{protocol}} {{nat_addr}} → {{dst_addr}}:{{dst_port}}" }],
      { x: 0, y: 35, w: 12, h: 8 },
    ),
    table(
      "NAT destinations now",
      "The busiest NAT destinations of every namespace, latest values.",
      [{ expr: named(`port_monitor_nat_utilization_ratio{${ns}}`), legend: "" }],
      { x: 12, y: 35, w: 12, h: 8 },
    ),
    row("Clients behind a NAT", 43),
    timeseries(
      "Connections stuck in SYN_SENT",
      "TCP sockets waiting for an answer to their SYN, per destination. Many, toward one destination, while others answer: a NAT on the way (a cloud NAT gateway) out of ports drops them.",
      "short",
      [{ expr: named(`topk(10, port_monitor_destination_syn_sent{${ns}})`), legend: "{{netns}} {{workload}} {{protocol}} → {{dst_addr}}:{{dst_port}}" }],
      { x: 0, y: 44, w: 12, h: 8 },
    ),
    timeseries(
      "Connect timeouts per destination",
      "connect() calls failing with ETIMEDOUT per destination: the SYN and its retransmissions went unanswered.",
      "ops",
      [
        {
          expr: named(`topk(10, sum by (instance, netns, protocol, dst_addr, dst_port) (rate(port_monitor_destination_connect_timeouts_total{${ns}}[5m])))`),
          legend: "{{netns}} {{workload}} {{protocol}} → {{dst_addr}}:{{dst_port}}",
        },
      ],
      { x: 12, y: 44, w: 12, h: 8 },
    ),
  ],
};
