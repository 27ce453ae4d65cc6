{{/* vim: set filetype=mustache: */}}

{{- define "tts-processor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tts-processor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tts-processor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tts-processor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tts-processor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tts-processor.labels" -}}
helm.sh/chart: {{ include "tts-processor.chart" . }}
{{ include "tts-processor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tts
{{- end }}

{{- define "tts-processor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tts-processor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Service account of the pre-install hook Job (hooks run before release resources exist). */}}
{{- define "tts-processor.setupServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- printf "%s-setup" (include "tts-processor.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tts-processor.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "tts-processor.headlessServiceName" -}}
{{- printf "%s-headless" (include "tts-processor.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tts-processor.terminationGracePeriodSeconds" -}}
{{- add (int .Values.worker.shutdownGraceSeconds) (int .Values.worker.terminationGraceMarginSeconds) }}
{{- end }}

{{- define "tts-processor.saslEnabled" -}}
{{- if hasPrefix "SASL_" .Values.kafka.security.protocol }}true{{ end }}
{{- end }}

{{- define "tts-processor.kafkaCaPath" -}}
/etc/tts/kafka-ca/{{ .Values.kafka.security.caKey }}
{{- end }}

{{- define "tts-processor.s3CaPath" -}}
/etc/tts/s3-ca/{{ .Values.s3.caKey }}
{{- end }}

{{/*
Cross-field checks JSON schema cannot express. Rendering fails with a clear message.
*/}}
{{- define "tts-processor.validate" -}}
{{- $partitions := int .Values.kafka.topics.partitions }}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.maxReplicaCount) $partitions }}
{{- fail (printf "autoscaling.maxReplicaCount (%d) must not exceed kafka.topics.partitions (%d): consumers beyond the partition count sit idle on a GPU" (int .Values.autoscaling.maxReplicaCount) $partitions) }}
{{- end }}
{{- if gt (int .Values.autoscaling.minReplicaCount) (int .Values.autoscaling.maxReplicaCount) }}
{{- fail (printf "autoscaling.minReplicaCount (%d) must not exceed autoscaling.maxReplicaCount (%d)" (int .Values.autoscaling.minReplicaCount) (int .Values.autoscaling.maxReplicaCount)) }}
{{- end }}
{{- else if gt (int .Values.replicaCount) $partitions }}
{{- fail (printf "replicaCount (%d) must not exceed kafka.topics.partitions (%d): consumers beyond the partition count sit idle on a GPU" (int .Values.replicaCount) $partitions) }}
{{- end }}
{{- if and (include "tts-processor.saslEnabled" .) (not .Values.kafka.security.existingSecret) }}
{{- fail "kafka.security.existingSecret is required when kafka.security.protocol is SASL_PLAINTEXT or SASL_SSL" }}
{{- end }}
{{- if and (include "tts-processor.saslEnabled" .) (not .Values.kafka.security.saslMechanism) }}
{{- fail "kafka.security.saslMechanism is required when kafka.security.protocol is SASL_PLAINTEXT or SASL_SSL" }}
{{- end }}
{{- end }}

{{/*
Environment shared by the processor container and the setup Job.
Secret values are only ever referenced through secretKeyRef.
*/}}
{{- define "tts-processor.env" -}}
- name: WORKER_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: HTTP_PORT
  value: {{ .Values.http.port | quote }}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: KAFKA_GROUP_ID
  value: {{ .Values.kafka.groupId | quote }}
- name: KAFKA_REQUEST_TOPIC
  value: {{ .Values.kafka.topics.requests | quote }}
- name: KAFKA_RESULT_TOPIC
  value: {{ .Values.kafka.topics.results | quote }}
- name: KAFKA_PROGRESS_TOPIC
  value: {{ .Values.kafka.topics.progress | quote }}
- name: KAFKA_HEALTH_TOPIC
  value: {{ .Values.kafka.topics.health | quote }}
- name: KAFKA_DLQ_TOPIC
  value: {{ .Values.kafka.topics.dlq | quote }}
- name: KAFKA_GROUP_PROTOCOL
  value: {{ .Values.kafka.groupProtocol | quote }}
- name: KAFKA_STATIC_MEMBERSHIP
  value: {{ .Values.kafka.staticMembership | toString | quote }}
- name: KAFKA_MAX_MESSAGE_BYTES
  value: {{ .Values.kafka.maxMessageBytes | int64 | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.security.protocol | quote }}
{{- if include "tts-processor.saslEnabled" . }}
- name: KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.security.saslMechanism | quote }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.security.existingSecret | quote }}
      key: {{ .Values.kafka.security.usernameKey | quote }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.security.existingSecret | quote }}
      key: {{ .Values.kafka.security.passwordKey | quote }}
{{- end }}
{{- if .Values.kafka.security.caSecret }}
- name: KAFKA_SSL_CA_LOCATION
  value: {{ include "tts-processor.kafkaCaPath" . | quote }}
{{- end }}
{{- with .Values.kafka.extraConfig }}
- name: KAFKA_EXTRA
  value: {{ toJson . | quote }}
{{- end }}
{{- if .Values.schemaRegistry.url }}
- name: SCHEMA_REGISTRY_URL
  value: {{ .Values.schemaRegistry.url | quote }}
{{- end }}
{{- if .Values.s3.endpointUrl }}
- name: S3_ENDPOINT_URL
  value: {{ .Values.s3.endpointUrl | quote }}
{{- end }}
- name: AWS_REGION
  value: {{ .Values.s3.region | quote }}
