//! The scenarios from the dashboard: `capshop up` adds these routes to its gateway, so a
//! scenario can be started from the page and its report and plot read once it finishes.
//! A scenario runs on fresh shops of its own in a temporary directory, never on the shop
//! being served, and one at a time: each is a load test. It runs on a thread with a runtime
//! of its own, so its load does not starve the served shop (and its future need not be
//! `Send`).
//!
//! - `GET /admin/scenarios`: every scenario with the state and report of its last run;
//! - `POST /admin/scenarios/{name}/run` (`{"quick": true}` for short phases): 202, or 409
//!   while another one runs;
//! - `GET /admin/scenarios/{name}/plot`: the SVG plot of its last run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use shop::service::Problem;
use shop::service::admin::check_bearer;

use super::{Lab, SCENARIOS, Scenario};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum RunState {
    NotRun,
    Running,
    Passed,
    Failed,
    /// It could not run to the end (a shop did not start, ...); the report says why.
    Error,
}

/// A scenario and its last run, as the dashboard lists it.
#[derive(Debug, Clone, Serialize)]
struct RunView {
    name: &'static str,
    summary: &'static str,
    state: RunState,
    quick: bool,
    /// The report as `capshop scenario NAME` prints it, once the run ended.
    report: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    /// Short phases (a few seconds), as `--quick`.
    #[serde(default)]
    quick: bool,
}

struct Runs {
    token: String,
    runs: Mutex<BTreeMap<&'static str, RunView>>,
    plots: Mutex<BTreeMap<&'static str, String>>,
}

type Shared = Arc<Runs>;

/// The routes, with the admin token they require.
pub fn router(token: String) -> Router {
    let runs = SCENARIOS
        .iter()
        .map(|s| {
            let view = RunView {
                name: s.name,
                summary: s.summary,
                state: RunState::NotRun,
                quick: false,
                report: None,
            };
            (s.name, view)
        })
        .collect();
    let shared = Arc::new(Runs { token, runs: Mutex::new(runs), plots: Mutex::default() });
    Router::new()
        .route("/admin/scenarios", get(list))
        .route("/admin/scenarios/{name}/run", post(start))
        .route("/admin/scenarios/{name}/plot", get(plot))
        .with_state(shared)
}

fn scenario(name: &str) -> Result<&'static Scenario, Problem> {
    SCENARIOS.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        Problem::not_found(format!("no scenario {name:?}: use one of {}", names.join(", ")))
    })
}

async fn list(State(runs): State<Shared>, headers: HeaderMap) -> Result<axum::Json<Vec<RunView>>, Problem> {
    check_bearer(&headers, &runs.token)?;
    let views = runs.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let ordered = SCENARIOS.iter().map(|s| views[s.name].clone()).collect();
    Ok(axum::Json(ordered))
}

async fn start(
    State(runs): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    check_bearer(&headers, &runs.token)?;
    let scenario = scenario(&name)?;
    let request: RunRequest = if body.is_empty() {
        RunRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Problem::bad_request(format!("send {{}} or {{\"quick\": true}}: {e}")))?
    };
    let view = {
        let mut views = runs.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(busy) = views.values().find(|v| v.state == RunState::Running) {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                format!("{} is running; one scenario at a time, try again when it has finished", busy.name),
            ));
        }
        let view = views.get_mut(scenario.name).expect("every scenario has a view");
        *view = RunView { state: RunState::Running, quick: request.quick, report: None, ..view.clone() };
        view.clone()
    };
    let shared = runs.clone();
    std::thread::spawn(move || run_to_the_end(&shared, scenario, request.quick));
    Ok((StatusCode::ACCEPTED, axum::Json(view)).into_response())
}

/// Runs `scenario` on a runtime of its own and records its report and plot.
fn run_to_the_end(runs: &Runs, scenario: &'static Scenario, quick: bool) {
    tracing::info!(scenario = scenario.name, quick, "scenario started from the dashboard");
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async {
                let lab = Lab::new(quick, false)?;
                let report = (scenario.run)(&lab).await?;
                let plot = super::plot::svg(
                    &format!("capshop scenario {}", scenario.name),
                    &lab.timeline.snapshot(),
                );
                anyhow::Ok((report, plot))
            })
        });
    let (state, report) = match outcome {
        Ok((report, plot)) => {
            runs.plots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(scenario.name, plot);
            let state = if report.passed() { RunState::Passed } else { RunState::Failed };
            (state, report.text())
        }
        Err(e) => (RunState::Error, format!("scenario {} could not run: {e:#}", scenario.name)),
    };
    tracing::info!(scenario = scenario.name, ?state, "scenario finished");
    let mut views = runs.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let view = views.get_mut(scenario.name).expect("every scenario has a view");
    view.state = state;
    view.report = Some(report);
}

async fn plot(
    State(runs): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    check_bearer(&headers, &runs.token)?;
    let scenario = scenario(&name)?;
    let plots = runs.plots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let svg = plots.get(scenario.name).cloned().ok_or_else(|| {
        Problem::not_found(format!(
            "{} has not finished a run yet: POST /admin/scenarios/{name}/run",
            scenario.name
        ))
    })?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    async fn call(app: &Router, method: &str, path: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = if method == "POST" { Body::from(r#"{"quick": true}"#) } else { Body::empty() };
        let answer = app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = answer.status();
        (status, axum::body::to_bytes(answer.into_body(), usize::MAX).await.unwrap().to_vec())
    }

    fn state_of(list: &[u8], name: &str) -> serde_json::Value {
        let list: serde_json::Value = serde_json::from_slice(list).unwrap();
        list.as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scenario_started_over_http_runs_once_at_a_time_and_leaves_its_report_and_plot() {
        let app = router("t".into());
        assert_eq!(call(&app, "GET", "/admin/scenarios", None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            call(&app, "POST", "/admin/scenarios/no-such/run", Some("t")).await.0,
            StatusCode::NOT_FOUND
        );
        let (status, _) = call(&app, "POST", "/admin/scenarios/read-your-writes/run", Some("t")).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, _) = call(&app, "POST", "/admin/scenarios/breaker/run", Some("t")).await;
        assert_eq!(status, StatusCode::CONFLICT, "one scenario at a time");
        let finished = shop::service::testing::eventually_within(
            std::time::Duration::from_secs(240),
            "the scenario to finish",
            || async {
                let (_, list) = call(&app, "GET", "/admin/scenarios", Some("t")).await;
                let run = state_of(&list, "read-your-writes");
                (run["state"] != "running").then_some(run)
            },
        )
        .await;
        assert_eq!(finished["state"], "passed", "{finished}");
        assert!(finished["report"].as_str().unwrap().contains("[ok]"), "{finished}");
        let (status, plot) = call(&app, "GET", "/admin/scenarios/read-your-writes/plot", Some("t")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(String::from_utf8(plot).unwrap().starts_with("<svg"), "an SVG plot");
        let (_, list) = call(&app, "GET", "/admin/scenarios", Some("t")).await;
        assert_eq!(state_of(&list, "breaker")["state"], "not-run", "the refused run left no trace");
    }
}
