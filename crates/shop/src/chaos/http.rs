//! The gateway's chaos routes, under `/admin/chaos` with the admin bearer token. Every
//! change answers with the whole [`Status`], so a caller sees at once what it did.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use serde::Deserialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{BusFault, Chaos, ChaosError, Status};
use crate::service::admin::check_bearer;
use crate::service::{Body, BodyRefused, PathParams, Problem};

struct Admin {
    chaos: Chaos,
    token: String,
}

/// Where the gateway nests these routes.
const PREFIX: &str = "/admin/chaos";

/// The routes with their documentation, relative to [`PREFIX`].
fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(cut))
        .routes(routes!(heal))
        .routes(routes!(latency))
        .routes(routes!(loss))
        .routes(routes!(duplicate))
        .routes(routes!(lost_ack))
        .routes(routes!(delay))
        .routes(routes!(stop))
        .routes(routes!(start))
}

/// The routes, to be nested at `/admin/chaos`.
pub fn router(chaos: Chaos, token: String) -> Router {
    let admin = Arc::new(Admin { chaos, token });
    Router::from(routes())
        .layer(middleware::from_fn_with_state(admin.clone(), require_token))
        .with_state(admin)
}

/// The gateway's OpenAPI document: these routes at `/admin/chaos`, from the same source.
pub fn openapi() -> utoipa::openapi::OpenApi {
    OpenApiRouter::with_openapi(Api::openapi()).nest(PREFIX, routes()).into_openapi()
}

async fn require_token(
    State(admin): State<Arc<Admin>>,
    request: Request,
    next: Next,
) -> Result<Response, Problem> {
    check_bearer(request.headers(), &admin.token)?;
    Ok(next.run(request).await)
}

impl From<ChaosError> for Problem {
    fn from(e: ChaosError) -> Self {
        match e {
            ChaosError::Start { .. } => Problem::unavailable(e.to_string()),
            ChaosError::Stop { .. } => Problem::internal(e.to_string()),
            ChaosError::NoLink { .. } | ChaosError::UnknownPart(_) | ChaosError::NotHere { .. } => {
                Problem::not_found(e.to_string())
            }
            _ => Problem::unprocessable(e.to_string()),
        }
    }
}

/// Two endpoints of a link: services, inventory sites, `bus` or `cache`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cut {
    pub a: String,
    pub b: String,
    /// Only traffic from `a` to `b` fails.
    #[serde(default)]
    pub oneway: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heal {
    pub a: Option<String>,
    pub b: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub a: String,
    pub b: String,
    pub ms: u64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Loss {
    pub a: String,
    pub b: String,
    pub fraction: f64,
}

/// A fault inside the bus on the bus link of a service or site: `a` names it, `b` is `bus`
/// (or the other way round).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BusFaultBody {
    pub a: String,
    pub b: String,
    /// Of the deliveries (or acks), 0 to 1; 0 removes the fault.
    pub fraction: f64,
}

type Answer = Result<axum::Json<Status>, Problem>;

/// The gateway's OpenAPI document: the fault controls (the services' routes are in each
/// service's own `/openapi.json`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "capshop gateway: faults on purpose",
        description = "Cut, slow or make lossy the links between services (or inventory sites) and between a service and the bus; duplicate, delay or lose the acks of deliveries on a service's bus link; stop and start services and inventory sites (inventory names both sites). Every route needs Authorization: Bearer <admin token>; every change answers with the whole status."
    ),
    components(schemas(
        Status,
        super::LinkStatus,
        super::ServiceStatus,
        super::ServiceState,
        Cut,
        Heal,
        Latency,
        Loss,
        BusFaultBody,
        Problem
    ))
)]
struct Api;

/// Every link with its faults and every part (service or inventory site) with its state.
#[utoipa::path(get, path = "/", responses((status = 200, body = Status), (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"), (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token")))]
async fn status(State(admin): State<Arc<Admin>>) -> axum::Json<Status> {
    axum::Json(admin.chaos.status().await)
}

/// Cuts the links between `a` and `b` (services, inventory sites, `bus` or `cache`; `inventory`
/// names both sites): both ways, or with `oneway` only from `a` to `b`.
#[utoipa::path(post, path = "/cut", request_body = Cut,
    responses(BodyRefused, (status = 200, body = Status), (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"), (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no link between them; the links that exist are named"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "an unknown endpoint or a missing field")))]
async fn cut(State(admin): State<Arc<Admin>>, Body(cut): Body<Cut>) -> Answer {
    admin.chaos.cut(&cut.a, &cut.b, cut.oneway)?;
    Ok(status(State(admin)).await)
}

/// Removes every fault of the link between `a` and `b`, or of every link with `{}`.
#[utoipa::path(post, path = "/heal", request_body = Heal,
    responses(BodyRefused, (status = 200, body = Status), (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"), (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"), (status = 404, body = Problem, content_type = "application/problem+json", description = "no link between them; the links that exist are named"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "an unknown endpoint, a missing field or a value out of range")))]
async fn heal(State(admin): State<Arc<Admin>>, Body(heal): Body<Heal>) -> Answer {
    match (heal.a, heal.b) {
        (Some(a), Some(b)) => {
            admin.chaos.heal(&a, &b)?;
        }
        (None, None) => admin.chaos.heal_all(),
        _ => {
            return Err(Problem::unprocessable(
                "name both ends of a link ({\"a\": \"order\", \"b\": \"customer\"}), or send {} to heal every link",
            ));
        }
    }
    Ok(status(State(admin)).await)
}

