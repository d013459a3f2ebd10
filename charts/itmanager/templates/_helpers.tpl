{{- define "itmanager.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "itmanager.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "itmanager.labels" -}}
{{ include "itmanager.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "itmanager.webhookService" -}}
{{ include "itmanager.fullname" . }}-webhook
{{- end -}}

{{- /* The Secret cert-manager issues the webhook certificate into. */ -}}
{{- define "itmanager.webhookSecret" -}}
{{ include "itmanager.fullname" . }}-webhook-cert
{{- end -}}

{{- /* The Secret the manager rotates the webhook certificate in (another
name than cert-manager's: a Secret's type cannot change, so switching
between the two never collides). */ -}}
{{- define "itmanager.webhookRotatedSecret" -}}
{{ include "itmanager.fullname" . }}-webhook-server-cert
{{- end -}}

{{- /* The ValidatingWebhookConfiguration; hack/chartrbac names it in the
manager's RBAC (update on this one only). */ -}}
{{- define "itmanager.webhookConfiguration" -}}
{{ include "itmanager.fullname" . }}
{{- end -}}
