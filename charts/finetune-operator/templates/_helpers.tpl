{{/* Names, labels and the lists every template shares. */}}

{{- define "finetune-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "finetune-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "finetune-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "finetune-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: finetune-operator
{{- end }}

{{- define "finetune-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "finetune-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "finetune-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "finetune-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "finetune-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Kopf peering (several replicas, one active) or standalone (one replica). */}}
{{- define "finetune-operator.peering" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/* Namespaces the operator watches (with a Role in each): watchNamespaces, else the release namespace;
empty in cluster-wide mode. Newline-separated. */}}
{{- define "finetune-operator.watchNamespaces" -}}
{{- if .Values.clusterWide }}
{{- if .Values.watchNamespaces }}{{ fail "clusterWide: true watches every namespace: leave watchNamespaces empty" }}{{ end }}
{{- else }}
{{- join "\n" (default (list .Release.Namespace) .Values.watchNamespaces | uniq) }}
{{- end }}
{{- end }}

{{/* Namespaces where job pods run: the watched ones + jobs.jobNamespaces, or the release namespace. Newline-separated. */}}
{{- define "finetune-operator.jobNamespaces" -}}
{{- $watched := include "finetune-operator.watchNamespaces" . }}
{{- if and .Values.jobs.jobNamespaces (not .Values.clusterWide) }}{{ fail "jobs.jobNamespaces is for clusterWide: true; a namespaced install runs jobs in watchNamespaces" }}{{ end }}
{{- $all := concat (ternary list (splitList "\n" $watched) (eq $watched "")) .Values.jobs.jobNamespaces | uniq }}
{{- if not $all }}{{ $all = list .Release.Namespace }}{{ end }}
{{- join "\n" $all }}
{{- end }}

{{/* FT_NAMESPACE_CAPS: {"<ns>": {"maxConcurrentJobs": N, "maxGpus": N}} from policy.namespaces (JSON). */}}
{{- define "finetune-operator.namespaceCaps" -}}
{{- $caps := dict }}
{{- range $ns, $rules := .Values.policy.namespaces }}
{{- $cap := pick $rules "maxConcurrentJobs" "maxGpus" }}
{{- if $cap }}{{ $_ := set $caps $ns $cap }}{{ end }}
{{- end }}
{{- $caps | toJson }}
{{- end }}
