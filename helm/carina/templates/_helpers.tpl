{{/*
Names, labels and shared blocks. Every object is named "<fullname>-<component>" and carries
app.kubernetes.io/component, so the Services, monitors and NetworkPolicies select by component.
*/}}

{{- define "carina.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release-scoped prefix of every object name (at most 50 characters, so suffixes fit). */}}
{{- define "carina.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "carina.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "carina.labels" -}}
helm.sh/chart: {{ include "carina.chart" . }}
app.kubernetes.io/name: {{ include "carina.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: carina
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "operator"). */}}
{{- define "carina.selectorLabels" -}}
app.kubernetes.io/name: {{ include "carina.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects. */}}
{{- define "carina.componentLabels" -}}
{{ include "carina.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* An image reference: (dict "ctx" $ "image" .Values.operator.image). */}}
{{- define "carina.image" -}}
{{- $tag := .image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion }}
{{- $registry := .image.registry | default .ctx.Values.image.registry }}
{{- if .image.digest }}
{{- printf "%s/%s@%s" $registry .image.repository .image.digest }}
{{- else }}
{{- printf "%s/%s:%s" $registry .image.repository (toString $tag) }}
{{- end }}
{{- end }}

{{- define "carina.operator.fullname" -}}
{{ include "carina.fullname" . }}-operator
{{- end }}

{{- define "carina.controlPlane.fullname" -}}
{{ include "carina.fullname" . }}-control-plane
{{- end }}

{{- define "carina.healthAgent.fullname" -}}
{{ include "carina.fullname" . }}-health-agent
{{- end }}

{{- define "carina.healthAgent.serviceAccountName" -}}
{{- if .Values.healthAgent.serviceAccount.create }}
{{- default (include "carina.healthAgent.fullname" .) .Values.healthAgent.serviceAccount.name }}
{{- else }}
{{- required "healthAgent.serviceAccount.name is required when healthAgent.serviceAccount.create is false" .Values.healthAgent.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "carina.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "carina.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "carina.controlPlane.serviceAccountName" -}}
{{- if .Values.controlPlane.serviceAccount.create }}
{{- default (include "carina.controlPlane.fullname" .) .Values.controlPlane.serviceAccount.name }}
{{- else }}
{{- required "controlPlane.serviceAccount.name is required when controlPlane.serviceAccount.create is false" .Values.controlPlane.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespaces that get the workers' ServiceAccount: the list, or the release's namespace. */}}
{{- define "carina.workers.namespaces" -}}
{{- $namespaces := .Values.workers.namespaces | default (list .Release.Namespace) }}
{{- toJson $namespaces }}
{{- end }}

{{/*
The Prometheus Operator's API: present on the cluster (or passed with --api-versions), or the
chart fails with a message saying what to do, rather than leaving a monitor out silently.
*/}}
{{- define "carina.requireMonitoringApi" -}}
{{- if not (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}
{{- fail (printf "%s is enabled, but this cluster does not serve monitoring.coreos.com/v1: install the Prometheus Operator's CRDs first (for `helm template`, pass --api-versions monitoring.coreos.com/v1)" .what) }}
{{- end }}
{{- end }}

{{/* Pod-level security context shared by the operator and the control plane. */}}
{{- define "carina.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{/* Container-level security context shared by the operator and the control plane. */}}
{{- define "carina.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* Names of imagePullSecrets, comma-separated (the operator gives them to worker pods). */}}
{{- define "carina.imagePullSecretNames" -}}
{{- $names := list }}
{{- range .Values.imagePullSecrets }}
{{- $names = append $names .name }}
{{- end }}
{{- join "," $names }}
{{- end }}

{{/* The Secret that holds the job history's PostgreSQL URL: the user's, or the chart's. */}}
{{- define "carina.history.secretName" -}}
{{- if .Values.history.postgres.existingSecret }}
{{- .Values.history.postgres.existingSecret }}
{{- else if .Values.history.postgres.url }}
{{- include "carina.controlPlane.fullname" . }}-history
{{- else }}
{{- fail "history.enabled needs history.postgres.url or history.postgres.existingSecret" }}
{{- end }}
{{- end }}
