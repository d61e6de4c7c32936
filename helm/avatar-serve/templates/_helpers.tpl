{{/* Names, labels and small shared values. */}}

{{- define "avatar-serve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix. Kept to 40 characters: KubeRay derives RayCluster, pod and Service names from
the RayService name and appends suffixes of its own.
*/}}
{{- define "avatar-serve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "avatar-serve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "avatar-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "avatar-serve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "avatar-serve.labels" -}}
helm.sh/chart: {{ include "avatar-serve.chart" . }}
{{ include "avatar-serve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: avatar-serve
{{- end }}

{{- define "avatar-serve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the router Service (KubeRay's serve Service for this RayService). */}}
{{- define "avatar-serve.serveServiceName" -}}
{{- printf "%s-serve" (include "avatar-serve.fullname" .) }}
{{- end }}

{{/* Ray custom resource that pins Serve replicas to a worker pool: pool_<pool>. */}}
{{- define "avatar-serve.poolResource" -}}
{{- printf "pool_%s" . }}
{{- end }}

{{/* Units of pool_<pool> each worker advertises; every replica claims one. */}}
{{- define "avatar-serve.poolCapacity" -}}1000{{- end }}

{{/* The deployments of the Serve app, in pipeline order, as "name" -> values block. */}}
{{- define "avatar-serve.deploymentBlocks" -}}
{{- $blocks := dict }}
{{- range $stage := list "asr" "llm" "tts" "render" }}
{{- $_ := set $blocks $stage (index $.Values.stages $stage) }}
{{- end }}
{{- $_ := set $blocks "router" .Values.router }}
{{- toJson $blocks }}
{{- end }}
