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

{{- /* The one image of the manager and the check-in service: a digest, when
given, pins it (repository@digest) and the tag is ignored. */ -}}
{{- define "itmanager.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- /* topologySpreadConstraints with the component's pods as the default
labelSelector (and only the current ReplicaSet counted, by
pod-template-hash), as Karpenter's chart does. Call with
(dict "constraints" list "selector" selectorLabelsYAML). */ -}}
{{- define "itmanager.topologySpreadConstraints" -}}
{{- $selector := .selector | fromYaml -}}
{{- range .constraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- if not (hasKey $c "matchLabelKeys") }}
{{- $_ := set $c "matchLabelKeys" (list "pod-template-hash") }}
{{- end }}
{{- end }}
- {{ toYaml $c | nindent 2 | trim }}
{{- end }}
{{- end -}}

{{- /* A PodDisruptionBudget's spec for the pods of selector. Call with
(dict "pdb" values "selector" selectorLabelsYAML "what" valuesPath). */ -}}
{{- define "itmanager.pdbSpec" -}}
{{- $pdb := .pdb -}}
{{- if and (hasKey $pdb "minAvailable") (hasKey $pdb "maxUnavailable") -}}
{{- fail (printf "%s: set minAvailable or maxUnavailable, not both" .what) -}}
{{- end -}}
{{- if hasKey $pdb "minAvailable" }}
minAvailable: {{ $pdb.minAvailable }}
{{- else if hasKey $pdb "maxUnavailable" }}
maxUnavailable: {{ $pdb.maxUnavailable }}
{{- else }}
maxUnavailable: 1
{{- end }}
{{- with $pdb.unhealthyPodEvictionPolicy }}
unhealthyPodEvictionPolicy: {{ . }}
{{- end }}
selector:
  matchLabels:
    {{- .selector | nindent 4 }}
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

{{- /* The Secret of the metrics serving certificate: certSecret, or
cert-manager's default; empty: the manager's self-signed one. */ -}}
{{- define "itmanager.metricsCertSecret" -}}
{{- if .Values.metrics.certSecret -}}
{{ .Values.metrics.certSecret }}
{{- else if .Values.metrics.certManager.enabled -}}
{{ include "itmanager.fullname" . }}-metrics-cert
{{- end -}}
{{- end }}

{{- define "itmanager.metricsService" -}}
{{ include "itmanager.fullname" . }}-metrics
{{- end }}
