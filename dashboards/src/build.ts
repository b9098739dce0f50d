// Writes every dashboard as Grafana JSON into dashboards/ (`npm run build`).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { destinations } from "./destinations";
import { node } from "./node";
import { workloads } from "./workloads";

const outputs = { "port-monitor-node.json": node, "port-monitor-destinations.json": destinations, "port-monitor-workloads.json": workloads };
for (const [file, dashboard] of Object.entries(outputs)) {
  writeFileSync(join(__dirname, "..", file), JSON.stringify(dashboard, null, 2) + "\n");
}
