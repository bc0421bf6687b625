{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "cryptoviz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; component suffixes are added by callers, so keep room for them. */}}
{{- define "cryptoviz.fullname" -}}
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

{{- define "cryptoviz.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. Call with (dict "ctx" $ "component" "ingester"). */}}
{{- define "cryptoviz.labels" -}}
helm.sh/chart: {{ include "cryptoviz.chart" .ctx }}
{{ include "cryptoviz.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: cryptoviz
{{- end }}

{{/* Selector labels: stable across upgrades, one set per component. */}}
{{- define "cryptoviz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cryptoviz.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Resource name of a component: <fullname>-<component>. */}}
{{- define "cryptoviz.componentName" -}}
{{- printf "%s-%s" (include "cryptoviz.fullname" .ctx) .component }}
{{- end }}

{{/*
A component's image: (dict "ctx" $ "image" "ingester"), the name being a key of image.* (scraper,
ingester, dashboard, operator). `<image.repository>-<name>:<image.tag or appVersion>` unless
image.<name> overrides repository, tag or digest (a digest wins over the tag).
*/}}
{{- define "cryptoviz.image" -}}
{{- if not (and (kindIs "map" .) (hasKey . "ctx") (hasKey . "image")) }}
{{- fail "cryptoviz.image takes (dict \"ctx\" $ \"image\" COMPONENT): each component has its own image" }}
{{- end }}
{{- $i := .ctx.Values.image }}
{{- if not (kindIs "map" (get $i .image)) }}
{{- fail (printf "image.%s: no such component image (scraper, ingester, dashboard, operator)" .image) }}
{{- end }}
{{- $own := get $i .image }}
{{- $tag := $own.tag | default $i.tag | default .ctx.Chart.AppVersion }}
{{- include "cryptoviz.imageRef" (dict "repository" ($own.repository | default (printf "%s-%s" $i.repository .image)) "digest" $own.digest "tag" $tag) }}
{{- end }}

{{- define "cryptoviz.imageRef" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (required "image.tag is required" .tag) }}
{{- end }}
{{- end }}

{{- define "cryptoviz.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- printf "nats://%s-nats:%d" (include "cryptoviz.fullname" .) (int .Values.nats.service.port) }}
{{- else }}
{{- required "nats.url is required when nats.enabled is false" .Values.nats.url }}
{{- end }}
{{- end }}

{{/* nats.conf of the bundled server (its checksum rolls the pod on any change). */}}
{{- define "cryptoviz.natsConfig" -}}
server_name: $POD_NAME
port: {{ .Values.nats.service.port }}
http_port: {{ .Values.nats.service.monitorPort }}
jetstream {
  store_dir: /data
  max_memory_store: {{ .Values.nats.jetstream.maxMemoryStore }}
  max_file_store: {{ .Values.nats.jetstream.maxFileStore }}
}
{{- end }}

{{- define "cryptoviz.ingesterUrl" -}}
{{- printf "http://%s-ingester:%d" (include "cryptoviz.fullname" .) (int .Values.ingester.service.port) }}
{{- end }}

{{- define "cryptoviz.scraperConfigMapName" -}}
{{- printf "%s-scraper-config" (include "cryptoviz.fullname" .) }}
{{- end }}

{{- define "cryptoviz.providerSecretName" -}}
{{- default (printf "%s-providers" (include "cryptoviz.fullname" .)) .Values.scraper.secret.existingSecret }}
{{- end }}

{{- define "cryptoviz.notifySecretName" -}}
{{- default (printf "%s-notify" (include "cryptoviz.fullname" .)) .Values.notify.existingSecret }}
{{- end }}

{{- define "cryptoviz.authSecretName" -}}
{{- default (printf "%s-dashboard-auth" (include "cryptoviz.fullname" .)) .Values.dashboard.auth.existingSecret }}
{{- end }}

{{/* The dashboard's URL prefix, "" or "/something" without a trailing slash. */}}
{{- define "cryptoviz.dashboardPrefix" -}}
{{- $p := trimSuffix "/" .Values.dashboard.prefix }}
{{- if and $p (not (hasPrefix "/" $p)) }}{{ $p = printf "/%s" $p }}{{ end }}
{{- $p }}
{{- end }}

{{/* Pod-level security context: restricted Pod Security Standard. */}}
{{- define "cryptoviz.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context: restricted Pod Security Standard. */}}
{{- define "cryptoviz.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Scheduling settings shared by every pod. */}}
{{- define "cryptoviz.scheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Settings every cryptoviz process reads. */}}
{{- define "cryptoviz.commonEnv" -}}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end }}

{{/* The writable scratch space every container gets (the root filesystem is read-only). */}}
{{- define "cryptoviz.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/*
The scraper config: the live ConfigMap's content when the operator manages it (so an upgrade never
reverts what the operator rendered from TrackedCrypto objects), else the values-provided default.
*/}}
{{- define "cryptoviz.scraperConfig" -}}
{{- $live := dict }}
{{- if .Values.operator.enabled }}
{{- $live = (lookup "v1" "ConfigMap" .Release.Namespace (include "cryptoviz.scraperConfigMapName" .)) | default dict }}
{{- end }}
{{- if and $live $live.data (hasKey $live.data "scraper.yaml") }}
{{- index $live.data "scraper.yaml" }}
{{- else }}
{{- toYaml .Values.scraper.config }}
{{- end }}
{{- end }}

{{/* The scraper schedule: the live one when the operator manages it, else from values. */}}
{{- define "cryptoviz.scraperSchedule" -}}
{{- $live := dict }}
{{- if and .Values.operator.enabled .Values.operator.manageSchedule }}
{{- $live = (lookup "batch/v1" "CronJob" .Release.Namespace (include "cryptoviz.componentName" (dict "ctx" . "component" "scraper"))) | default dict }}
{{- end }}
{{- if and $live $live.spec $live.spec.schedule }}
{{- $live.spec.schedule }}
{{- else }}
{{- .Values.scraper.schedule }}
{{- end }}
{{- end }}

{{/*
The scraper's pod spec: `cryptoviz scrape --once` in the CronJob, `cryptoviz backfill` in the backfill
hook Job (and, copied from the CronJob by the operator, in each TrackedCrypto's backfill Job). One
definition, so both talk to the same NATS, ingester and providers with the same keys and config.
Call with (dict "ctx" $ "args" (list ...) "resources" ... "env" (list of extra env entries)).
*/}}
{{- define "cryptoviz.scraperPodSpec" -}}
{{- $ctx := .ctx }}
{{- $s := $ctx.Values.scraper }}
restartPolicy: Never
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- include "cryptoviz.podSecurityContext" $ctx | nindent 2 }}
{{- include "cryptoviz.scheduling" $ctx }}
containers:
  - name: scraper
    image: {{ include "cryptoviz.image" (dict "ctx" $ctx "image" "scraper") }}
    imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
    args: {{ toJson .args }}
    env:
      {{- include "cryptoviz.commonEnv" $ctx | nindent 6 }}
      - name: NATS_URL
        value: {{ include "cryptoviz.natsUrl" $ctx | quote }}
      - name: INGESTER_URL
        value: {{ include "cryptoviz.ingesterUrl" $ctx | quote }}
      - name: SCRAPER_CONFIG
        value: /etc/cryptoviz/scraper.yaml
      {{- with $s.provider }}
      - name: SCRAPE_PROVIDER
        value: {{ . | quote }}
      {{- end }}
      - name: CMC_API_KEY
        valueFrom:
          secretKeyRef:
            name: {{ include "cryptoviz.providerSecretName" $ctx }}
            key: {{ $s.secret.cmcApiKeyKey }}
            optional: true
      - name: COINGECKO_API_KEY
        valueFrom:
          secretKeyRef:
            name: {{ include "cryptoviz.providerSecretName" $ctx }}
            key: {{ $s.secret.coingeckoApiKeyKey }}
            optional: true
      {{- with .env }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
      {{- with $s.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    resources:
      {{- toYaml .resources | nindent 6 }}
    securityContext:
      {{- include "cryptoviz.containerSecurityContext" $ctx | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/cryptoviz
        readOnly: true
      - name: tmp
        mountPath: /tmp
volumes:
  - name: config
    configMap:
      name: {{ include "cryptoviz.scraperConfigMapName" $ctx }}
  {{- include "cryptoviz.tmpVolume" $ctx | nindent 2 }}
{{- end }}
