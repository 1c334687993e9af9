{{/* Full name: the release name, with the chart name appended unless it already contains it. */}}
{{- define "fleetwire.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fleetwire.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "fleetwire.labels" -}}
{{ include "fleetwire.selectorLabels" . }}
app.kubernetes.io/part-of: fleetwire
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fleetwire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fleetwire.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, the tag defaulting to the chart's appVersion (fleetwire.image in Python). */}}
{{- define "fleetwire.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "fleetwire.peering" -}}
{{- default (include "fleetwire.fullname" .) .Values.peering -}}
{{- end -}}

{{/* The selector labels as key=value,key=value (FLEETWIRE_OPERATOR_SELECTOR). */}}
{{- define "fleetwire.selectorString" -}}
{{- $pairs := list -}}
{{- range $key, $value := include "fleetwire.selectorLabels" . | fromYaml -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
