{{- /* The check-in service's names and labels: its pods carry their own
app.kubernetes.io/name, so neither the manager's Deployment nor its Services
ever select them (and the check-in Service selects only them). */ -}}
{{- define "itmanager.checkinName" -}}
{{ include "itmanager.fullname" . }}-checkin
{{- end -}}

{{- define "itmanager.checkinSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-checkin
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: checkin
{{- end -}}

{{- define "itmanager.checkinCertSecret" -}}
{{ .Values.checkin.certSecret | default "itmanager-checkin-tls" }}
{{- end -}}
