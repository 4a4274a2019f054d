{{/* Names and labels. */}}
{{- define "ih.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ih.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ih.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ih.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The plugin's pod (with interLink when enabled): what the Deployment, the Services and the
NetworkPolicy select. The component label keeps the release's other pods (token refresh)
out of the Services, which publish not-ready addresses.
*/}}
{{- define "ih.podSelectorLabels" -}}
{{ include "ih.selectorLabels" . }}
app.kubernetes.io/component: plugin
{{- end }}

{{- define "ih.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ih.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ih.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ih.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Fixed paths inside the plugin container. */}}
{{- define "ih.configPath" -}}/etc/interlink-htcondor/config/config.yaml{{- end }}
{{- define "ih.bearerPath" -}}/etc/interlink-htcondor/bearer{{- end }}
{{- define "ih.tlsPath" -}}/etc/interlink-htcondor/tls{{- end }}

{{/* The plugin's TCP listener exists only when interLink is not in the pod. */}}
{{- define "ih.tcp" -}}{{- if not .Values.interlink.enabled }}true{{- end }}{{- end }}

{{- define "ih.httpScheme" -}}{{- if .Values.tls.existingSecret }}HTTPS{{- else }}HTTP{{- end }}{{- end }}

{{/*
Checks that combinations of values make sense; rendered (as nothing) by the ConfigMap so that
`helm template` and `helm install` stop with a clear message.
*/}}
{{- define "ih.validate" -}}
{{- if not (has .Values.auth.method (list "" "IDTOKENS" "SCITOKENS")) }}
{{- fail (printf "auth.method must be \"\", IDTOKENS or SCITOKENS, not %q" .Values.auth.method) }}
{{- end }}
{{- if and .Values.auth.method (not .Values.auth.existingSecret) }}
{{- fail "auth.existingSecret is required when auth.method is set" }}
{{- end }}
{{- if and .Values.auth.refresh.enabled (not .Values.auth.existingSecret) }}
{{- fail "auth.refresh needs auth.existingSecret (the Secret it refreshes)" }}
{{- end }}
{{- if and .Values.auth.refresh.enabled (not .Values.auth.refresh.image) }}
{{- fail "auth.refresh.image is required when auth.refresh.enabled" }}
{{- end }}
{{- if .Values.interlink.enabled }}
{{- if .Values.bearerToken.existingSecret }}
{{- fail "bearerToken: interLink sends no bearer token; with interlink.enabled the plugin is reachable only through its unix socket" }}
{{- end }}
{{- if .Values.tls.existingSecret }}
{{- fail "tls: the plugin serves TLS on TCP only; with interlink.enabled it listens on a unix socket (use interlink.tls for interLink's own listener)" }}
{{- end }}
{{- if .Values.metrics.enabled }}
{{- fail "metrics: /metrics is served on the plugin's TCP listener, which does not exist with interlink.enabled (the plugin then listens only on its unix socket)" }}
{{- end }}
{{- if not (isAbs .Values.interlink.socketPath) }}
{{- fail "interlink.socketPath must be an absolute path" }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.from) }}
{{- fail "networkPolicy.from must list the peers allowed to connect when networkPolicy.enabled" }}
{{- end }}
{{- $server := dig "server" dict (.Values.config | default dict) | default dict }}
{{- range $key := list "host" "port" "socket" "bearer_token_file" "tls_cert" "tls_key" }}
{{- if hasKey $server $key }}
{{- fail (printf "config.server.%s is set by the chart; use interlink.*, service.port, bearerToken or tls instead" $key) }}
{{- end }}
{{- end }}
{{- if .Values.auth.method }}
{{- $schedd := dig "schedd" dict (.Values.config | default dict) | default dict }}
{{- range $key := list "auth_methods" "token_dir" "scitoken_file" }}
{{- if hasKey $schedd $key }}
{{- fail (printf "config.schedd.%s is set by the chart from auth.*; remove it from config" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if not (dig "storage" "shared_dir" "" (.Values.config | default dict)) }}
{{- fail "config.storage.shared_dir is required: the chart mounts storage.volume there" }}
{{- end }}
{{- end }}

{{/*
The plugin's config file: `config` with the keys the chart derives (listener, auth) merged in,
so the socket path here and interLink's SidecarURL come from the same value.
*/}}
{{- define "ih.pluginConfig" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $server := dig "server" dict $cfg | default dict }}
{{- if .Values.interlink.enabled }}
{{- $_ := set $server "socket" .Values.interlink.socketPath }}
{{- else }}
{{- $_ := set $server "host" "0.0.0.0" }}
{{- $_ := set $server "port" (int .Values.service.port) }}
{{- if .Values.bearerToken.existingSecret }}
{{- $_ := set $server "bearer_token_file" (printf "%s/%s" (include "ih.bearerPath" .) .Values.bearerToken.key) }}
{{- end }}
{{- if .Values.tls.existingSecret }}
{{- $_ := set $server "tls_cert" (printf "%s/tls.crt" (include "ih.tlsPath" .)) }}
{{- $_ := set $server "tls_key" (printf "%s/tls.key" (include "ih.tlsPath" .)) }}
{{- end }}
{{- end }}
{{- $_ := set $cfg "server" $server }}
{{- if .Values.auth.method }}
{{- $schedd := dig "schedd" dict $cfg | default dict }}
{{- $_ := set $schedd "auth_methods" .Values.auth.method }}
{{- if eq .Values.auth.method "IDTOKENS" }}
{{- $_ := set $schedd "token_dir" .Values.auth.mountPath }}
{{- else }}
{{- $_ := set $schedd "scitoken_file" (printf "%s/%s" .Values.auth.mountPath .Values.auth.scitokenKey) }}
{{- end }}
{{- $_ := set $cfg "schedd" $schedd }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* interLink API server config (upstream InterLinkConfig.yaml field names). */}}
{{- define "ih.interlinkConfig" -}}
{{- $scheme := ternary "https" "http" (ne .Values.interlink.tls.existingSecret "") -}}
InterlinkAddress: {{ printf "%s://0.0.0.0" $scheme | quote }}
InterlinkPort: {{ .Values.interlink.port | toString | quote }}
SidecarURL: {{ printf "unix://%s" .Values.interlink.socketPath | quote }}
VerboseLogging: {{ .Values.interlink.verboseLogging }}
ErrorsOnlyLogging: {{ .Values.interlink.errorsOnlyLogging }}
DataRootFolder: "/var/lib/interlink/"
{{- if .Values.interlink.tls.existingSecret }}
TLS:
  Enabled: true
  CertFile: "/etc/interlink-tls/tls.crt"
  KeyFile: "/etc/interlink-tls/tls.key"
  {{- if .Values.interlink.tls.clientCAKey }}
  CACertFile: {{ printf "/etc/interlink-tls/%s" .Values.interlink.tls.clientCAKey | quote }}
  {{- end }}
{{- end }}
{{- end }}
