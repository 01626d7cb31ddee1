{{- define "keyward.name" -}}{{ .Chart.Name }}{{- end -}}
{{- define "keyward.fullname" -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "keyward.labels" -}}
app.kubernetes.io/name: {{ include "keyward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "keyward.selector" -}}
app.kubernetes.io/name: {{ include "keyward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "keyward.serviceAccount" -}}{{ default (include "keyward.fullname" .) .Values.serviceAccount.name }}{{- end -}}
{{- define "keyward.image" -}}{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}{{- end -}}

{{/* The container's environment and volumes, shared by the Deployment and the CronJob. */}}
{{- define "keyward.env" -}}
- name: KEYWARD_VAULT_DRIVER
  value: postgres
- name: KEYWARD_VAULT_DSN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
- name: KEYWARD_DATABASE_STATEMENT_TIMEOUT
  value: {{ .Values.database.statementTimeout | quote }}
{{- if eq .Values.masterKey.source "aws-kms" }}
- name: KEYWARD_VAULT_MASTER_KEY_SOURCE
  value: aws-kms
- name: KEYWARD_VAULT_MASTER_KEY_KMS_KEY_ID
  value: {{ required "masterKey.kmsKeyId is required with masterKey.source aws-kms" .Values.masterKey.kmsKeyId | quote }}
{{- else if eq .Values.masterKey.source "secret" }}
- name: KEYWARD_VAULT_MASTER_KEY_SOURCE
  value: file
- name: KEYWARD_VAULT_MASTER_KEY_FILE
  value: /etc/keyward/master-key/{{ .Values.masterKey.secretKey }}
{{- else }}
{{- fail "masterKey.source must be secret or aws-kms" }}
{{- end }}
- name: KEYWARD_SERVER_LISTEN
  value: 0.0.0.0:8080
{{- end -}}

{{- define "keyward.volumeMounts" -}}
- name: config
  mountPath: /etc/keyward/config
  readOnly: true
{{- if eq .Values.masterKey.source "secret" }}
- name: master-key
  mountPath: /etc/keyward/master-key
  readOnly: true
{{- end }}
{{- end -}}

{{- define "keyward.volumes" -}}
- name: config
  configMap:
    name: {{ include "keyward.fullname" . }}
{{- if eq .Values.masterKey.source "secret" }}
- name: master-key
  secret:
    secretName: {{ .Values.masterKey.existingSecret }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{- define "keyward.securityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
