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
A PodDisruptionBudget keeping one pod of a component up through voluntary disruptions (node drains):
(dict "ctx" $ "component" "notify"). Render it only when there are always more than one (with a single
pod, minAvailable 1 would block every drain).
*/}}
{{- define "cryptoviz.disruptionBudget" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "cryptoviz.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "cryptoviz.labels" . | nindent 4 }}
spec:
  minAvailable: 1
  selector:
    matchLabels:
      {{- include "cryptoviz.selectorLabels" . | nindent 6 }}
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
{{- printf "%s://%s-nats:%d" (ternary "tls" "nats" .Values.nats.tls.enabled) (include "cryptoviz.fullname" .) (int .Values.nats.service.port) }}
{{- else }}
{{- required "nats.url is required when nats.enabled is false" .Values.nats.url }}
{{- end }}
{{- end }}

{{/*
What each NATS user may publish and subscribe to: least privilege, the same lists as ROLES in
services/cryptoviz/core/natsauth.py (tests/test_nats_auth.py checks they match). Replies go to
per-user inboxes, so no user reads another's (a pull consumer's deliveries are replies).
*/}}
{{- define "cryptoviz.natsPermissions" -}}
scraper:
  publish:
    allow:
      - cryptoviz.quotes.>
      - cryptoviz.candles.>
      - $JS.API.STREAM.INFO.CRYPTOVIZ_QUOTES
      - $JS.API.STREAM.CREATE.CRYPTOVIZ_QUOTES
  subscribe:
    allow: [_INBOX.scraper.>]
ingester:
  publish:
    allow:
      - $JS.API.STREAM.INFO.CRYPTOVIZ_QUOTES
      - $JS.API.STREAM.CREATE.CRYPTOVIZ_QUOTES
      - $JS.API.STREAM.UPDATE.CRYPTOVIZ_QUOTES
      - $JS.API.STREAM.INFO.CRYPTOVIZ_ALERTS
      - $JS.API.STREAM.CREATE.CRYPTOVIZ_ALERTS
      - $JS.API.STREAM.UPDATE.CRYPTOVIZ_ALERTS
      {{- range $consumer := list "CRYPTOVIZ_QUOTES.cryptoviz-ingester" "CRYPTOVIZ_QUOTES.cryptoviz-ingester-candles" "CRYPTOVIZ_ALERTS.cryptoviz-ingester-receipts" }}
      {{- include "cryptoviz.natsConsumer" $consumer | nindent 6 }}
      {{- end }}
      - cryptoviz.deadletter.>
      - cryptoviz.alerts.>
  subscribe:
    allow: [_INBOX.ingester.>]
notify:
  publish:
    allow:
      - $JS.API.STREAM.INFO.CRYPTOVIZ_ALERTS
      - $JS.API.STREAM.CREATE.CRYPTOVIZ_ALERTS
      {{- include "cryptoviz.natsConsumer" "CRYPTOVIZ_ALERTS.cryptoviz-notify" | nindent 6 }}
      - $JS.API.STREAM.MSG.GET.CRYPTOVIZ_ALERTS
      - cryptoviz.receipts.>
      - cryptoviz.notify.deadletter.>
  subscribe:
    allow: [_INBOX.notify.>]
{{- end }}

{{/* Create-or-update, info, fetch and ack of one durable pull consumer "STREAM.durable". */}}
{{- define "cryptoviz.natsConsumer" -}}
{{- $stream := index (splitList "." .) 0 }}
{{- $durable := index (splitList "." .) 1 }}
- $JS.API.CONSUMER.CREATE.{{ $stream }}.{{ $durable }}.>
- $JS.API.CONSUMER.INFO.{{ $stream }}.{{ $durable }}
- $JS.API.CONSUMER.MSG.NEXT.{{ $stream }}.{{ $durable }}
- $JS.ACK.{{ $stream }}.{{ $durable }}.>
{{- end }}

{{- define "cryptoviz.natsUsers" -}}
{{- keys (include "cryptoviz.natsPermissions" . | fromYaml) | sortAlpha | join "," }}
{{- end }}

{{- define "cryptoviz.natsAuthSecretName" -}}
{{- default (printf "%s-nats-auth" (include "cryptoviz.fullname" .)) .Values.nats.auth.existingSecret }}
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
{{- if .Values.nats.tls.enabled }}
tls {
  cert_file: /etc/nats/tls/tls.crt
  key_file: /etc/nats/tls/tls.key
}
{{- end }}
{{- if .Values.nats.auth.enabled }}
# Every client logs in; passwords come from the Secret through the environment (quoted there).
authorization {
  users: [
    {{- range $user, $permissions := include "cryptoviz.natsPermissions" . | fromYaml }}
    {user: {{ $user }}, password: $NATS_{{ upper $user }}_PASSWORD, permissions: {{ toJson $permissions | replace "\\u003e" ">" }}}
    {{- end }}
  ]
}
{{- end }}
{{- end }}

{{/* NATS_URL and, with auth or TLS, the credentials of one user. Call with (dict "ctx" $ "user" "scraper"). */}}
{{- define "cryptoviz.natsClientEnv" -}}
- name: NATS_URL
  value: {{ include "cryptoviz.natsUrl" .ctx | quote }}
{{- if .ctx.Values.nats.auth.enabled }}
- name: NATS_USER
  value: {{ .user | quote }}
- name: NATS_PASSWORD_FILE
  value: /etc/cryptoviz-nats/password
{{- end }}
{{- if .ctx.Values.nats.tls.enabled }}
- name: NATS_CA_FILE
  value: /etc/cryptoviz-nats-tls/ca.crt
{{- end }}
{{- end }}

{{- define "cryptoviz.natsClientMounts" -}}
{{- if .Values.nats.auth.enabled }}
- name: nats-credentials
  mountPath: /etc/cryptoviz-nats
  readOnly: true
{{- end }}
{{- if .Values.nats.tls.enabled }}
- name: nats-tls
  mountPath: /etc/cryptoviz-nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Only this user's password (and the CA), as files. Call with (dict "ctx" $ "user" "scraper"). */}}
{{- define "cryptoviz.natsClientVolumes" -}}
{{- if .ctx.Values.nats.auth.enabled }}
- name: nats-credentials
  secret:
    secretName: {{ include "cryptoviz.natsAuthSecretName" .ctx }}
    defaultMode: 0440
    items:
      - key: {{ .user }}
        path: password
{{- end }}
{{- if .ctx.Values.nats.tls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ required "nats.tls.secretName is required when nats.tls.enabled is true" .ctx.Values.nats.tls.secretName }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
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

{{- define "cryptoviz.adminSecretName" -}}
{{- default (printf "%s-admin" (include "cryptoviz.fullname" .)) .Values.ingester.admin.existingSecret }}
{{- end }}

{{/* The admin token as a Secret volume and ADMIN_TOKEN_FILE (the ingester's and the backup Job's). */}}
{{- define "cryptoviz.adminTokenVolume" -}}
- name: admin-token
  secret:
    secretName: {{ include "cryptoviz.adminSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.ingester.admin.secretKey }}
        path: token
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
      {{- include "cryptoviz.natsClientEnv" (dict "ctx" $ctx "user" "scraper") | nindent 6 }}
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
      {{- include "cryptoviz.natsClientMounts" $ctx | nindent 6 }}
volumes:
  - name: config
    configMap:
      name: {{ include "cryptoviz.scraperConfigMapName" $ctx }}
  {{- include "cryptoviz.tmpVolume" $ctx | nindent 2 }}
  {{- include "cryptoviz.natsClientVolumes" (dict "ctx" $ctx "user" "scraper") | nindent 2 }}
{{- end }}
