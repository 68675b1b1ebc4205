{{/*
Names and labels shared by every template. Names are cut at 63 characters (DNS label); suffixes are
added by the callers, so fullname stays short enough for `<fullname>-minio-bucket`.
*/}}

{{- define "okvqa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "okvqa.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "okvqa.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: immutable once a Deployment exists, so nothing that changes per upgrade. */}}
{{- define "okvqa.selectorLabels" -}}
app.kubernetes.io/name: {{ include "okvqa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "okvqa.labels" -}}
helm.sh/chart: {{ include "okvqa.chart" . }}
{{ include "okvqa.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: okvqa-k8s
{{- end }}

{{/* Labels of one component: call with (dict "ctx" $ "component" "operator"). */}}
{{- define "okvqa.componentLabels" -}}
{{ include "okvqa.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "okvqa.componentSelectorLabels" -}}
{{ include "okvqa.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "okvqa.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "okvqa.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name the existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* `repository@digest` when a digest pins the image, else `repository:tag` (tag defaults to appVersion). */}}
{{- define "okvqa.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "okvqa.minioImage" -}}
{{- if .image.digest }}
{{- printf "%s:%s@%s" .image.repository .image.tag .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository .image.tag }}
{{- end }}
{{- end }}

{{- define "okvqa.s3SecretName" -}}
{{- default (printf "%s-s3" (include "okvqa.fullname" .)) .Values.s3.existingSecret }}
{{- end }}

{{- define "okvqa.minioServiceName" -}}
{{- printf "%s-minio" (include "okvqa.fullname" .) }}
{{- end }}

{{/* The endpoint FineTunes and the bucket Job use: explicit, else the chart's MinIO, else AWS (empty). */}}
{{- define "okvqa.s3Endpoint" -}}
{{- if .Values.s3.endpoint }}
{{- .Values.s3.endpoint }}
{{- else if .Values.minio.enabled }}
{{- printf "http://%s.%s.svc:%d" (include "okvqa.minioServiceName" .) .Release.Namespace (int .Values.minio.service.port) }}
{{- end }}
{{- end }}

{{/* The namespace the operator acts in when RBAC is namespaced. */}}
{{- define "okvqa.watchNamespace" -}}
{{- default .Release.Namespace .Values.rbac.watchNamespace }}
{{- end }}

{{/* Pod and container security settings shared by every workload of the chart (values: podSecurityContext,
securityContext; the defaults meet the `restricted` Pod Security Standard). */}}
{{- define "okvqa.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "okvqa.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}
