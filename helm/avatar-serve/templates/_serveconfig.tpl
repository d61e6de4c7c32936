{{/*
serveConfigV2: the Ray Serve config (ray.serve.schema.ServeDeploySchema) generated from the
stage blocks of values.yaml.

- `applications[0].args.config` is what `deployments.app:build_app` validates as AppConfig: the
  app name, each stage's backend + options, turn bounds, http, state and limits.
- Each stage's Serve options (AppConfig.deployments.<name>) go to `applications[0].deployments`,
  with the pool's custom resource added to `ray_actor_options.resources`. Serve applies them on
  top of the code's options, and changing them (replicas, autoscaling, queue bounds) is a
  lightweight update: Serve hashes `args` into the app's code version, so keeping them out of
  `args` means scaling a stage never restarts the other stages' replicas.
*/}}
{{- define "avatar-serve.serveConfig" -}}
{{- $blocks := include "avatar-serve.deploymentBlocks" . | fromJson }}
{{- $pipeline := dict "turn" (default dict .Values.app.turn) }}
{{- $deployments := list }}
{{- range $name := list "asr" "llm" "tts" "render" "router" }}
{{- $block := index $blocks $name }}
{{- if ne $name "router" }}
{{- $_ := set $pipeline $name (dict "backend" $block.backend "options" (default dict $block.options)) }}
{{- end }}
{{- $entry := dict "name" $name }}
{{- range $key, $value := (default dict $block.serve) }}
{{- if not (kindIs "invalid" $value) }}
{{- $_ := set $entry $key $value }}
{{- end }}
{{- end }}
{{- $actor := deepCopy (default dict $entry.ray_actor_options) }}
{{- $resources := deepCopy (default dict $actor.resources) }}
{{- $_ := set $resources (include "avatar-serve.poolResource" $block.pool) 1 }}
{{- $_ := set $actor "resources" $resources }}
{{- $_ := set $entry "ray_actor_options" $actor }}
{{- $deployments = append $deployments $entry }}
{{- end }}
{{- $http := dict "host" "0.0.0.0" "port" (int .Values.app.port) }}
{{- $config := dict "name" .Values.app.name "pipeline" $pipeline "http" $http "state" (default dict .Values.app.state) "limits" (default dict .Values.app.limits) }}
{{- $app := dict "name" .Values.app.name "route_prefix" "/" "import_path" "deployments.app:build_app" "args" (dict "config" $config) "deployments" $deployments }}
{{- $serve := dict "proxy_location" "EveryNode" "http_options" $http "applications" (list $app) }}
{{- toYaml $serve }}
{{- end }}
