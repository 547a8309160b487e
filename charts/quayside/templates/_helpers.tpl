{{/* Labels every object carries; `app` as Workflow's charts set it. */}}
{{- define "quayside.labels" -}}
heritage: deis
app: {{ .app }}
app.kubernetes.io/name: {{ .app }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: quayside
helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version }}
{{- end }}

{{/* <image_registry>/<org>/quayside:<docker_tag or appVersion> for component .component */}}
{{- define "quayside.image" -}}
{{- $c := index .root.Values .component -}}
{{- printf "%s/%s/quayside:%s" (.root.Values.global.image_registry | default "quay.io") $c.org ($c.docker_tag | default .root.Chart.AppVersion) -}}
{{- end }}

{{- define "quayside.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "quayside.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* requests always; limits only where set (Workflow's limits_cpu / limits_memory) */}}
{{- define "quayside.resources" -}}
{{- $c := index .root.Values .component -}}
requests:
  cpu: {{ $c.requests_cpu | default "10m" | quote }}
  memory: {{ $c.requests_memory | default "32Mi" | quote }}
{{- if or $c.limits_cpu $c.limits_memory }}
limits:
  {{- with $c.limits_cpu }}
  cpu: {{ . | quote }}
  {{- end }}
  {{- with $c.limits_memory }}
  memory: {{ . | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Where Workflow mounts registry credentials (registry-secret or objectstorage-keyfile). */}}
{{- define "quayside.credsDir" -}}/var/run/secrets/deis/registry/creds{{- end }}

{{/*
Checks JSON Schema cannot express with a message an operator understands. Rendered by every
template, so `helm template` and `helm install` stop with the message.
*/}}
{{- define "quayside.validate" -}}
{{- $loc := .Values.global.registry_location -}}
{{- /* global is shared with Workflow's other charts, so only near-misses of Quayside's keys fail. */ -}}
{{- $known := list "registry_location" "registry_proxy_bind_addr" "secret_prefix" "host_port" "use_cni" "storage" "use_rbac" "image_registry" -}}
{{- range $key, $_ := .Values.global -}}
  {{- if and (not (has $key $known)) (or (hasPrefix "registry" $key) (hasPrefix "secret" $key) (hasPrefix "host_" $key) (hasPrefix "storag" $key)) -}}
    {{- fail (printf "global.%s is not a key this chart knows (a misspelling?): Quayside reads global.%s" $key (join ", global." $known)) -}}
  {{- end -}}
{{- end -}}
{{- if eq $loc "on-cluster" -}}
  {{- $storage := .Values.global.storage | default "filesystem" -}}
  {{- $sections := dict "s3" (list "registry_bucket" "your-registry-bucket-name") "gcs" (list "registry_bucket" "your-registry-bucket-name") "azure" (list "registry_container" "your-registry-container-name") -}}
  {{- if and (hasKey $sections $storage) .Values.registry.create_storage_secret -}}
    {{- $check := index $sections $storage -}}
    {{- $value := index (index .Values $storage) (index $check 0) -}}
    {{- if or (not $value) (eq $value (index $check 1)) -}}
      {{- fail (printf "%s.%s is %q: with global.storage=%s set it to your %s's name" $storage (index $check 0) ($value | default "") $storage (ternary "container" "bucket" (eq $storage "azure"))) -}}
    {{- end -}}
  {{- end -}}
  {{- if and (eq $storage "azure") .Values.registry.create_storage_secret (or (not .Values.azure.accountname) (not .Values.azure.accountkey)) -}}
    {{- fail "azure.accountname and azure.accountkey must both be set with global.storage=azure (the storage account's name and access key)" -}}
  {{- end -}}
  {{- if and (eq $storage "gcs") .Values.registry.create_storage_secret (not .Values.gcs.key_json) -}}
    {{- fail "gcs.key_json is empty: with global.storage=gcs set it to the base64 of your service account's JSON key (base64 -w0 key.json)" -}}
  {{- end -}}
{{- end -}}
{{- $rtr := index .Values "registry-token-refresher" -}}
{{- if eq $loc "off-cluster" -}}
  {{- if not $rtr.off_cluster_registry.organization -}}
    {{- fail "registry-token-refresher.off_cluster_registry.organization is empty: off-cluster images are named <hostname>/<organization>/<app>; set it to your registry's organization (for ACR, the repository prefix)" -}}
  {{- end -}}
  {{- if or (not $rtr.off_cluster_registry.username) (not $rtr.off_cluster_registry.password) -}}
    {{- fail "registry-token-refresher.off_cluster_registry.username and .password must both be set for an off-cluster registry" -}}
  {{- end -}}
{{- end -}}
{{- if eq $loc "ecr" -}}
  {{- if not $rtr.ecr.region -}}
    {{- fail "registry-token-refresher.ecr.region is empty: ECR needs the region of your registry, e.g. us-west-2" -}}
  {{- end -}}
  {{- if and $rtr.ecr.accesskey (not $rtr.ecr.secretkey) -}}
    {{- fail "registry-token-refresher.ecr.accesskey is set but secretkey is empty: set both, or neither to use the pod's IAM role" -}}
  {{- end -}}
{{- end -}}
{{- if eq $loc "gcr" -}}
  {{- if and (hasSuffix "-docker.pkg.dev" ($rtr.gcr.hostname | default "")) (not $rtr.gcr.repository) -}}
    {{- fail (printf "registry-token-refresher.gcr.repository is empty: Artifact Registry (%s) names images <host>/<project>/<repository>/<app>; set it to the repository's name" $rtr.gcr.hostname) -}}
  {{- end -}}
  {{- if not $rtr.gcr.key_json -}}
    {{- fail "registry-token-refresher.gcr.key_json is empty: set it to the base64 of your service account's JSON key (base64 -w0 key.json)" -}}
  {{- end -}}
  {{- $key := $rtr.gcr.key_json | b64dec | fromJson -}}
  {{- if or (hasKey $key "Error") (not (hasKey $key "private_key")) -}}
    {{- fail "registry-token-refresher.gcr.key_json is not the base64 of a service-account JSON key: encode the key file with base64 -w0 key.json" -}}
  {{- end -}}
{{- end -}}
{{- if and (eq $loc "on-cluster") .Values.registry.gc.cronjob_schedule (eq (.Values.global.storage | default "filesystem") "filesystem") -}}
  {{- fail "registry.gc.cronjob_schedule needs object storage: with filesystem the data lives in the registry pod; use registry.gc.interval instead" -}}
{{- end -}}
{{- if and (eq $loc "on-cluster") (eq .Values.global.storage "swift") -}}
  {{- fail "global.storage=swift is not supported by Quayside: use s3, gcs, azure, minio or filesystem" -}}
{{- end -}}
{{- if and (eq $loc "on-cluster") (eq .Values.global.storage "gcs") .Values.registry.create_storage_secret -}}
  {{- $key := .Values.gcs.key_json | b64dec | fromJson -}}
  {{- if hasKey $key "Error" -}}
    {{- fail "gcs.key_json is not the base64 of a service-account JSON key: encode the key file with base64 -w0 key.json" -}}
  {{- end -}}
{{- end -}}
{{- end }}

{{/* Storage settings shared by the registry, the GC CronJob and the test Pod. */}}
{{- define "quayside.storageEnv" -}}
{{- $storage := .Values.global.storage | default "filesystem" -}}
- name: REGISTRY_STORAGE
  value: {{ $storage | quote }}
- name: QUAYSIDE_DATA_DIR
  value: /var/lib/registry
{{- if ne $storage "filesystem" }}
- name: QUAYSIDE_STORAGE_CREDS_DIR
  value: {{ include "quayside.credsDir" . }}
{{- end }}
{{- end }}

{{/* What garbage collection deletes, for the registry and the GC CronJob alike. */}}
{{- define "quayside.gcEnv" -}}
- name: QUAYSIDE_GC_GRACE
  value: {{ .Values.registry.gc.grace | default "1h" | quote }}
- name: QUAYSIDE_GC_DELETE_UNTAGGED
  value: {{ .Values.registry.gc.delete_untagged | default false | quote }}
{{- end }}

{{/* Whether the in-cluster registry is closed to all but its identities (the default). */}}
{{- define "quayside.secured" -}}
{{- if and (eq .Values.global.registry_location "on-cluster") (not .Values.registry.insecure_anonymous_push) }}true{{ end -}}
{{- end }}

{{/*
The registry's identities as JSON: {push, pull: {secret, username, password}, htpasswd}.
Passwords come from the Secrets a previous install made (lookup), else are generated; the
htpasswd (bcrypt, salted anew at each hashing) is reused while both passwords are, so an upgrade
changes nothing and the pods' checksum annotation rolls them only when a password changed.
Computed once per render and kept in .Values: every template that asks gets the same answer.
*/}}
{{- define "quayside.identities" -}}
{{- if not (hasKey .Values "_quaysideIdentities") -}}
  {{- $ns := .Release.Namespace -}}
  {{- $kept := true -}}
  {{- $out := dict -}}
  {{- $lines := list -}}
  {{- range $role, $id := dict "push" (dict "secret" "deis-registry-push" "username" "builder") "pull" (dict "secret" "deis-registry-pull" "username" "node-proxy") -}}
    {{- $old := lookup "v1" "Secret" $ns $id.secret -}}
    {{- $password := "" -}}
    {{- if and $old $old.data (hasKey $old.data "password") -}}
      {{- $password = index $old.data "password" | b64dec -}}
    {{- else -}}
      {{- $password = randAlphaNum 40 -}}
      {{- $kept = false -}}
    {{- end -}}
    {{- $_ := set $out $role (dict "secret" $id.secret "username" $id.username "password" $password) -}}
    {{- $lines = append $lines (htpasswd $id.username $password) -}}
  {{- end -}}
  {{- $old := lookup "v1" "Secret" $ns "deis-registry-auth" -}}
  {{- if and $kept $old $old.data (hasKey $old.data "htpasswd") -}}
    {{- $_ := set $out "htpasswd" (index $old.data "htpasswd" | b64dec) -}}
  {{- else -}}
    {{- $_ := set $out "htpasswd" (printf "%s\n" (join "\n" $lines)) -}}
  {{- end -}}
  {{- $_ := set .Values "_quaysideIdentities" $out -}}
{{- end -}}
{{- toJson (index .Values "_quaysideIdentities") -}}
{{- end }}

{{/* Where the registry mounts deis-registry-auth. */}}
{{- define "quayside.authDir" -}}/var/run/secrets/quayside/auth{{- end }}
