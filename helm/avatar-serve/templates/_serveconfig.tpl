{{/*
serveConfigV2: the Ray Serve config (ray.serve.schema.ServeDeploySchema) of the app config
(`avatar-serve.appConfig`: the profile file plus `app.config`).

- `applications[0].args.config` is that AppConfig, less each deployment's `serve` block: what
  `deployments.app:build_app` validates. Every section is carried, `personas` and `storage`
  included.
- Each deployment's `serve` block goes to `applications[0].deployments`, with the pool's custom
  resource (`app.placement`) added to `ray_actor_options.resources`. Serve applies them on top of
  the code's options, and changing them (replicas, autoscaling, queue bounds) is a lightweight
  update: Serve hashes `args` into the app's code version, so keeping them out of `args` means
  scaling a stage never restarts the other stages' replicas.
*/}}
{{- define "avatar-serve.serveConfig" -}}
{{- $config := include "avatar-serve.appConfig" . | fromJson }}
{{- $blocks := include "avatar-serve.deploymentBlocks" . | fromJson }}
{{- $stages := dict }}
{{- $deployments := list }}
{{- range $name := list "asr" "llm" "tts" "render" "router" }}
{{- $block := index $blocks $name }}
{{- if ne $name "router" }}
{{- $_ := set $stages $name (omit $block "serve") }}
{{- end }}
{{- $entry := dict "name" $name }}
{{- range $key, $value := (default dict $block.serve) }}
{{- if not (kindIs "invalid" $value) }}
{{- $_ := set $entry $key $value }}
{{- end }}
{{- end }}
{{- $actor := deepCopy (default dict $entry.ray_actor_options) }}
{{- $resources := deepCopy (default dict $actor.resources) }}
{{- $_ := set $resources (include "avatar-serve.poolResource" (index $.Values.app.placement $name)) 1 }}
{{- $_ := set $actor "resources" $resources }}
{{- $_ := set $entry "ray_actor_options" $actor }}
{{- $deployments = append $deployments $entry }}
{{- end }}
{{- $args := omit $config "stages" "router" }}
{{- $_ := set $args "stages" $stages }}
{{- $name := default "avatar" $config.name }}
{{- $http := dict "host" "0.0.0.0" "port" (include "avatar-serve.port" . | int) }}
{{- $app := dict "name" $name "route_prefix" "/" "import_path" "deployments.app:build_app" "args" (dict "config" $args) "deployments" $deployments }}
{{- $serve := dict "proxy_location" "EveryNode" "http_options" $http "applications" (list $app) }}
{{- toYaml $serve }}
{{- end }}
