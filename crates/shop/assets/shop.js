// The shop page: sign in and out, the products, the checkout (cart, address with its
// freshness, payment method, total) and Place order. The API calls are in shop-api.js,
// the words in shop-words.js, the orders list in shop-orders.js.
let lastCheckout = null;
let placing = false;

function signedOut() {
  lastCheckout = null;
  shownCart = null;
  $("sign-in").hidden = false;
  $("signed-in").hidden = true;
  $("checkout").hidden = true;
  $("checkout-hint").hidden = false;
  forgetOrders();
}
document.addEventListener("capshop-signed-out", signedOut);

async function signedIn() {
  const { data } = await api("GET", `customer/customers/${customer()}`);
  $("customer").textContent = data.name;
  $("sign-in").hidden = true;
  $("signed-in").hidden = false;
  $("checkout-hint").hidden = true;
  $("checkout").hidden = false;
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const { data } = await api("POST", "customer/sessions", Object.fromEntries(new FormData(event.target)));
    keepSession(data);
    event.target.password.value = "";
    await signedIn();
    say("Signed in.");
    await Promise.all([loadCheckout(), loadOrders()]);
  } catch (e) { say(e.message, true); }
});

$("sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "customer/sessions/current"); } catch (e) { /* signed out anyway */ }
  forgetSession();
  say("Signed out.");
});

function button(text, label, data) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  Object.assign(b.dataset, data);
  return b;
}

function row(...children) {
  const li = document.createElement("li");
  li.append(...children.map((c) => {
    if (typeof c !== "string") return c;
    const span = document.createElement("span");
    span.textContent = c;
    return span;
  }));
  return li;
}

async function loadProducts() {
  const { data } = await api("GET", "catalog/products");
  $("products").replaceChildren(...data.map((p) =>
    row(p.name, euros(p.price_cents), button("Add", `Add ${p.name} to the cart`, { product: p.id }))));
}

/// Place order is possible with a confirmed total, something in the cart and no order in flight.
function updatePlace() {
  const c = lastCheckout;
  $("place").disabled = placing || !c || !c.total.confirmed || c.cart.length === 0;
}

// What the cart shows now: it is redrawn only when that changes, so a refresh does not
// take the keyboard focus off a Remove button.
let shownCart = null;

function showCart(c) {
  // A line shows the catalog's binding price when the total is confirmed, else the list
  // price the order service last heard of.
  const quoted = Object.fromEntries(c.total.lines.map((q) => [q.product_id, q.line_cents]));
  const shown = c.cart.map((l) => [l.product_id, l.name, l.quantity,
    quoted[l.product_id] ?? l.list_price_cents * l.quantity]);
  const key = JSON.stringify(shown);
  if (key === shownCart) return;
  shownCart = key;
  const lines = shown.map(([id, name, quantity, cents]) => row(`${quantity} × ${name}`, euros(cents),
    button("Remove", `Remove ${name} from the cart`, { remove: id })));
  $("cart").replaceChildren(...(lines.length ? lines : [row("the cart is empty")]));
}

function showCheckout(c) {
  lastCheckout = c;
  showCart(c);
  $("address").textContent = addressLine(c.address);
  $("address-age").textContent = freshness(c.address_source);
  $("stale-badge").hidden = !c.address_source.stale;
  $("stale-hint").hidden = !c.address_source.stale;
  $("payment").textContent = paymentWords(c.payment_method);
  const total = $("total");
  if (c.total.confirmed) {
    total.className = "";
    total.textContent = euros(c.total.cents);
  } else {
    total.className = "bad";
    total.textContent = "prices cannot be confirmed right now, please try again";
    const why = document.createElement("small");
    why.textContent = ` (${c.total.reason})`;
    total.append(why);
  }
  updatePlace();
}

async function loadCheckout() {
  if (!session) return;
  const { data } = await api("GET", `order/checkout/${customer()}`, undefined, consistency());
  showCheckout(data);
}

async function refreshCheckout() {
  try { await loadCheckout(); } catch (e) { say(e.message, true); }
}

function formAddress(form) {
  const fields = Object.fromEntries(new FormData(form));
  return Object.values(fields).some((v) => v.trim()) ? fields : null;
}

$("products").addEventListener("click", async (event) => {
  const product = event.target.dataset.product;
  if (!product) return;
  if (!session) { say("Sign in first to fill a cart.", true); return; }
  try {
    await api("POST", `order/carts/${customer()}/items`, { product_id: product, quantity: 1 });
    say("Added to the cart.");
    await loadCheckout();
  } catch (e) { say(e.message, true); }
});

$("cart").addEventListener("click", async (event) => {
  const product = event.target.dataset.remove;
  if (!product) return;
  try {
    await api("DELETE", `order/carts/${customer()}/items/${product}`);
    await loadCheckout();
  } catch (e) { say(e.message, true); }
});

$("address-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const { token } = await api("PUT", `customer/customers/${customer()}/address`, formAddress(event.target));
    tokens[customer()] = token;
    $("change-address").open = false;
    say("Address saved in your profile.");
    await loadCheckout();
  } catch (e) { say(e.message, true); }
});

// One checkout attempt, one Idempotency-Key: a double click or a retry of the same order
// sends the same key, so the shop places it once; a changed order (another address) is
// another attempt with a new key, and so is the next one once this one is placed.
const attempt = { body: null, key: null };

function attemptKey(body) {
  const text = JSON.stringify(body);
  if (attempt.body !== text) {
    attempt.body = text;
    attempt.key = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
  }
  return attempt.key;
}

$("place").addEventListener("click", async () => {
  if (placing) return;
  placing = true;
  updatePlace();
  const body = { customer_id: customer() };
  const override = formAddress($("override-form"));
  if (override) body.address_override = override;
  const headers = { ...consistency(), "Idempotency-Key": attemptKey(body) };
  try {
    const { data } = await api("POST", "order/orders", body, headers);
    attempt.body = null;
    $("override-form").reset();
    $("ship-elsewhere").open = false;
    trackOrder(data);
    say(`Order placed; it is ${orderWords(data, null).text}.`);
  } catch (e) {
    say(e.message.includes("no order was placed") ? e.message : `The order was not placed: ${e.message}`, true);
  } finally {
    placing = false;
    await refreshCheckout();
  }
});

(async () => {
  try {
    if (session) await signedIn(); else signedOut();
    await loadProducts();
    if (session) await Promise.all([loadCheckout(), loadOrders()]);
  } catch (e) { say(e.message, true); }
  setInterval(refreshCheckout, 2000);
})();
