// The shop page's way to the gateway: the shopper's session (kept for this tab only and
// sent as Authorization: Bearer), one fetch wrapper that turns a problem+json answer into
// an Error with its detail, and the status line.
const $ = (id) => document.getElementById(id);
let session = JSON.parse(sessionStorage.getItem("capshop-session") || "null");
// The consistency token of each customer's last address change, sent with their checkout
// and order (read-your-writes).
const tokens = {};

const customer = () => session && session.customer_id;

/// Calls `/api/<path>`; answers `{ data, token }` or throws an Error saying what went wrong.
async function api(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (session) init.headers.authorization = `Bearer ${session.token}`;
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`/api/${path}`, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
  // The customer service refusing the session ends it here; another service may only not
  // have the signing key yet (it replicates), so the next refresh tries again.
  if (response.status === 401 && session && path.startsWith("customer/") && path !== "customer/sessions") {
    forgetSession();
  }
  if (!response.ok) {
    const error = new Error(data && data.detail ? data.detail : `the shop answered ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return { data, token: response.headers.get("consistency-token") };
}

/// The consistency-token header for the signed-in customer's reads, if they changed anything.
function consistency() {
  const token = tokens[customer()];
  return token ? { "Consistency-Token": token } : {};
}

function say(text, bad) {
  $("message").textContent = text;
  $("message").className = bad ? "bad" : "good";
}

function keepSession(answer) {
  session = { token: answer.token, customer_id: answer.customer_id };
  sessionStorage.setItem("capshop-session", JSON.stringify(session));
}

function forgetSession() {
  session = null;
  sessionStorage.removeItem("capshop-session");
  document.dispatchEvent(new Event("capshop-signed-out"));
}