- name: S3_BUCKET
  value: {{ .Values.s3.bucket | quote }}
{{- if .Values.s3.allowedBuckets }}
- name: S3_ALLOWED_BUCKETS
  value: {{ join "," .Values.s3.allowedBuckets | quote }}
{{- end }}
{{- if .Values.s3.outputBuckets }}
- name: S3_OUTPUT_BUCKETS
  value: {{ join "," .Values.s3.outputBuckets | quote }}
{{- end }}
- name: S3_OUTPUT_PREFIXES
  value: {{ join "," .Values.s3.outputPrefixes | quote }}
- name: S3_CONNECT_TIMEOUT_SECONDS
  value: {{ .Values.s3.connectTimeoutSeconds | quote }}
- name: S3_READ_TIMEOUT_SECONDS
  value: {{ .Values.s3.readTimeoutSeconds | quote }}
- name: S3_CALL_TIMEOUT_SECONDS
  value: {{ .Values.s3.callTimeoutSeconds | quote }}
- name: S3_VERIFY_TLS
  value: {{ .Values.s3.verifyTls | toString | quote }}
- name: S3_WRITER
  value: {{ .Values.s3.writer | quote }}
{{- if .Values.s3.caSecret }}
- name: S3_CA_BUNDLE
  value: {{ include "tts-processor.s3CaPath" . | quote }}
{{- end }}
{{- if .Values.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret | quote }}
      key: {{ .Values.s3.accessKeyIdKey | quote }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret | quote }}
      key: {{ .Values.s3.secretAccessKeyKey | quote }}
{{- end }}
- name: TMPDIR
  value: /tmp
{{- end }}

{{/* Environment of the processor container only. */}}
{{- define "tts-processor.workerEnv" -}}
- name: INDEX_TTS_FAMILY
  value: {{ .Values.model.family | quote }}
- name: INDEX_TTS_MODEL_DIR
  value: {{ .Values.model.dir | quote }}
{{- with .Values.model.attnBackend }}
- name: INDEX_TTS_ATTN_BACKEND
  value: {{ . | quote }}
{{- end }}
{{- with .Values.model.language }}
- name: INDEX_TTS_LANGUAGE
  value: {{ . | quote }}
{{- end }}
- name: INDEX_TTS_USE_FP16
  value: {{ .Values.model.useFp16 | toString | quote }}
- name: INDEX_TTS_USE_DEEPSPEED
  value: {{ .Values.model.useDeepspeed | toString | quote }}
- name: INDEX_TTS_USE_CUDA_KERNEL
  value: {{ .Values.model.useCudaKernel | toString | quote }}
- name: INDEX_TTS_DEVICE
  value: {{ .Values.model.device | quote }}
- name: INDEX_TTS_AUTO_DOWNLOAD
  value: {{ .Values.model.autoDownload | toString | quote }}
- name: HF_HOME
  value: {{ .Values.model.hfHome | quote }}
{{- if not .Values.model.autoDownload }}
- name: HF_HUB_OFFLINE
  value: "1"
{{- end }}
- name: WORKER_SHUTDOWN_GRACE_SECONDS
  value: {{ .Values.worker.shutdownGraceSeconds | quote }}
- name: WORKER_HEALTH_INTERVAL_SECONDS
  value: {{ .Values.worker.healthIntervalSeconds | quote }}
{{- with .Values.worker.livenessCommitSeconds }}
- name: WORKER_LIVENESS_COMMIT_SECONDS
  value: {{ . | quote }}
{{- end }}
- name: OTEL_TRACES_EXPORTER
  value: {{ .Values.tracing.exporter | quote }}
{{- with .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{ include "tts-processor.cacheEnv" . }}
{{- end }}

{{/* Writable caches (numba, XDG) live in the cache emptyDir. */}}
{{- define "tts-processor.cacheEnv" -}}
- name: TTS_CACHE_DIR
  value: {{ .Values.cache.dir | quote }}
- name: NUMBA_CACHE_DIR
  value: {{ printf "%s/numba" .Values.cache.dir | quote }}
- name: XDG_CACHE_HOME
  value: {{ printf "%s/xdg" .Values.cache.dir | quote }}
{{- end }}

{{/* CA volumes shared by the StatefulSet and the setup Job. */}}
{{- define "tts-processor.caVolumes" -}}
{{- if .Values.kafka.security.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.security.caSecret | quote }}
    defaultMode: 0444
{{- end }}
{{- if .Values.s3.caSecret }}
- name: s3-ca
  secret:
    secretName: {{ .Values.s3.caSecret | quote }}
    defaultMode: 0444
{{- end }}
{{- end }}

{{- define "tts-processor.caVolumeMounts" -}}
{{- if .Values.kafka.security.caSecret }}
- name: kafka-ca
  mountPath: /etc/tts/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.s3.caSecret }}
- name: s3-ca
  mountPath: /etc/tts/s3-ca
  readOnly: true
{{- end }}
{{- end }}
