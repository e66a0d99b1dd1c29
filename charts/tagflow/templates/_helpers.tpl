{{/* Name of every object: the release name (tagflow when rendered into flux/tagflow/). */}}
{{- define "tagflow.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tagflow.selectorLabels" -}}
app.kubernetes.io/name: tagflow
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tagflow.labels" -}}
{{ include "tagflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tagflow
{{- end -}}

{{/* The API group and plural of a release kind, as src/k8s/observed.rs watches them. */}}
{{- define "tagflow.releaseResource" -}}
{{- $known := dict "HelmRelease" (list "helm.toolkit.fluxcd.io" "helmreleases") "Kustomization" (list "kustomize.toolkit.fluxcd.io" "kustomizations") "Application" (list "argoproj.io" "applications") -}}
{{- $r := get $known . -}}
{{- if not $r }}{{ fail (printf "releases: unknown kind %q (HelmRelease, Kustomization or Application)" .) }}{{ end -}}
- apiGroups: [{{ index $r 0 }}]
  resources: [{{ index $r 1 }}]
  verbs: [get, list, watch]
{{- end -}}
