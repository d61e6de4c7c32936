{{/*
Pod template of a Ray head or worker group.
Call with (dict "root" $ "group" <name> "spec" <head or pool values> "head" <bool>).
*/}}
{{- define "avatar-serve.podTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $spec := .spec }}
{{- $gpus := int (default 0 $spec.gpus) }}
metadata:
  labels:
    {{- include "avatar-serve.selectorLabels" $root | nindent 4 }}
    avatar-serve.io/pool: {{ .group }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- $annotations := deepCopy (default dict $v.podAnnotations) }}
  {{- if not $v.safeToEvict }}
  {{- $_ := set $annotations "cluster-autoscaler.kubernetes.io/safe-to-evict" "false" }}
  {{- end }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  # in-flight turns finish (Serve's graceful_shutdown_timeout_s) before the kubelet's SIGKILL
  terminationGracePeriodSeconds: {{ include "avatar-serve.drainSeconds" $root }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $spec.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- with $spec.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $spec.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $spec.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" .head }}
      image: {{ include "avatar-serve.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      ports:
        {{- if .head }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        - {name: as-metrics, containerPort: 44217}
        - {name: dash-metrics, containerPort: 44227}
        {{- end }}
        - {name: serve, containerPort: {{ include "avatar-serve.port" $root }}}
        - {name: metrics, containerPort: 8080}
      env:
        - {name: HF_HOME, value: {{ printf "%s/huggingface" $v.modelCache.mountPath | quote }}}
        # Models joined from package pieces on first use (the persona embedder, 420 MB)
        - {name: AVATAR_MODEL_DIR, value: {{ printf "%s/avatar" $v.modelCache.mountPath | quote }}}
        # http.ingress: HAProxy on the Serve port in front of router replicas that serve HTTP
        # themselves (ports 30000-31000, reachable from this release's pods), or Ray's proxy
        {{- $haproxy := include "avatar-serve.haproxy" $root }}
        - {name: RAY_SERVE_ENABLE_DIRECT_INGRESS, value: {{ $haproxy | quote }}}
        - {name: RAY_SERVE_ENABLE_HA_PROXY, value: {{ $haproxy | quote }}}
        {{- if or $v.personas.existingClaim $v.personas.configMap }}
        - {name: AVATAR_PERSONA_DIR, value: {{ $v.personas.mountPath | quote }}}
        {{- end }}
        {{- if gt $gpus 0 }}
        # graphics: the NVIDIA runtime mounts the EGL driver the renderer needs
        - {name: NVIDIA_DRIVER_CAPABILITIES, value: "compute,utility,graphics"}
        {{- end }}
        {{- if $v.database.urlSecret.name }}
        # sessions + audit log: the app reads the URL from the env var its storage.url_env names
        - name: {{ include "avatar-serve.databaseUrlEnv" $root }}
          valueFrom:
            secretKeyRef: {name: {{ $v.database.urlSecret.name }}, key: {{ $v.database.urlSecret.key }}}
        {{- end }}
        {{- if $v.auth.bootstrapKeySecret.name }}
        # a bootstrap admin API key: the router stores its hash at start, never the token
        - name: {{ include "avatar-serve.bootstrapKeyEnv" $root }}
          valueFrom:
            secretKeyRef: {name: {{ $v.auth.bootstrapKeySecret.name }}, key: {{ $v.auth.bootstrapKeySecret.key }}}
        {{- end }}
        {{- range $name, $ref := $v.secrets.env }}
        - name: {{ $name }}
          valueFrom:
            secretKeyRef: {name: {{ $ref.name }}, key: {{ $ref.key }}}
        {{- end }}
        {{- range $name, $value := $v.env }}
        - {name: {{ $name }}, value: {{ $value | toString | quote }}}
        {{- end }}
      {{- with $v.secrets.envFrom }}
      envFrom:
        {{- range . }}
        - secretRef: {name: {{ . }}}
        {{- end }}
      {{- end }}
      {{- $resources := deepCopy (default dict $spec.resources) }}
      {{- if gt $gpus 0 }}
      {{- $limits := default dict $resources.limits }}
      {{- $_ := set $limits "nvidia.com/gpu" $gpus }}
      {{- $_ := set $resources "limits" $limits }}
      {{- end }}
      {{- with $resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      lifecycle:
        preStop:
          exec: {command: ["/bin/sh", "-c", "ray stop"]}
      volumeMounts:
        - {name: dshm, mountPath: /dev/shm}
        - {name: models, mountPath: {{ $v.modelCache.mountPath }}}
        {{- if or $v.personas.existingClaim $v.personas.configMap }}
        - {name: personas, mountPath: {{ $v.personas.mountPath }}, readOnly: true}
        {{- end }}
  volumes:
    - name: dshm
      emptyDir: {medium: Memory, sizeLimit: {{ $v.sharedMemorySize }}}
    - name: models
      {{- if $v.modelCache.existingClaim }}
      persistentVolumeClaim: {claimName: {{ $v.modelCache.existingClaim }}}
      {{- else }}
      emptyDir: {sizeLimit: {{ $v.modelCache.sizeLimit }}}
      {{- end }}
    {{- include "avatar-serve.personasVolume" $root | nindent 4 }}
{{- end }}
