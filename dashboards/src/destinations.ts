// Destinations: which destination of which namespace is running out of ports.
import type { Dashboard } from "@grafana/schema";
import { selector, table, timeseries, variables } from "./common";

const ns = `${selector}, netns=~"$netns"`;

export const destinations: Dashboard = {
  uid: "port-monitor-destinations",
  title: "port-monitor / Destinations",
  description: "The busiest TCP destinations of each namespace and how much headroom they have left.",
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
      [{ expr: `topk(10, port_monitor_destination_utilization_ratio{${ns}})`, legend: "{{netns}} {{src_addr}} → {{dst_addr}}:{{dst_port}}" }],
      { x: 0, y: 0, w: 24, h: 9 },
    ),
    timeseries(
      "Ports in use per destination",
      "Ephemeral ports held toward each of the busiest destinations, TIME_WAIT included.",
      "short",
      [{ expr: `topk(10, port_monitor_destination_ports_in_use{${ns}})`, legend: "{{netns}} {{dst_addr}}:{{dst_port}}" }],
      { x: 0, y: 9, w: 12, h: 8 },
    ),
    timeseries(
      "Headroom left",
      "Ports still free toward the busiest destination of each namespace.",
      "short",
      [
        {
          expr: `(1 - max by (instance, netns) (port_monitor_ephemeral_utilization_max_ratio{${ns}, protocol="tcp"})) * on(instance, netns) group_left max by (instance, netns) (port_monitor_ephemeral_ports_capacity{${ns}})`,
          legend: "{{instance}} {{netns}}",
        },
      ],
      { x: 12, y: 9, w: 12, h: 8 },
    ),
    table(
      "Destinations now",
      "The busiest destinations of every namespace, latest values.",
      [{ expr: `port_monitor_destination_utilization_ratio{${ns}}`, legend: "" }],
      { x: 0, y: 17, w: 24, h: 8 },
    ),
  ],
};
