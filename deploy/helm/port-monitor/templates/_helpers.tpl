{{/* The chart's name: app.kubernetes.io/name. */}}
{{- define "port-monitor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object names: the release name when it contains the chart's name, else "<release>-<name>". */}}
{{- define "port-monitor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "port-monitor.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Selects this release's pods. */}}
{{- define "port-monitor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "port-monitor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Every object's labels. */}}
{{- define "port-monitor.labels" -}}
{{ include "port-monitor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "port-monitor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "port-monitor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The web configuration's Secret, or none. */}}
{{- define "port-monitor.webConfigSecret" -}}
{{- if .Values.webConfig.existingSecret }}
{{- .Values.webConfig.existingSecret }}
{{- else if .Values.webConfig.config }}
{{- printf "%s-web-config" (include "port-monitor.fullname" .) }}
{{- end }}
{{- end }}

{{/* "true" when the endpoint speaks TLS. */}}
{{- define "port-monitor.tls" -}}
{{- if or .Values.webConfig.tls (hasKey (.Values.webConfig.config | default dict) "tls_server_config") }}true{{ end }}
{{- end }}

{{/* The web configuration's client_auth_type. */}}
{{- define "port-monitor.clientAuthType" -}}
{{- $tls := get (.Values.webConfig.config | default dict) "tls_server_config" | default dict }}
{{- get $tls "client_auth_type" | default .Values.webConfig.clientAuthType }}
{{- end }}

{{/* A probe of `path`: HTTP(S) GET, or a TCP connect where the handshake needs a client
certificate kubelet does not have (docs/security.md). */}}
{{- define "port-monitor.probe" -}}
{{- if eq (include "port-monitor.clientAuthType" .root) "RequireAndVerifyClientCert" -}}
tcpSocket:
  port: metrics
{{- else -}}
httpGet:
  path: {{ .path }}
  port: metrics
  {{- if include "port-monitor.tls" .root }}
  scheme: HTTPS
  {{- end }}
{{- end }}
{{- end }}

{{/* The daemon's arguments, from the flags' values. */}}
{{- define "port-monitor.args" -}}
{{- $flags := .Values.flags -}}
- --web.listen-address=:{{ .Values.port }}
{{- with $flags.web.telemetryPath }}
- {{ print "--web.telemetry-path=" . | quote }}
{{- end }}
{{- if include "port-monitor.webConfigSecret" . }}
- --web.config.file=/etc/port-monitor/web/web-config.yml
{{- end }}
{{- with $flags.metrics.detail }}
- {{ print "--metrics.detail=" . | quote }}
{{- end }}
{{- with $flags.snapshot.interval }}
- {{ print "--snapshot.interval=" . | quote }}
{{- end }}
{{- with $flags.kernel.pollInterval }}
- {{ print "--kernel.poll-interval=" . | quote }}
{{- end }}
{{- with $flags.kernel.tcpStateHook }}
- {{ print "--kernel.tcp-state-hook=" . | quote }}
{{- end }}
{{- with $flags.kernel.errnoHook }}
- {{ print "--kernel.errno-hook=" . | quote }}
{{- end }}
{{- with $flags.kernel.cgroupRoot }}
- {{ print "--kernel.cgroup-root=" . | quote }}
{{- end }}
{{- if not $flags.collectors.bind }}
- --no-collector.bind
{{- end }}
{{- if not $flags.collectors.autobind }}
- --no-collector.autobind
{{- end }}
{{- if not $flags.collectors.conntrack }}
- --no-collector.conntrack
{{- end }}
{{- with $flags.path.procfs }}
- {{ print "--path.procfs=" . | quote }}
{{- end }}
{{- if .Values.config }}
- --config.file=/etc/port-monitor/config/config.toml
{{- end }}
{{- with $flags.log.level }}
- {{ print "--log.level=" . | quote }}
{{- end }}
{{- with $flags.log.format }}
- {{ print "--log.format=" . | quote }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
