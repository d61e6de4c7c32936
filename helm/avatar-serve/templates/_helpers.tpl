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

{{/*
The app config (AppConfig) as JSON: deployments/configs/<app.profile>.yaml, shipped in the chart
as files/configs (a link to the same files `avatar serve` reads, so there is no copy to drift),
with each section of `app.config` replacing the profile's; under `stages`, each stage given
replaces that whole stage. Whole sections, not a deep merge: a deep merge would keep the GPU
profile's `device: cuda` under a stage switched to another backend.
*/}}
{{- define "avatar-serve.appConfig" -}}
{{- $path := printf "files/configs/%s.yaml" .Values.app.profile }}
{{- $raw := .Files.Get $path }}
{{- if not $raw }}
{{- fail (printf "app.profile: %q is not a shipped profile (%s not in the chart)" .Values.app.profile $path) }}
{{- end }}
{{- $config := fromYaml $raw }}
{{- if hasKey $config "Error" }}
{{- fail (printf "app.profile: %s is not valid YAML: %s" $path $config.Error) }}
{{- end }}
{{- range $key, $value := (default dict .Values.app.config) }}
{{- if and (eq $key "stages") (kindIs "map" $value) }}
{{- $stages := default dict $config.stages }}
{{- range $stage, $block := $value }}
{{- $_ := set $stages $stage $block }}
{{- end }}
{{- $_ := set $config "stages" $stages }}
{{- else }}
{{- $_ := set $config $key $value }}
{{- end }}
{{- end }}
{{- toJson $config }}
{{- end }}

{{/* The deployments of the Serve app, in pipeline order, as "name" -> config block. */}}
{{- define "avatar-serve.deploymentBlocks" -}}
{{- $config := include "avatar-serve.appConfig" . | fromJson }}
{{- $stages := default dict $config.stages }}
{{- $blocks := dict }}
{{- range $stage := list "asr" "llm" "tts" "render" }}
{{- $_ := set $blocks $stage (default dict (index $stages $stage)) }}
{{- end }}
{{- $_ := set $blocks "router" (default dict $config.router) }}
{{- toJson $blocks }}
{{- end }}

{{/* The port Serve's HTTP proxies listen on: the app config's http.port. */}}
{{- define "avatar-serve.port" -}}
{{- $config := include "avatar-serve.appConfig" . | fromJson }}
{{- int (dig "http" "port" 8000 $config) }}
{{- end }}

{{/*
"1" when the app config's http.ingress is haproxy (gpu.yaml's choice): Serve's direct ingress
behind HAProxy, switched on by env vars that every Ray container needs before Ray starts.
*/}}
{{- define "avatar-serve.haproxy" -}}
{{- $config := include "avatar-serve.appConfig" . | fromJson }}
{{- ternary "1" "0" (eq (dig "http" "ingress" "proxy" $config) "haproxy") }}
{{- end }}

{{/* Env var that carries the database URL: the app config's storage.url_env. */}}
{{- define "avatar-serve.databaseUrlEnv" -}}
{{- $config := include "avatar-serve.appConfig" . | fromJson }}
{{- dig "storage" "url_env" "AVATAR_DATABASE_URL" $config }}
{{- end }}

{{/* Env var that carries the bootstrap API key: the app config's auth.bootstrap_key_env. */}}
{{- define "avatar-serve.bootstrapKeyEnv" -}}
{{- $config := include "avatar-serve.appConfig" . | fromJson }}
{{- dig "auth" "bootstrap_key_env" "AVATAR_BOOTSTRAP_KEY" $config }}
{{- end }}

{{/*
Graceful drain, in whole seconds: the longest `graceful_shutdown_timeout_s` of the five
deployments (20 when unset: DeploymentOptions' default) plus 30 s for Ray itself to stop (the
preStop `ray stop`, Serve's proxy draining). A Ray pod's terminationGracePeriodSeconds, so a
stopping replica's in-flight turns finish before the kubelet's SIGKILL.
*/}}
{{- define "avatar-serve.drainSeconds" -}}
{{- $blocks := include "avatar-serve.deploymentBlocks" . | fromJson }}
{{- $longest := 0.0 }}
{{- range $name := list "asr" "llm" "tts" "render" "router" }}
{{- $timeout := float64 (dig "serve" "graceful_shutdown_timeout_s" 20 (index $blocks $name)) }}
{{- if gt $timeout $longest }}{{ $longest = $timeout }}{{ end }}
{{- end }}
{{- add (int (ceil $longest)) 30 }}
{{- end }}

{{/*
The persona packs volume (an existing PVC, else a ConfigMap), as one list item, or nothing when
neither is set. Mounted read-only by the Ray pods and the purge Job alike.
*/}}
{{- define "avatar-serve.personasVolume" -}}
{{- $p := .Values.personas }}
{{- if $p.existingClaim -}}
- name: personas
  persistentVolumeClaim: {claimName: {{ $p.existingClaim }}, readOnly: true}
{{- else if $p.configMap -}}
- name: personas
  configMap:
    name: {{ $p.configMap }}
    {{- with $p.items }}
    items:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}
{{- end }}
