{{/* Common labels. */}}
{{- define "kubepam.labels" -}}
app.kubernetes.io/name: kubepam
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubepam.selector" -}}
app.kubernetes.io/name: kubepam
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Name prefix of every object: the release name when it contains "kubepam", else <release>-kubepam.
     A release named "kubepam" gives the same names as manifests/. */}}
{{- define "kubepam.fullname" -}}
{{- if contains "kubepam" .Release.Name -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-kubepam" .Release.Name | trunc 40 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{/* The operator's ServiceAccount name and full username (used by admission policies). */}}
{{- define "kubepam.serviceAccount" -}}{{ include "kubepam.fullname" . }}-operator{{- end -}}
{{- define "kubepam.operatorUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "kubepam.serviceAccount" . }}
{{- end -}}

{{- define "kubepam.issuer" -}}
{{- default (printf "https://%s-broker.%s.svc" (include "kubepam.fullname" .) .Release.Namespace) .Values.broker.issuer -}}
{{- end -}}

{{/* The operator image: repository@digest when a digest is given, else repository:tag (the tag defaults
     to the chart's appVersion). */}}
{{- define "kubepam.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}
