{{/* Names and labels shared by every template. */}}
{{- define "mx.name" -}}modelexpress{{- end -}}

{{- define "mx.fullname" -}}
{{- if contains "modelexpress" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-modelexpress" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mx.labels" -}}
app.kubernetes.io/name: modelexpress
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mx.selector" -}}
app.kubernetes.io/name: modelexpress
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mx.image" -}}
{{- printf "%s:%s" .repository (default $.appVersion .tag) -}}
{{- end -}}

{{- define "mx.operatorImage" -}}
{{- include "mx.image" (dict "repository" .Values.image.repository "tag" .Values.image.tag "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{- define "mx.workerImage" -}}
{{- include "mx.image" (dict "repository" .Values.workerImage.repository "tag" .Values.workerImage.tag "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{- define "mx.workerNamespaces" -}}
{{- if .Values.workers.namespaces -}}
{{- toJson .Values.workers.namespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "mx.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- toJson .Values.operator.watchNamespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "mx.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mx.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "mx.serverUrl" -}}
{{- printf "%s-server.%s.svc:%d" (include "mx.fullname" .) .Release.Namespace (int .Values.server.port) -}}
{{- end -}}
