//! `/admin/backups` on the gateway: take a backup (`POST`) and list those taken (`GET`),
//! behind the admin token. The directory is a path on the shop's machine.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::{BackupError, Kind, Manifest, Source, Summary};
use crate::service::{Body, Problem};

/// What to back up and how.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// An absolute path on the shop's machine; it must not exist or be empty.
    pub dir: String,
    /// `consistent` (the default) or `naive`.
    #[serde(default = "consistent")]
    pub kind: Kind,
}

fn consistent() -> Kind {
    Kind::Consistent
}

struct Backups {
    /// `None` where backups cannot be taken (a distributed gateway without `--db`/`--bus`).
    source: Option<Source>,
    token: String,
}

/// The routes; `source` is the shop's, `None` for a distributed gateway that reaches
/// neither the databases nor the bus.
pub fn router(source: Option<Source>, token: String) -> Router {
    let state = Arc::new(Backups { source, token });
    Router::new().route("/admin/backups", get(list).post(create)).with_state(state)
}

/// The gateway's document of `/admin/backups`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        paths(list, create),
        components(schemas(
            BackupRequest,
            Summary,
            Manifest,
            super::manifest::FileEntry,
            super::certificate::Certificate,
            super::certificate::Check,
            Kind
        ))
    )]
    struct Api;
    <Api as utoipa::OpenApi>::openapi()
}

impl From<BackupError> for Problem {
    fn from(e: BackupError) -> Self {
        match &e {
            BackupError::Exists(_) | BackupError::Occupied(_) => Problem::conflict(e.to_string()),
            BackupError::Certificate(_) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            BackupError::Unsupported(_) => Problem::new(StatusCode::NOT_IMPLEMENTED, e.to_string()),
            _ => Problem::unavailable(e.to_string()),
        }
    }
}

fn source(backups: &Backups, headers: &HeaderMap) -> Result<Source, Problem> {
    crate::service::admin::check_bearer(headers, &backups.token)?;
    backups.source.clone().ok_or_else(|| {
        BackupError::Unsupported(
            "this gateway was started without the databases' server and the bus: give `capshop serve gateway` --db postgres://USER@HOST:PORT and --bus (docs/BACKUP.md)".into(),
        )
        .into()
    })
}

/// The backups this shop has taken since it started, oldest first.
#[utoipa::path(get, path = "/admin/backups", operation_id = "list_backups", tag = "admin",
    responses((status = 200, body = Vec<Summary>),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 501, body = Problem, content_type = "application/problem+json", description = "backups of this deployment are not built")))]
async fn list(State(backups): State<Arc<Backups>>, headers: HeaderMap) -> Response {
    match source(&backups, &headers) {
        Ok(source) => axum::Json(source.taken()).into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// Takes a backup: consistent (one cut of every database while writes go on) or naive
/// (each database on its own); answers its manifest once it is complete.
#[utoipa::path(post, path = "/admin/backups", operation_id = "create_backup", tag = "admin",
    request_body = BackupRequest,
    responses((status = 201, body = Manifest, description = "the backup, complete and certified"),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "a malformed request"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "the directory is not new or empty"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the directory is not an absolute path"),
              (status = 500, body = Problem, content_type = "application/problem+json", description = "the cut failed its certificate; nothing was kept"),
              (status = 501, body = Problem, content_type = "application/problem+json", description = "backups of this deployment are not built"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "a database could not be copied")))]
async fn create(
    State(backups): State<Arc<Backups>>,
    headers: HeaderMap,
    body: Result<Body<BackupRequest>, Problem>,
) -> Response {
    let source = match source(&backups, &headers) {
        Ok(source) => source,
        Err(problem) => return problem.into_response(),
    };
    let Body(request) = match body {
        Ok(body) => body,
        Err(problem) => return problem.into_response(),
    };
    let dir = PathBuf::from(&request.dir);
    if !dir.is_absolute() || request.dir.trim().is_empty() {
        return Problem::unprocessable(format!(
            "dir {:?} is not an absolute path: name a new directory on the shop's machine, e.g. /var/backups/capshop-1",
            request.dir
        ))
        .into_response();
    }
    match source.create(&dir, request.kind).await {
        Ok(manifest) => (StatusCode::CREATED, axum::Json(manifest)).into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}
