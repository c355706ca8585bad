// The shop page: a thin client of the gateway's API. The shopper signs in (the session
// token is kept for this tab and sent as Authorization: Bearer); the page keeps the
// consistency token of the last address change and sends it with the checkout
// (read-your-writes).
const $ = (id) => document.getElementById(id);
const euros = (cents) => (cents / 100).toFixed(2);
const tokens = {};
let session = JSON.parse(sessionStorage.getItem("capshop-session") || "null");

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (session) init.headers.authorization = `Bearer ${session.token}`;
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`/api/${path}`, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  // The customer service refusing the session ends it here; another service may only not
  // have the signing key yet (it replicates), so the next refresh tries again.
  if (response.status === 401 && session && path.startsWith("customer/") && path !== "customer/sessions") signedOut();
  if (!response.ok) throw new Error(data && data.detail ? data.detail : `${response.status}`);
  return { data, token: response.headers.get("consistency-token") };
}

const customer = () => session && session.customer_id;

function say(text, bad) {
  $("message").textContent = text;
  $("message").className = bad ? "bad" : "good";
}

function signedOut() {
  session = null;
  sessionStorage.removeItem("capshop-session");
  $("sign-in").hidden = false;
  $("signed-in").hidden = true;
  $("checkout").textContent = "Sign in to see your cart.";
  $("orders").innerHTML = "";
}

async function signedIn() {
  const { data } = await api("GET", `customer/customers/${customer()}`);
  $("customer").textContent = data.name;
  $("sign-in").hidden = true;
  $("signed-in").hidden = false;
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const { data } = await api("POST", "customer/sessions", Object.fromEntries(new FormData(event.target)));
    session = { token: data.token, customer_id: data.customer_id };
    sessionStorage.setItem("capshop-session", JSON.stringify(session));
    event.target.password.value = "";
    await signedIn();
    say("signed in");
    await refresh();
  } catch (e) { say(e.message, true); }
});

$("sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "customer/sessions/current"); } catch (e) { /* signed out anyway */ }
  signedOut();
  say("signed out");
});

async function loadProducts() {
  const { data } = await api("GET", "catalog/products");
  $("products").innerHTML = data
    .map((p) => `<li><span>${p.name}</span><span>${euros(p.price_cents)}</span>` +
      `<button data-product="${p.id}">Add</button></li>`)
    .join("");
}

async function loadCheckout() {
  const id = customer();
  const headers = tokens[id] ? { "Consistency-Token": tokens[id] } : {};
  const { data } = await api("GET", `order/checkout/${id}`, undefined, headers);
  const source = data.address_source;
  const address = data.address
    ? `${data.address.line1}, ${data.address.postcode} ${data.address.city}, ${data.address.country}`
    : "unknown";
  const age = source.age_ms === null ? "" : ` · ${(source.age_ms / 1000).toFixed(1)} s old`;
  const total = data.total.confirmed
    ? `<strong>${euros(data.total.cents)}</strong>`
    : `<span class="bad">cannot be confirmed: ${data.total.reason}</span>`;
  $("checkout").innerHTML =
    `<ul class="list">${data.cart.map((l) => `<li><span>${l.quantity} × ${l.name}</span>` +
      `<button data-remove="${l.product_id}">remove</button></li>`).join("") || "<li>the cart is empty</li>"}</ul>` +
    `<p>Ship to: <span id="address">${address}</span> <small class="${source.stale ? "bad" : ""}">` +
    `(from ${source.source}${age}${source.stale ? " · stale" : ""})</small></p>` +
    `<p>Total: ${total}</p>`;
}

async function loadOrders() {
  const path = `order/orders?customer_id=${customer()}`;
  const known = (await api("GET", path)).data;
  const shipments = Object.fromEntries(await Promise.all(known.map(async (o) =>
    [o.id, (await api("GET", `shipping/shipments?order_id=${o.id}`)).data[0]])));
  // The orders are read again after their shipments: shipping only ships a confirmed
  // order, so this read is never older than what the shipment shows.
  const { data } = await api("GET", path);
  const rows = data.reverse().map((o) => {
    const s = shipments[o.id];
    const shipment = s ? ` · shipment ${s.status}${s.reason ? ": " + s.reason : ""}` : "";
    return `<li><span>${o.id.slice(0, 14)}… ${euros(o.total_cents)}</span><span>${o.status}${shipment}</span></li>`;
  });
  $("orders").innerHTML = rows.join("") || "<li>no orders yet</li>";
}

async function refresh() {
  if (!session) return;
  try {
    await Promise.all([loadCheckout(), loadOrders()]);
  } catch (e) {
    say(e.message, true);
  }
}

function formAddress(form) {
  const fields = Object.fromEntries(new FormData(form));
  return Object.values(fields).some((v) => v.trim()) ? fields : null;
}

$("products").addEventListener("click", async (event) => {
  const product = event.target.dataset.product;
  if (!product) return;
  if (!session) { say("sign in first", true); return; }
  try {
    await api("POST", `order/carts/${customer()}/items`, { product_id: product, quantity: 1 });
    say("added to the cart");
    await refresh();
  } catch (e) { say(e.message, true); }
});

$("checkout").addEventListener("click", async (event) => {
  const product = event.target.dataset.remove;
  if (!product) return;
  await api("DELETE", `order/carts/${customer()}/items/${product}`);
  await refresh();
});

$("address-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const { token } = await api("PUT", `customer/customers/${customer()}/address`, formAddress(event.target));
    tokens[customer()] = token;
    say(`address saved (${token})`);
    await refresh();
  } catch (e) { say(e.message, true); }
});

// One purchase, one Idempotency-Key: a double click or a retry of the same order sends the
// same key, so the shop places it once; a changed order (another customer, another
// address) is a new purchase with a new key.
const purchase = { body: null, key: null };

function purchaseKey(body) {
  const text = JSON.stringify(body);
  if (purchase.body !== text) {
    purchase.body = text;
    purchase.key = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
  }
  return purchase.key;
}

$("place").addEventListener("click", async () => {
  const body = { customer_id: customer() };
  const override = formAddress($("override-form"));
  if (override) body.address_override = override;
  const headers = tokens[customer()] ? { "Consistency-Token": tokens[customer()] } : {};
  headers["Idempotency-Key"] = purchaseKey(body);
  try {
    const { data } = await api("POST", "order/orders", body, headers);
    purchase.body = null; // placed: the next click is another purchase
    say(`order ${data.id} placed: ${data.status}`);
    await refresh();
  } catch (e) { say(e.message, true); }
});

(async () => {
  try {
    if (session) await signedIn(); else signedOut();
    await loadProducts();
    await refresh();
    setInterval(refresh, 2000);
  } catch (e) { say(e.message, true); }
})();
