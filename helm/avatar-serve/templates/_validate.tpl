{{/*
Checks that values.schema.json cannot express: cross-field rules. Each failure is one line that
names the values key, the way `helm lint` / `helm template` print it.
*/}}
{{- define "avatar-serve.validate" -}}
{{- $blocks := include "avatar-serve.deploymentBlocks" . | fromJson }}
{{- $enabled := list }}
{{- range $name, $pool := .Values.pools }}
{{- if $pool.enabled }}
{{- $enabled = append $enabled $name }}
{{- if or (lt (int $pool.replicas) (int $pool.minReplicas)) (gt (int $pool.replicas) (int $pool.maxReplicas)) }}
{{- fail (printf "pools.%s: need minReplicas (%v) <= replicas (%v) <= maxReplicas (%v)" $name $pool.minReplicas $pool.replicas $pool.maxReplicas) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $name := list "asr" "llm" "tts" "render" "router" }}
{{- $block := index $blocks $name }}
{{- $key := ternary "app.config.router" (printf "app.config.stages.%s" $name) (eq $name "router") }}
{{- $poolName := index $.Values.app.placement $name }}
{{- $pool := index $.Values.pools (toString $poolName) }}
{{- if not (and $pool $pool.enabled) }}
{{- fail (printf "app.placement.%s: pool %q is not defined or not enabled in `pools`; enabled pools: %s" $name $poolName (join ", " $enabled)) }}
{{- end }}
{{- $serve := default dict $block.serve }}
{{- if and $serve.num_replicas $serve.autoscaling_config }}
{{- fail (printf "%s.serve: set num_replicas or autoscaling_config, not both (a stage block in app.config replaces the profile's whole block)" $key) }}
{{- end }}
{{- with $serve.autoscaling_config }}
{{- $min := ternary .min_replicas 1 (hasKey . "min_replicas") }}
{{- $max := ternary .max_replicas 1 (hasKey . "max_replicas") }}
{{- if gt (float64 $min) (float64 $max) }}
{{- fail (printf "%s.serve.autoscaling_config: min_replicas (%v) > max_replicas (%v)" $key $min $max) }}
{{- end }}
{{- end }}
{{- $gpus := float64 (default 0 (dig "ray_actor_options" "num_gpus" 0 $serve)) }}
{{- if gt $gpus (float64 (default 0 $pool.gpus)) }}
{{- fail (printf "%s.serve.ray_actor_options.num_gpus (%v) exceeds the GPUs of one pod of pool %q (pools.%s.gpus = %v)" $key $gpus $poolName $poolName (default 0 $pool.gpus)) }}
{{- end }}
{{- end }}
{{- $config := include "avatar-serve.appConfig" . | fromJson }}
{{- $auth := dig "auth" "mode" "auto" $config }}
{{- if ne $auth "keys" }}
{{- fail (printf "app.config.auth.mode: the chart serves on 0.0.0.0, so it requires API keys (mode keys), not %q: set app.config.auth: {mode: keys} and create keys with `avatar keys create` (or auth.bootstrapKeySecret)" $auth) }}
{{- end }}
{{- if not (or .Values.database.urlSecret.name (dig "storage" "url" "" $config) .Values.database.allowPodLocalSqlite) }}
{{- fail "database.urlSecret: sessions and the audit log need a database that outlives the router pods: name a Secret holding the PostgreSQL URL (or set app.config.storage.url; or database.allowPodLocalSqlite=true for a throwaway demo)" }}
{{- end }}
{{- if and .Values.database.purge.enabled (not .Values.database.purge.ownerUrlSecret.name) }}
{{- fail "database.purge.ownerUrlSecret: the purge CronJob deletes turns, which only the schema owner may: name a Secret holding the owner's database URL" }}
{{- end }}
{{- if and .Values.database.purge.enabled (eq .Values.database.purge.ownerUrlSecret.name .Values.database.urlSecret.name) (eq .Values.database.purge.ownerUrlSecret.key .Values.database.urlSecret.key) }}
{{- fail "database.purge.ownerUrlSecret: it names the application's URL (database.urlSecret); the Ray pods must not hold the owner's URL, so give the owner's its own Secret key" }}
{{- end }}
{{- end }}