/// Adds `ms` milliseconds (at most 60000) to every pass over the link between `a` and `b`.
#[utoipa::path(post, path = "/latency", request_body = Latency,
    responses(BodyRefused, (status = 200, body = Status), (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"), (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"), (status = 404, body = Problem, content_type = "application/problem+json", description = "no link between them; the links that exist are named"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "an unknown endpoint, a missing field or a value out of range")))]
async fn latency(State(admin): State<Arc<Admin>>, Body(latency): Body<Latency>) -> Answer {
    admin.chaos.latency(&latency.a, &latency.b, Duration::from_millis(latency.ms))?;
    Ok(status(State(admin)).await)
}

/// Makes `fraction` (0 to 1) of the passes over the link between `a` and `b` fail.
#[utoipa::path(post, path = "/loss", request_body = Loss,
    responses(BodyRefused, (status = 200, body = Status), (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"), (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"), (status = 404, body = Problem, content_type = "application/problem+json", description = "no link between them; the links that exist are named"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "an unknown endpoint, a missing field or a value out of range")))]
async fn loss(State(admin): State<Arc<Admin>>, Body(loss): Body<Loss>) -> Answer {
    admin.chaos.loss(&loss.a, &loss.b, loss.fraction)?;
    Ok(status(State(admin)).await)
}

/// Sets `fault` on the bus link named by `body` and answers the whole status.
async fn bus_fault(admin: Arc<Admin>, fault: BusFault, body: BusFaultBody) -> Answer {
    admin.chaos.bus_fault(&body.a, &body.b, fault, body.fraction)?;
    Ok(status(State(admin)).await)
}

/// Hands `fraction` (0 to 1) of the deliveries over the bus link between `a` and `b` (one
/// of them `bus`) to the consumer a second time, after the first was settled.
#[utoipa::path(post, path = "/duplicate", request_body = BusFaultBody,
    responses(BodyRefused, (status = 200, body = Status), (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"), (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"), (status = 404, body = Problem, content_type = "application/problem+json", description = "no link between them; the links that exist are named"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "not a bus link, an unknown endpoint, a missing field or a value out of range")))]
async fn duplicate(State(admin): State<Arc<Admin>>, Body(body): Body<BusFaultBody>) -> Answer {
    bus_fault(admin, BusFault::Duplicate, body).await
}

/// Reports `fraction` (0 to 1) of the acks over the bus link between `a` and `b` done to the
/// consumer without forwarding them: the bus delivers those messages again after its ack wait.
#[utoipa::path(post, path = "/lost-ack", request_body = BusFaultBody,
    responses(BodyRefused, (status = 200, body = Status), (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"), (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"), (status = 404, body = Problem, content_type = "application/problem+json", description = "no link between them; the links that exist are named"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "not a bus link, an unknown endpoint, a missing field or a value out of range")))]
async fn lost_ack(State(admin): State<Arc<Admin>>, Body(body): Body<BusFaultBody>) -> Answer {
    bus_fault(admin, BusFault::LostAck, body).await
}

/// Holds `fraction` (0 to 1) of the deliveries over the bus link between `a` and `b` back
/// (1.5 s at least) and hands them out after the later ones fetched meanwhile. A per-key
/// consumer gets no later message of a held one's key meanwhile, so only other keys pass it.
#[utoipa::path(post, path = "/delay", request_body = BusFaultBody,
    responses(BodyRefused, (status = 200, body = Status), (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"), (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"), (status = 404, body = Problem, content_type = "application/problem+json", description = "no link between them; the links that exist are named"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "not a bus link, an unknown endpoint, a missing field or a value out of range")))]
async fn delay(State(admin): State<Arc<Admin>>, Body(body): Body<BusFaultBody>) -> Answer {
    bus_fault(admin, BusFault::Delay, body).await
}

/// Stops a service or an inventory site (`inventory` stops both): its server, relay and
/// consumers end; its data stays.
#[utoipa::path(post, path = "/services/{service}/stop", params(("service" = String, Path, description = "a service or an inventory site: order, inventory-dc2, inventory (both sites)")),
    responses((status = 200, body = Status), (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"), (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"), (status = 404, body = Problem, content_type = "application/problem+json", description = "no such service or site; the known ones are named")))]
async fn stop(State(admin): State<Arc<Admin>>, PathParams(name): PathParams<String>) -> Answer {
    for part in admin.chaos.parts(&name)? {
        admin.chaos.stop(part).await?;
    }
    Ok(status(State(admin)).await)
}

/// Starts a stopped service or inventory site (`inventory` starts both) again on its port.
#[utoipa::path(post, path = "/services/{service}/start", params(("service" = String, Path, description = "a service or an inventory site: order, inventory-dc2, inventory (both sites)")),
    responses((status = 200, body = Status), (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"), (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"), (status = 404, body = Problem, content_type = "application/problem+json", description = "no such service or site; the known ones are named"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "its port could not be bound again")))]
async fn start(State(admin): State<Arc<Admin>>, PathParams(name): PathParams<String>) -> Answer {
    for part in admin.chaos.parts(&name)? {
        admin.chaos.start(part).await?;
    }
    Ok(status(State(admin)).await)
}
