{{/*
Names, labels and image references of the ktx chart.
The Roles and ServiceAccounts have fixed names (ktx looks for the ServiceAccount "ktx-router"
labelled app.kubernetes.io/part-of=ktx), so a namespace holds one release of this chart.
*/}}

{{- define "ktx.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object of the chart carries. */}}
{{- define "ktx.labels" -}}
helm.sh/chart: {{ include "ktx.chart" . }}
app.kubernetes.io/part-of: ktx
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of the janitor's pods. */}}
{{- define "ktx.janitor.selectorLabels" -}}
app.kubernetes.io/name: ktx-janitor
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/* The tag of every ktx image: image.tag, or the chart's appVersion. */}}
{{- define "ktx.tag" -}}
{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* An image reference: include "ktx.image" (list $ "router") */}}
{{- define "ktx.image" -}}
{{- $root := index . 0 -}}
{{- $name := index $root.Values.images (index . 1) -}}
{{ printf "%s/%s:%s" $root.Values.image.registry $name (include "ktx.tag" $root) }}
{{- end }}
