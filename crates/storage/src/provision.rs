//! Creating the bucket or container on start, as deis-registry's create-bucket did: idempotent, so
//! a second start changes nothing. `object_store` reads and writes objects but does not create
//! buckets, so these are the two requests it lacks, signed with the store's own credentials (S3)
//! or the account key (Azure SharedKey).

use std::time::Duration;

use object_store::aws::AmazonS3;
use object_store::signer::Signer;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("bucket {0:?} belongs to another account: choose another bucket name")]
    TakenByAnother(String),
    #[error("{what}: storage answered {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    /// The store did not answer (refused, timed out, reset); `detail` is the whole cause chain
    /// without the URL, which for S3 is presigned and carries a signature.
    #[error("{what}: {detail}")]
    Unanswered { what: String, detail: String },
    #[error("{what}: {source}")]
    Request {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub(crate) fn request_error(
    what: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> ProvisionError {
    ProvisionError::Request {
        what: what.to_owned(),
        source: Box::new(e),
    }
}

fn unanswered(what: &str, e: reqwest::Error) -> ProvisionError {
    let e = e.without_url();
    let chain: Vec<String> =
        std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect();
    ProvisionError::Unanswered {
        what: what.to_owned(),
        detail: chain.join(": "),
    }
}

/// Sends a provisioning request; the status and the body (error codes are in the body).
async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<(u16, String), ProvisionError> {
    let response = request.send().await.map_err(|e| unanswered(what, e))?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

/// Outcome of a provisioning request.
#[derive(Debug, PartialEq, Eq)]
pub enum Provisioned {
    Created,
    Existed,
}

/// Creates the S3 bucket unless it exists. The request is presigned by the same client, so it
/// uses whatever credentials the data path uses (static keys, IRSA, instance role).
pub async fn ensure_s3_bucket(
    http: &reqwest::Client,
    s3: &AmazonS3,
    bucket: &str,
    region: &str,
) -> Result<Provisioned, ProvisionError> {
    let what = format!("creating S3 bucket {bucket}");
    let url = s3
        .signed_url(
            http::Method::PUT,
            &object_store::path::Path::from(""),
            Duration::from_secs(300),
        )
        .await
        .map_err(|e| request_error(&what, e))?;
    // us-east-1 takes no location constraint (AWS answers InvalidLocationConstraint).
    let body = if region == "us-east-1" {
        String::new()
    } else {
        format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
        )
    };
    let request = http
        .put(url)
        // S3 answers 411 to a PUT without a length, and an empty body gets none by default.
        .header("content-length", body.len())
        .body(body);
    let (status, text) = send(request, &what).await?;
    match status {
        200..=299 => Ok(Provisioned::Created),
        _ if text.contains("BucketAlreadyOwnedByYou") => Ok(Provisioned::Existed),
        _ if text.contains("BucketAlreadyExists") => {
            Err(ProvisionError::TakenByAnother(bucket.to_owned()))
        }
        _ => Err(ProvisionError::Refused {
            what,
            status,
            body: text.chars().take(300).collect(),
        }),
    }
}

/// Creates the GCS bucket in `project` unless it exists, through the JSON API with the client's
/// own OAuth token. `base_url` is `https://storage.googleapis.com` or a key file's `gcs_base_url`.
pub async fn ensure_gcs_bucket(
    http: &reqwest::Client,
    gcs: &object_store::gcp::GoogleCloudStorage,
    base_url: &str,
    project: &str,
    bucket: &str,
) -> Result<Provisioned, ProvisionError> {
    let what = format!("creating GCS bucket {bucket}");
    let token = gcs
        .credentials()
        .get_credential()
        .await
        .map_err(|e| request_error(&what, e))?;
    let mut url = reqwest::Url::parse(&format!("{}/storage/v1/b", base_url.trim_end_matches('/')))
        .map_err(|e| request_error(&what, e))?;
    url.query_pairs_mut().append_pair("project", project);
    let request = http
        .post(url)
        .bearer_auth(&token.bearer)
        .header("content-type", "application/json")
        .body(format!("{{\"name\":{}}}", serde_json::Value::from(bucket)));
    let (status, text) = send(request, &what).await?;
    match status {
        200..=299 => Ok(Provisioned::Created),
        409 if text.contains("already own") => Ok(Provisioned::Existed),
        409 => Err(ProvisionError::TakenByAnother(bucket.to_owned())),
        _ => Err(ProvisionError::Refused {
            what,
            status,
            body: text.chars().take(300).collect(),
        }),
    }
}

/// Creates the Azure Blob container unless it exists. `endpoint` is the blob service URL
/// (`https://<account>.blob.core.windows.net`, or an emulator's `http://host:port/<account>`).
pub async fn ensure_azure_container(
    http: &reqwest::Client,
    endpoint: &str,
    account: &str,
    key: &str,
    container: &str,
) -> Result<Provisioned, ProvisionError> {
    let what = format!("creating Azure container {container}");
    let shared_key = crate::azure::SharedKey::new(account, key)
        .map_err(|e| request_error("the Azure account key", e))?;
    let url = reqwest::Url::parse(&format!(
        "{}/{container}?restype=container",
        endpoint.trim_end_matches('/')
    ))
    .map_err(|e| request_error(&what, e))?;
    let request = shared_key.sign(http.put(url.clone()), "PUT", &url);
    let (status, text) = send(request, &what).await?;
    match status {
        200..=299 => Ok(Provisioned::Created),
        409 if text.contains("ContainerAlreadyExists") => Ok(Provisioned::Existed),
        _ => Err(ProvisionError::Refused {
            what,
            status,
            body: text.chars().take(300).collect(),
        }),
    }
}
