{{/* The stage functions, in pipeline order (functions/runtime.py STAGES). */}}
{{- define "doclane.stages" -}}
ingest classify extract index notify
{{- end }}

{{- define "doclane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "doclane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "doclane.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "doclane.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "doclane.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | quote }}
app.kubernetes.io/name: {{ include "doclane.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/part-of: doclane
{{- end }}

{{/* Selector labels of one component (a function or the api): dict "root" . "component" name */}}
{{- define "doclane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "doclane.name" .root | quote }}
app.kubernetes.io/instance: {{ .root.Release.Name | quote }}
app.kubernetes.io/component: {{ .component | quote }}
{{- end }}

{{- define "doclane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "doclane.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "doclane.secretName" -}}
{{- default (printf "%s-secrets" (include "doclane.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{/* The Deployment of a worker: dict "root" . "function" name */}}
{{- define "doclane.workerName" -}}
{{- if .root.Values.workers.targetName }}
{{- replace "{function}" .function .root.Values.workers.targetName }}
{{- else }}
{{- printf "%s-%s" (include "doclane.fullname" .root) .function | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The RabbitMQ queue a function consumes: events/bus.py queue_name(trigger, broker) */}}
{{- define "doclane.queueName" -}}
{{- printf "%s.%s" .root.Values.config.broker .function }}
{{- end }}

{{- define "doclane.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .function (default .root.Chart.AppVersion .root.Values.image.tag) }}
{{- end }}

{{/* A worker's settings, checked: dict "root" . "function" name */}}
{{- define "doclane.worker" -}}
{{- $w := index .root.Values.workers .function | required (printf "workers.%s is missing" .function) -}}
{{- $a := $w.autoscaling -}}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- fail (printf "workers.%s.autoscaling: minReplicas (%v) is above maxReplicas (%v)" .function $a.minReplicas $a.maxReplicas) -}}
{{- end -}}
{{- toYaml $w -}}
{{- end }}

{{/* Environment every doclane container gets: the ConfigMap and the Secret. */}}
{{- define "doclane.envFrom" -}}
- configMapRef:
    name: {{ include "doclane.fullname" . }}-config
- secretRef:
    name: {{ include "doclane.secretName" . }}
{{- end }}

{{- define "doclane.volumeMounts" -}}
{{- range $i, $path := .Values.writablePaths }}
- name: writable-{{ $i }}
  mountPath: {{ $path }}
{{- end }}
{{- end }}

{{- define "doclane.volumes" -}}
{{- range $i, $path := .Values.writablePaths }}
- name: writable-{{ $i }}
  emptyDir: {}
{{- end }}
{{- end }}

{{/* Health probes on /healthz (every doclane container answers it on port "http"). */}}
{{- define "doclane.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
{{- end }}

{{/* The pod-level parts every doclane pod shares. */}}
{{- define "doclane.podCommon" -}}
serviceAccountName: {{ include "doclane.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
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
volumes:
  {{- include "doclane.volumes" . | trim | nindent 2 }}
{{- end }}
