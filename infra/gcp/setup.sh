#!/usr/bin/env bash
# Once per project: enable the APIs, create the staging bucket and a service account that
# Vertex AI custom jobs run as, with access to that bucket.
#   PROJECT=my-project REGION=us-central1 BUCKET=my-inflame-bucket bash infra/gcp/setup.sh
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BUCKET:?set BUCKET}"
SA_NAME="${SA_NAME:-inflame-training}"
SA="${SA_NAME}@${PROJECT}.iam.gserviceaccount.com"

gcloud services enable aiplatform.googleapis.com storage.googleapis.com logging.googleapis.com \
    --project "$PROJECT"
gcloud storage buckets create "gs://${BUCKET}" --project "$PROJECT" --location "$REGION" \
    --uniform-bucket-level-access
gcloud iam service-accounts create "$SA_NAME" --project "$PROJECT" \
    --display-name "inflame training jobs"
gcloud storage buckets add-iam-policy-binding "gs://${BUCKET}" \
    --member "serviceAccount:${SA}" --role roles/storage.objectAdmin
gcloud projects add-iam-policy-binding "$PROJECT" \
    --member "serviceAccount:${SA}" --role roles/logging.logWriter

cat <<TOML
[targets.vertex]
project = "${PROJECT}"
region = "${REGION}"
staging_bucket = "gs://${BUCKET}"
service_account = "${SA}"
TOML
