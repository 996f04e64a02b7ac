{{/* Names, labels and images shared by the templates. */}}

{{- define "millrace.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "millrace.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: millrace
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.global.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "operator"). */}}
{{- define "millrace.selectorLabels" -}}
app.kubernetes.io/name: millrace-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* An image reference: (dict "root" $ "image" .Values.operator.image). */}}
{{- define "millrace.image" -}}
{{- $repo := .image.repository -}}
{{- $first := index (splitList "/" $repo) 0 -}}
{{- if and .root.Values.global.imageRegistry (not (or (contains "." $first) (contains ":" $first) (eq $first "localhost"))) -}}
{{- $repo = printf "%s/%s" .root.Values.global.imageRegistry $repo -}}
{{- end -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "millrace.operator.fullname" -}}{{ include "millrace.fullname" . }}-operator{{- end -}}
{{- define "millrace.api.fullname" -}}{{ include "millrace.fullname" . }}-api{{- end -}}

{{- define "millrace.operator.serviceAccountName" -}}
{{- default (include "millrace.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- define "millrace.api.serviceAccountName" -}}
{{- default (include "millrace.api.fullname" .) .Values.api.serviceAccount.name -}}
{{- end -}}

{{/* The Secret and keys the API reads its database URL and admin token from. */}}
{{- define "millrace.api.databaseSecret" -}}
{{- default (include "millrace.api.fullname" .) .Values.api.database.existingSecret -}}
{{- end -}}
{{- define "millrace.api.adminTokenSecret" -}}
{{- default (include "millrace.api.fullname" .) .Values.api.adminToken.existingSecret -}}
{{- end -}}

{{/* Pod and container security settings: non-root, read-only root filesystem, no privileges. */}}
{{- define "millrace.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- define "millrace.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The downward-API variables every Millrace binary reads. */}}
{{- define "millrace.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end -}}
