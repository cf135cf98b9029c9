{{- define "mixsweep.fullname" -}}
{{- printf "%s-mixsweep" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mixsweep.serviceAccountName" -}}
{{- default (include "mixsweep.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "mixsweep.storageSecretName" -}}
{{- default (printf "%s-storage" (include "mixsweep.fullname" .)) .Values.storageCredentials.name -}}
{{- end -}}

{{- define "mixsweep.labels" -}}
app.kubernetes.io/name: mixsweep
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
