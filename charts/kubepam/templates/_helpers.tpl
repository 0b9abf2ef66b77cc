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

{{/* The console's settings, the same in its own Deployment and in the operator's pods. */}}
{{- define "kubepam.consoleEnv" -}}
- name: KUBEPAM_CONSOLE_HOST
  value: 0.0.0.0
- name: KUBEPAM_CONSOLE_PORT
  value: {{ .Values.console.port | quote }}
- name: KUBEPAM_CONSOLE_SESSION_TTL
  value: {{ .Values.console.sessionTTL | quote }}
- name: KUBEPAM_CONSOLE_SESSION_KEY_FILE
  value: /etc/kubepam/console-session/session-key
- name: KUBEPAM_CONSOLE_BROKER
  value: {{ printf "http%s://%s-broker.%s.svc" (ternary "s" "" (not (empty .Values.broker.tls.secretName))) (include "kubepam.fullname" .) .Release.Namespace | quote }}
- name: KUBEPAM_CONSOLE_SECURE_COOKIES
  value: {{ .Values.console.secureCookies | quote }}
{{- if .Values.console.tls.secretName }}
- name: KUBEPAM_CONSOLE_TLS_CERT
  value: /etc/kubepam/console-tls/tls.crt
- name: KUBEPAM_CONSOLE_TLS_KEY
  value: /etc/kubepam/console-tls/tls.key
{{- end }}
{{- with .Values.console.oidc }}
{{- if .issuer }}
- name: KUBEPAM_CONSOLE_OIDC_ISSUER
  value: {{ .issuer | quote }}
- name: KUBEPAM_CONSOLE_OIDC_CLIENT_ID
  value: {{ required "console.oidc.clientID is required with console.oidc.issuer" .clientID | quote }}
- name: KUBEPAM_CONSOLE_OIDC_REDIRECT_URL
  value: {{ required "console.oidc.redirectURL is required with console.oidc.issuer" .redirectURL | quote }}
- name: KUBEPAM_CONSOLE_OIDC_SCOPES
  value: {{ .scopes | quote }}
{{- if .clientSecretName }}
- name: KUBEPAM_CONSOLE_OIDC_CLIENT_SECRET_FILE
  value: /etc/kubepam/console-oidc-secret/client-secret
{{- end }}
{{- if .caConfigMap }}
- name: KUBEPAM_CONSOLE_OIDC_CA_FILE
  value: /etc/kubepam/console-oidc-ca/ca.crt
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "kubepam.consoleMounts" -}}
- name: console-session
  mountPath: /etc/kubepam/console-session
  readOnly: true
{{- if and .Values.console.oidc.issuer .Values.console.oidc.clientSecretName }}
- name: console-oidc-secret
  mountPath: /etc/kubepam/console-oidc-secret
  readOnly: true
{{- end }}
{{- if and .Values.console.oidc.issuer .Values.console.oidc.caConfigMap }}
- name: console-oidc-ca
  mountPath: /etc/kubepam/console-oidc-ca
  readOnly: true
{{- end }}
{{- if .Values.console.tls.secretName }}
- name: console-tls
  mountPath: /etc/kubepam/console-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "kubepam.consoleVolumes" -}}
- name: console-session
  secret:
    secretName: {{ default (printf "%s-console-session" (include "kubepam.fullname" .)) .Values.console.sessionKeySecret }}
{{- if and .Values.console.oidc.issuer .Values.console.oidc.clientSecretName }}
- name: console-oidc-secret
  secret:
    secretName: {{ .Values.console.oidc.clientSecretName }}
{{- end }}
{{- if and .Values.console.oidc.issuer .Values.console.oidc.caConfigMap }}
- name: console-oidc-ca
  configMap:
    name: {{ .Values.console.oidc.caConfigMap }}
{{- end }}
{{- if .Values.console.tls.secretName }}
- name: console-tls
  secret:
    secretName: {{ .Values.console.tls.secretName }}
{{- end }}
{{- end -}}
